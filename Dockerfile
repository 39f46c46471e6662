# ofedrepo on Debian: the distro's libguestfs, rpm and createrepo_c bindings plus the package itself.
#   docker build --target api -t ofedrepo .            API, pages, inspection, publishing
#   docker build --target worker -t ofedrepo-worker .  the same plus the docker client of the container runner
FROM debian:bookworm-slim AS api
WORKDIR /opt/ofedrepo
COPY scripts/install-system-packages.sh scripts/
RUN scripts/install-system-packages.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN python3 -m venv --system-site-packages /opt/venv && /opt/venv/bin/pip install --no-cache-dir .
ENV PATH=/opt/venv/bin:$PATH OFEDREPO_DATA_DIR=/srv/ofedrepo
EXPOSE 8000
CMD ["ofedrepo", "serve", "--host", "0.0.0.0", "--no-worker"]

# Debian is no host for NVIDIA's script (it would build .deb packages): the worker starts each build in a
# builder container (`make builder-images`) through the host's engine, whose socket compose mounts.
FROM api AS worker
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io \
    && rm -rf /var/lib/apt/lists/*
ENV OFEDREPO_BUILD_RUNNER=docker
EXPOSE 9101
CMD ["ofedrepo", "worker"]
