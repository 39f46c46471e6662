"""Kernel releases in ``uname -r`` form: strict validation, parsing and rpm version ordering.

A kernel release reaches directory names (``repos/<bundle>/<kernel>/``) and command lines
(``mlnx_add_kernel_support.sh -k <kernel>``), so it is validated here, once, by a grammar that admits
nothing a shell or a path could interpret: letters, digits, ``.``, ``_``, ``-`` and ``+``, at most 128
characters, starting with a digit, never ``..``.
"""

import functools
import re
from dataclasses import dataclass

import rpm

from ofedrepo.errors import InvalidKernelRelease

MAX_LENGTH = 128

#: Architectures rpm-based kernels carry as the last component of their release.
RPM_ARCHES = frozenset({"x86_64", "aarch64", "ppc64le", "ppc64", "s390x", "i686", "i586", "noarch"})

_GRAMMAR = re.compile(r"(?P<version>[0-9]+(?:\.[0-9]+)*)-(?P<release>[A-Za-z0-9][A-Za-z0-9._+-]*)")
_DIST_TAG = re.compile(r"(?:^|\.)(?P<tag>el(?P<major>[0-9]+)(?:_(?P<minor>[0-9]+))?(?:uek)?)(?=\.|$)")


#: Kernels of EL9's flavours carry the flavour after the arch (``5.14.0-362.8.1.el9_3.x86_64+rt``,
#: ``...el9_3.aarch64+64k``) and ship packages of their own name (kernel-rt-core, kernel-rt-devel,
#: kernel-64k-devel); EL8's RT kernels say ``.rt7.`` in the release instead, with the same packages; Oracle's
#: UEK says ``uek`` (kernel-uek-devel). VENDOR: Mellanox/doca-driver-build's entrypoint handles ``+rt`` and
#: ``+64k``.
#: EL9 flavours as ``uname -r`` writes them (``…x86_64+rt``) and the packages that carry them (kernel.spec's
#: ``kernel-<variant>-core``/``-devel``), the most specific first: ``kernel-rt-debug-devel`` is not ``+rt``'s.
FLAVOR_PACKAGES = {
    "rt-debug": "kernel-rt-debug", "64k-debug": "kernel-64k-debug", "debug": "kernel-debug", "rt": "kernel-rt",
    "64k": "kernel-64k",
}  # fmt: skip
_EL8_RT = re.compile(r"\.rt[0-9]+\.")


def _rt_in_release(release: str) -> bool:
    """Whether an RT kernel says so in its release (EL7's and EL8's ``.rt7.``), not by a ``+rt`` flavour."""
    return _EL8_RT.search(f".{release}.") is not None


#: Flavours written after the arch with a dot, not a ``+``, and their packages: EL7's debug kernel
#: (``3.10.0-1160.119.1.el7.x86_64.debug``, kernel-debug-devel, sources in ``/usr/src/kernels/<K>``) and Oracle's
#: 64k-page UEK (``…el9uek.aarch64.64k``, the ``kernel-uek64k-*`` packages of version-release ``<K>`` without
#: ``.64k``: Oracle's UEK R7U3 and UEK 8 release notes; an OCI tool maps ``*.el9uek.aarch64.64k`` to
#: ``kernel-uek64k-modules-extra-${K%.64k}``).
DOTTED_FLAVORS = frozenset({"debug", "64k", "64kdebug"})
#: UEK's flavours and their packages (oracle/linux-uek ``uek-rpm/ol9/kernel-uek.spec``: ``kernel-uek64k-devel``
#: installs ``<K>.64k``, ``kernel-uek-debug-devel`` ``<K>.debug``, ``kernel-uek64kdebug-devel`` ``<K>.64kdebug``).
UEK_FLAVOR_PACKAGES = {"64kdebug": "kernel-uek64kdebug", "64k": "kernel-uek64k", "debug": "kernel-uek-debug"}
UEK_64K_PACKAGE = UEK_FLAVOR_PACKAGES["64k"]


def devel_package_names(kernel: "KernelRelease") -> list[str]:
    """The ``*-devel`` packages that may carry a kernel's sources, the most specific first."""
    el8_rt = _rt_in_release(kernel.release)
    if kernel.is_uek and kernel.flavor in UEK_FLAVOR_PACKAGES:
        return [f"{UEK_FLAVOR_PACKAGES[kernel.flavor]}-devel"]
    if el8_rt and kernel.flavor == "debug":  # 4.18.0-353.rt7.138.el8.x86_64+debug, EL7's …el7.x86_64.debug
        return ["kernel-rt-debug-devel"]
    if kernel.flavor in FLAVOR_PACKAGES:
        return [f"{FLAVOR_PACKAGES[kernel.flavor]}-devel"]
    names = ["kernel-devel"]
    if kernel.is_uek:
        names.insert(0, "kernel-uek-devel")
    if el8_rt:
        names.insert(0, "kernel-rt-devel")
    return names


def release_of_package(name: str, version: str, release: str, arch: str) -> str:
    """The ``uname -r`` a kernel package (``kernel-devel``, ``kernel-rt-core``...) is for: version-release.arch,
    with its flavour appended as that generation writes it: ``+rt``, ``+64k`` on EL8 and later, ``+debug`` for
    EL8's RT debug kernel (its ``rt`` is in the release), ``.debug`` on EL7, ``.64k`` for UEK."""
    uname = f"{version}-{release}.{arch}"
    for flavor, prefix in UEK_FLAVOR_PACKAGES.items():
        if name.startswith(prefix + "-"):
            return f"{uname}.{flavor}"
    dist = _DIST_TAG.search(release)
    el7 = dist is not None and dist.group("major") == "7"
    if _rt_in_release(release):
        debug = ".debug" if el7 else "+debug"
        return f"{uname}{debug}" if name.startswith("kernel-rt-debug-") else uname
    for flavor, prefix in FLAVOR_PACKAGES.items():
        if name.startswith(prefix + "-"):
            return f"{uname}.{flavor}" if el7 and flavor in DOTTED_FLAVORS else f"{uname}+{flavor}"
    return uname


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class KernelRelease:
    """A validated kernel release, e.g. ``4.18.0-372.26.1.el8_6.x86_64``.

    ``release`` excludes the architecture; ``flavor`` is the suffix after it (``+debug``, or EL7's ``.debug``).
    Instances compare by rpm version ordering (librpm's ``rpmvercmp``), so ``...-372.9...`` sorts before
    ``...-372.26...``.
    """

    text: str
    version: str
    release: str
    arch: str | None
    flavor: str | None

    @property
    def dist_tag(self) -> str | None:
        """The RHEL-family dist tag in the release (``el8_6``, ``el7``), if any."""
        match = _DIST_TAG.search(self.release)
        return match.group("tag") if match else None

    @property
    def el_version(self) -> tuple[int, int | None] | None:
        """``(major, minor)`` from the dist tag: ``el8_6`` → ``(8, 6)``, ``el7`` → ``(7, None)``."""
        match = _DIST_TAG.search(self.release)
        if not match:
            return None
        minor = match.group("minor")
        return int(match.group("major")), int(minor) if minor is not None else None

    @property
    def is_uek(self) -> bool:
        """Oracle's Unbreakable Enterprise Kernel (``5.4.17-2136.300.7.el8uek.x86_64``)."""
        tag = self.dist_tag
        return tag is not None and tag.endswith("uek")

    @property
    def line(self) -> tuple[str, str | None, bool]:
        """Which kernels of one distro minor and arch are the same line, newer ones replacing older ones: the
        same upstream version (UEK R6's 5.4.17 is not UEK R7's 5.15.0), flavour (``+64k`` is not the plain
        aarch64 kernel, though both ship in EL9's AppStream) and RT-ness (EL8's ``.rtN.`` kernels)."""
        return self.version, self.flavor, _rt_in_release(self.release)

    @property
    def release_number(self) -> int:
        """The first number of the release (``372`` in ``4.18.0-372.26.1.el8_6``): RHEL's minor marker."""
        return int(re.match(r"[0-9]*", self.release).group() or 0)  # type: ignore[union-attr]

    def _evr(self) -> tuple[str, str, str]:
        return ("0", self.version, self.text.split("-", 1)[1])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KernelRelease) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __lt__(self, other: "KernelRelease") -> bool:
        order = rpm.labelCompare(self._evr(), other._evr())
        return bool(order < 0 or (order == 0 and self.text < other.text))

    def __str__(self) -> str:
        return self.text


def parse_kernel_release(text: str) -> KernelRelease:
    """Validate and parse ``text``; raise ``InvalidKernelRelease`` saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise InvalidKernelRelease("kernel release is empty")
    shown = text[:40].encode("unicode_escape").decode("ascii")
    if len(text) > MAX_LENGTH:
        raise InvalidKernelRelease(f"kernel release is longer than {MAX_LENGTH} characters: {shown}...")
    match = _GRAMMAR.fullmatch(text)
    if not match or not text.isascii():
        raise InvalidKernelRelease(
            f"invalid kernel release {shown!r}: expected the `uname -r` form, e.g. "
            "4.18.0-372.26.1.el8_6.x86_64 (letters, digits, '.', '_', '-', '+' only)"
        )
    if ".." in text:
        raise InvalidKernelRelease(f"invalid kernel release {shown!r}: '..' is not allowed")
    release, plus, flavor = match.group("release").partition("+")
    arch = None
    head, _, last = release.rpartition(".")
    if not plus and last in DOTTED_FLAVORS and head.rpartition(".")[2] in RPM_ARCHES:
        flavor = last  # EL7's …x86_64.debug, UEK's …aarch64.64k
        head, _, last = head.rpartition(".")
    if head and last in RPM_ARCHES:
        release, arch = head, last
    if plus and flavor not in FLAVOR_PACKAGES:
        known = ", ".join(f"+{name}" for name in FLAVOR_PACKAGES)
        raise InvalidKernelRelease(f"invalid kernel release {shown!r}: its flavour is not one of {known}")
    if flavor and "64k" in flavor and arch != "aarch64":
        raise InvalidKernelRelease(f"invalid kernel release {shown!r}: 64k-page kernels are aarch64 kernels")
    return KernelRelease(text=text, version=match.group("version"), release=release, arch=arch, flavor=flavor or None)


def is_kernel_release(text: str) -> bool:
    """True when ``text`` passes ``parse_kernel_release``."""
    try:
        parse_kernel_release(text)
    except InvalidKernelRelease:
        return False
    return True


def sort_kernels(releases: list[str]) -> list[KernelRelease]:
    """Parse and sort by rpm version order, oldest first; invalid strings raise."""
    return sorted(parse_kernel_release(text) for text in releases)
