# ofedrepo on Debian: the distro's libguestfs, rpm and createrepo_c bindings plus the package itself.
FROM debian:bookworm-slim
WORKDIR /opt/ofedrepo
COPY scripts/install-system-packages.sh scripts/
RUN scripts/install-system-packages.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN python3 -m venv --system-site-packages /opt/venv && /opt/venv/bin/pip install --no-cache-dir .
ENV PATH=/opt/venv/bin:$PATH OFEDREPO_DATA_DIR=/srv/ofedrepo
EXPOSE 8000
CMD ["ofedrepo", "serve", "--host", "0.0.0.0"]
