#!/usr/bin/env bash
# Installs the distribution packages ofedrepo and its tests need; does nothing when all are present.
# With --browser it also installs the Chromium the web UI's browser test drives (`make test` asks for it;
# `make run` does not); with --bench, the load generator and the reference web server `make bench` uses.
# Debian/Ubuntu (apt) and RHEL/Rocky/Alma/Fedora (dnf) are supported. Needs root (or sudo) only when
# something is missing.
set -euo pipefail

debian_packages=(
  python3 python3-venv python3-guestfs python3-rpm python3-createrepo-c
  libguestfs-tools rpm createrepo-c dnf dnf-plugins-core qemu-utils gnupg openssl xorriso perl bubblewrap e2fsprogs
  debootstrap shellcheck podman runc util-linux
)
rhel_packages=(
  python3 python3-libguestfs python3-rpm python3-createrepo_c
  libguestfs-tools-c rpm-build rpm-sign createrepo_c dnf dnf-plugins-core qemu-img gnupg2 openssl xorriso perl bubblewrap e2fsprogs
  debootstrap ShellCheck podman runc util-linux
)

case "${1:-}" in
  --browser)
    debian_packages+=(chromium)
    rhel_packages+=(chromium)
    ;;
  --bench)
    debian_packages+=(wrk nginx)
    rhel_packages+=(wrk nginx)
    ;;
esac

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
elif command -v rpm >/dev/null 2>&1 && command -v dnf >/dev/null 2>&1; then
  missing=()
  for package in "${rhel_packages[@]}"; do
    rpm -q "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    as_root dnf install -y "${missing[@]}"
  fi
else
  echo "unsupported system: install these yourself: ${debian_packages[*]}" >&2
  exit 1
fi
