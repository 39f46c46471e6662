# ofedrepo on Debian: the distro's libguestfs, rpm and createrepo_c bindings plus the package itself.
#   docker build --target api -t ofedrepo .            API, pages, inspection, publishing
#   docker build --target worker -t ofedrepo-worker .  the same plus what mlnx_add_kernel_support.sh needs
FROM debian:bookworm-slim AS api
WORKDIR /opt/ofedrepo
COPY scripts/install-system-packages.sh scripts/
RUN scripts/install-system-packages.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN python3 -m venv --system-site-packages /opt/venv && /opt/venv/bin/pip install --no-cache-dir .
ENV PATH=/opt/venv/bin:$PATH OFEDREPO_DATA_DIR=/srv/ofedrepo
EXPOSE 8000
CMD ["ofedrepo", "serve", "--host", "0.0.0.0", "--no-worker"]

# The local runner builds kernel modules on the worker itself: rpmbuild, a compiler, perl, make, python3.
FROM api AS worker
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       build-essential perl make bc bison flex libelf-dev libssl-dev kmod lsof pciutils \
    && rm -rf /var/lib/apt/lists/*
EXPOSE 9101
CMD ["ofedrepo", "worker"]
