"""MLNX_OFED distro tags (``rhel8.6``, ``rhel7.3``, ``sles15sp3``, ``ubuntu22.04``).

NVIDIA builds one bundle per distro tag. RHEL and its rebuilds (CentOS, Rocky, AlmaLinux, Oracle Linux)
all use the ``rhel<major>.<minor>`` bundles; that is the mapping this module owns.
"""

import re
from dataclasses import dataclass

import rpm

from ofedrepo.errors import InvalidInput
from ofedrepo.kernel import KernelRelease

#: ``rhel8.6``, ``rhel9``, ``sles15sp3``, ``ubuntu22.04``, ``rhel7.6alternate``, ``euleros2.0sp11``: numbers
#: joined by single dots, then maybe a word and its number.
_TAG = re.compile(r"(?P<family>[a-z]+)(?P<version>[0-9]+(?:\.[0-9]+)*(?:[a-z]+[0-9]*)?)")

#: os-release ``ID`` values whose images take the ``rhel`` bundles.
RHEL_FAMILY = frozenset({"rhel", "centos", "rocky", "almalinux", "alma", "ol", "oracle", "oraclelinux", "redhat"})

#: First release number of each RHEL minor's kernel, e.g. 4.18.0-372.* is RHEL 8.6. Kernels whose dist
#: tag is a plain ``el8`` (CentOS Stream, RHEL x.0 GA) only say their minor through this number.
_RHEL_KERNEL_MINORS: dict[tuple[int, str], list[tuple[int, int]]] = {
    (7, "3.10.0"): [(123, 0), (229, 1), (327, 2), (514, 3), (693, 4), (862, 5), (957, 6), (1062, 7),
                    (1127, 8), (1160, 9)],
    (8, "4.18.0"): [(80, 0), (147, 1), (193, 2), (240, 3), (305, 4), (348, 5), (372, 6), (425, 7),
                    (477, 8), (513, 9), (553, 10)],
    (9, "5.14.0"): [(70, 0), (162, 1), (284, 2), (362, 3), (427, 4), (503, 5), (570, 6), (611, 7), (687, 8)],
    (10, "6.12.0"): [(55, 0), (124, 1)],
}  # fmt: skip


@dataclass(frozen=True)
class OfedDistro:
    """A parsed distro tag: ``rhel8.6`` → family ``rhel``, version ``8.6``."""

    family: str
    version: str

    @property
    def tag(self) -> str:
        return f"{self.family}{self.version}"

    def __str__(self) -> str:
        return self.tag


def parse_ofed_distro(tag: str) -> OfedDistro:
    """Validate a distro tag as it appears in bundle names and in a bundle's ``distro`` file."""
    match = _TAG.fullmatch(tag) if isinstance(tag, str) and len(tag) <= 32 else None
    if not match:
        raise InvalidInput(f"invalid MLNX_OFED distro tag {tag[:40]!r}: expected e.g. rhel8.6")
    return OfedDistro(family=match.group("family"), version=match.group("version"))


def compare_distros(left: str, right: str) -> int:
    """-1, 0 or 1 as the tag ``left`` is older than, the same as or newer than ``right`` (``rhel8.10`` >
    ``rhel8.9``); tags of different families compare by name."""
    left_distro, right_distro = parse_ofed_distro(left), parse_ofed_distro(right)
    if left_distro.family != right_distro.family:
        return (left > right) - (left < right)
    return int(rpm.labelCompare(("0", left_distro.version, ""), ("0", right_distro.version, "")))


def names_distro(wanted: str, tag: str) -> bool:
    """Whether the distro tag ``wanted`` names the tag ``tag``: the same tag, or its major release alone (``ol8``
    names ``ol8.6``: what a UEK kernel tells)."""
    return tag == wanted or (wanted[-1:].isdigit() and "." not in wanted and tag.startswith(wanted + "."))


def ofed_distro_for_os(distro_id: str, os_version: str) -> OfedDistro:
    """The bundle tag for an installed OS: RHEL-family ``8.6`` → ``rhel8.6``; others are not supported."""
    if distro_id.lower() not in RHEL_FAMILY:
        raise InvalidInput(
            f"{distro_id} {os_version} is not supported: ofedrepo builds MLNX_OFED for RHEL-family images "
            "(RHEL, CentOS, Rocky, AlmaLinux, Oracle Linux)"
        )
    match = re.match(r"([0-9]+)\.([0-9]+)", os_version)
    if not match:
        raise InvalidInput(f"{distro_id} {os_version!r}: need major.minor to choose an MLNX_OFED bundle")
    return OfedDistro("rhel", f"{int(match.group(1))}.{int(match.group(2))}")


def ofed_distro_for_kernel(kernel: KernelRelease) -> OfedDistro | None:
    """The RHEL bundle tag a kernel belongs to, from ``el8_6`` or, for a plain ``el8``, its release number; for a
    UEK kernel, Oracle Linux's major release (``ol8``): one UEK serves several minor releases, and NVIDIA builds
    the Oracle Linux bundles (``ol8.6``) for UEK.

    None when the kernel says nothing usable (not an EL kernel, or a release number before any known minor).
    """
    el = kernel.el_version
    if el is None:
        return None
    major, minor = el
    if kernel.is_uek:
        return OfedDistro("ol", str(major))
    if minor is not None:
        return OfedDistro("rhel", f"{major}.{minor}")
    found = None
    for first_release, candidate in _RHEL_KERNEL_MINORS.get((major, kernel.version), []):
        if kernel.release_number >= first_release:
            found = candidate
    return OfedDistro("rhel", f"{major}.{found}") if found is not None else None
