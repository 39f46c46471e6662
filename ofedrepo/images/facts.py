"""What an image is, concluded from the facts the appliance read out of it.

Pure: ``GuestFacts`` is everything libguestfs found in one image (file names and small texts, all of them
untrusted); ``interpret`` turns it into an ``Inspection`` or says, in one sentence, why the image cannot be
served: not RPM-based, no kernel, no version to choose a bundle by.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ofedrepo.distro import RHEL_FAMILY, ofed_distro_for_kernel, ofed_distro_for_os
from ofedrepo.errors import InvalidInput
from ofedrepo.images.bootloader import BootConfig, choose_default_kernel, kernels_from_names, parse_key_values
from ofedrepo.kernel import KernelRelease

#: rpm packages whose version-release.arch is the ``uname -r`` of a kernel they install.
KERNEL_PACKAGES = frozenset(
    {"kernel", "kernel-core", "kernel-uek", "kernel-uek-core", "kernel-rt", "kernel-rt-core", "kernel-lt", "kernel-ml"}
)

#: Release files that carry the full major.minor where os-release may only say the major (CentOS 7).
RELEASE_FILES = (
    "/etc/centos-release",
    "/etc/rocky-release",
    "/etc/almalinux-release",
    "/etc/oracle-release",
    "/etc/redhat-release",
    "/etc/system-release",
)
OS_RELEASE = "/etc/os-release"

_RELEASE_VERSION = re.compile(r"\brelease\s+(?P<major>[0-9]{1,3})\.(?P<minor>[0-9]{1,3})")
_VERSION = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3})?")
_DISTRO_ID = re.compile(r"[a-z][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class GuestFacts:
    """What the appliance read from one image's operating system."""

    os_type: str
    distro: str
    major: int
    minor: int
    arch: str
    release_files: Mapping[str, str] = field(default_factory=dict)
    module_dirs: Sequence[str] = ()
    boot_files: Sequence[str] = ()
    rpm_packages: Sequence[tuple[str, str]] = ()
    boot: BootConfig = field(default_factory=BootConfig)


@dataclass(frozen=True)
class Inspection:
    """The answer: the fields of ``ofedrepo inspect --json`` and of the image API, minus identity."""

    distro: str
    os_version: str
    arch: str
    kernels: list[str]
    default_kernel: str
    default_kernel_rule: str
    ofed_distro: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def distro_id(facts: GuestFacts) -> str:
    """os-release's ``ID`` (``rocky``, ``centos``, ``rhel``...), else libguestfs' name for the distro."""
    found = parse_key_values(facts.release_files.get(OS_RELEASE, "")).get("ID", "").lower()
    return found if _DISTRO_ID.fullmatch(found) else facts.distro


def os_version(facts: GuestFacts) -> str:
    """``major.minor`` when any release file says it, else what os-release or libguestfs say."""
    for path in RELEASE_FILES:
        match = _RELEASE_VERSION.search(facts.release_files.get(path, ""))
        if match:
            return f"{int(match.group('major'))}.{int(match.group('minor'))}"
    version_id = parse_key_values(facts.release_files.get(OS_RELEASE, "")).get("VERSION_ID", "")
    if _VERSION.fullmatch(version_id):
        return version_id
    return f"{facts.major}.{facts.minor}" if facts.minor else str(facts.major)


def installed_kernels(facts: GuestFacts) -> tuple[list[KernelRelease], dict[str, list[KernelRelease]]]:
    """Every kernel found in /lib/modules, /boot or the rpm database (sorted), and kernels per package."""
    packages: dict[str, list[KernelRelease]] = {}
    for name, release in facts.rpm_packages:
        if name in KERNEL_PACKAGES:
            packages.setdefault(name, []).extend(kernels_from_names([release]))
    found = set(kernels_from_names(facts.module_dirs)) | set(kernels_from_names(facts.boot_files, "vmlinuz-"))
    for kernels in packages.values():
        found.update(kernels)
    return sorted(found), packages


def interpret(facts: GuestFacts) -> Inspection:
    """Conclude; raise ``InvalidInput`` saying what was found when the image cannot be served."""
    distro = distro_id(facts)
    version = os_version(facts)
    if facts.os_type != "linux":
        raise InvalidInput(f"found a {facts.os_type} system: ofedrepo serves RHEL-family Linux images")
    if distro.lower() not in RHEL_FAMILY:
        ofed_distro_for_os(distro, version)  # raises, naming what was found
    kernels, packages = installed_kernels(facts)
    if not kernels:
        raise InvalidInput(
            f"{distro} {version}: no kernel installed (looked in /lib/modules, /boot/vmlinuz-* and the rpm database)"
        )
    decision = choose_default_kernel(facts.boot, kernels, packages)
    assert decision is not None  # kernels is not empty
    if "." in version:
        ofed_distro = ofed_distro_for_os(distro, version)
    else:
        from_kernel = ofed_distro_for_kernel(decision.kernel)
        if from_kernel is None:
            raise InvalidInput(
                f"{distro} {version}: cannot tell the minor release (no release file says it, and kernel "
                f"{decision.kernel} does not), so no MLNX_OFED bundle can be chosen"
            )
        ofed_distro = from_kernel
    arch = facts.arch if facts.arch not in ("", "unknown") else decision.kernel.arch
    if not arch:
        raise InvalidInput(f"{distro} {version}: cannot tell the architecture of the image or of {decision.kernel}")
    return Inspection(
        distro=distro,
        os_version=version,
        arch=arch,
        kernels=[kernel.text for kernel in kernels],
        default_kernel=decision.kernel.text,
        default_kernel_rule=decision.rule,
        ofed_distro=ofed_distro.tag,
    )
