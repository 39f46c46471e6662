"""Can this host run NVIDIA's mlnx_add_kernel_support.sh itself? The ``local`` runner asks before each build.

The script refuses to run unless root; it asks rpm which distro it is on (``rpm -qf /etc/issue``) and builds
with that distro's rpmbuild and compiler; and where ``/usr/bin/lsb_release`` says Debian or Ubuntu it
switches to DEB mode and makes ``.deb`` packages. A host that fails any of these makes no usable repo (or a
repo of packages built for another distro), so the build is refused with one line that says what to do.
The container runner needs none of this: its builder image is the right host.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ofedrepo.distro import RHEL_FAMILY

LSB_RELEASE = Path("/usr/bin/lsb_release")
OS_RELEASE = Path("/etc/os-release")
BUILD_TOOLS = ("rpm", "rpmbuild", "gcc", "make", "perl", "bwrap")
USE_CONTAINERS = "set OFEDREPO_BUILD_RUNNER=podman (or docker) with the builder images (`make builder-images`)"


@dataclass(frozen=True)
class HostFacts:
    euid: int
    lsb_id: str | None
    """What ``lsb_release -s -i`` says, lower case; None without lsb_release."""
    os_id: str
    os_id_like: tuple[str, ...]
    os_version: str
    missing_tools: tuple[str, ...]


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, separator, value = line.partition("=")
        if separator and key.strip():
            values[key.strip()] = value.strip().strip("\"'")
    return values


def local_runner_problem(facts: HostFacts, bundle_distro: str) -> str | None:
    """Why this host cannot build the bundle with the local runner, in one line; None when it can."""
    if facts.lsb_id and ("debian" in facts.lsb_id or "ubuntu" in facts.lsb_id):
        return (
            f"this host is {facts.lsb_id.capitalize()} (lsb_release): NVIDIA's script would build .deb packages "
            f"here, not RPMs; {USE_CONTAINERS}"
        )
    if facts.euid != 0:
        return (
            f"the local runner must run as root (NVIDIA's script refuses otherwise): run the worker as root or "
            f"{USE_CONTAINERS}"
        )
    family = {facts.os_id, *facts.os_id_like}
    if not family & RHEL_FAMILY:
        return f"this host ({facts.os_id or 'unknown'}) is not an RPM distribution of the RHEL family; {USE_CONTAINERS}"
    host_major = facts.os_version.split(".", 1)[0]
    bundle_major = bundle_distro.removeprefix("rhel").split(".", 1)[0]
    if bundle_distro.startswith("rhel") and host_major != bundle_major:
        return (
            f"this host is EL{host_major or '?'} but the bundle is for {bundle_distro}: its packages would be built "
            f"with another distro's compiler and rpm; {USE_CONTAINERS}"
        )
    if facts.missing_tools:
        return (
            f"missing on this host: {', '.join(facts.missing_tools)} (install rpm-build, gcc, make, perl, and "
            "bubblewrap, which sandboxes the script)"
        )
    return None


def read_host_facts() -> HostFacts:
    lsb_id = None
    if LSB_RELEASE.is_file() and os.access(LSB_RELEASE, os.X_OK):
        completed = subprocess.run(
            [str(LSB_RELEASE), "-s", "-i"], capture_output=True, text=True, timeout=30, check=False
        )
        lsb_id = completed.stdout.strip().lower() or None
    try:
        os_release = parse_os_release(OS_RELEASE.read_text(errors="replace"))
    except OSError:
        os_release = {}
    return HostFacts(
        euid=os.geteuid(),
        lsb_id=lsb_id,
        os_id=os_release.get("ID", "").lower(),
        os_id_like=tuple(os_release.get("ID_LIKE", "").lower().split()),
        os_version=os_release.get("VERSION_ID", ""),
        missing_tools=tuple(tool for tool in BUILD_TOOLS if shutil.which(tool) is None),
    )
