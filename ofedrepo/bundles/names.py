"""MLNX_OFED bundle names and identities (pure: no file is opened here).

A bundle is named ``MLNX_OFED_LINUX-<ofed version>-<distro tag>-<arch>``, e.g.
``MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64``; ``mlnx_add_kernel_support.sh`` appends ``-ext`` to the
bundle it rebuilds. The published tree always uses the name without ``-ext``. A bundle's own marker files
(``.mlnx`` holds the version, ``distro`` the tag, ``.arch`` the architecture) are what identify it; the
name is only checked against them. One exception: given ``--distro`` (which it needs on any host whose
rpm cannot tell the distro), the script overwrites its output's ``distro`` with ``skip-distro-check``, so
an ``-ext`` bundle's distro lives only in its name (the directory's, or the archive's).

DOCA-OFED (DOCA-Host) bundles are NVIDIA's yum repositories of one DOCA release for one distro; they have no
marker files, so their identity comes from their packages (``ofedrepo.bundles.doca``) and ofedrepo names them
``DOCA_HOST-<doca version>-<ofed version>-<distro>-<arch>``, e.g. ``DOCA_HOST-3.2.0-25.10-1.2.8.0-rhel9-x86_64``
(from DOCA 3.2 the distro is a major release: one repository serves every minor).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import rpm

from ofedrepo.distro import parse_ofed_distro
from ofedrepo.errors import InvalidBundleName, InvalidInput, NotABundle
from ofedrepo.kernel import RPM_ARCHES
from ofedrepo.kinds import BundleKind

PREFIX = "MLNX_OFED_LINUX"
DOCA_PREFIX = "DOCA_HOST"
SKIP_DISTRO_CHECK = "skip-distro-check"
ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".iso")

_VERSION = r"[0-9]+\.[0-9]+-[0-9]+(?:\.[0-9]+)*"
_NAME = re.compile(
    rf"{PREFIX}-(?P<version>{_VERSION})-(?P<distro>[a-z]+[0-9][0-9a-z.]*)-(?P<arch>[a-z0-9_]+)(?P<ext>-ext)?"
)
_VERSION_ONLY = re.compile(_VERSION)
_DOCA_VERSION = r"[0-9]+\.[0-9]+\.[0-9]+"
_DOCA_NAME = re.compile(
    rf"{DOCA_PREFIX}-(?P<doca>{_DOCA_VERSION})-(?P<version>{_VERSION})-(?P<distro>[a-z]+[0-9][0-9a-z.]*)-(?P<arch>[a-z0-9_]+)"
)
DOCA_VERSION = re.compile(_DOCA_VERSION)
#: The longest OFED and DOCA versions taken: NVIDIA's are about a dozen characters (``25.10-1.2.8.0``,
#: ``3.2.0``); the bounds keep a name within its column (200) and a file name's 255 bytes.
MAX_OFED_VERSION, MAX_DOCA_VERSION = 48, 24


@dataclass(frozen=True)
class BundleIdentity:
    """What a bundle is: OFED version, distro tag and architecture; for DOCA bundles also the DOCA version.

    Every part is checked when an identity is made, whichever input it came from: they become a directory of
    the published tree, database columns and the lines of a ``.repo`` file."""

    ofed_version: str
    distro: str
    arch: str
    kind: BundleKind = BundleKind.MLNX_OFED
    doca_version: str | None = None

    def __post_init__(self) -> None:
        if len(self.ofed_version) > MAX_OFED_VERSION or not _VERSION_ONLY.fullmatch(self.ofed_version):
            raise NotABundle(f"{self.ofed_version[:60]!r} is not an OFED version (e.g. 5.8-3.0.7.0)")
        parse_ofed_distro(self.distro)
        if self.arch not in RPM_ARCHES:
            raise NotABundle(f"{self.arch[:40]!r} is not an architecture")
        if (self.kind == BundleKind.DOCA) != (self.doca_version is not None):
            raise NotABundle(f"a DOCA version belongs to DOCA-OFED repositories only, not {self.kind}")
        doca = self.doca_version
        if doca is not None and (len(doca) > MAX_DOCA_VERSION or not DOCA_VERSION.fullmatch(doca)):
            raise NotABundle(f"{doca[:60]!r} is not a DOCA version (e.g. 3.2.0)")

    @property
    def name(self) -> str:
        """The canonical name, without ``-ext``: the directory name in the published tree."""
        if self.kind == BundleKind.DOCA:
            return f"{DOCA_PREFIX}-{self.doca_version}-{self.ofed_version}-{self.distro}-{self.arch}"
        return f"{PREFIX}-{self.ofed_version}-{self.distro}-{self.arch}"

    @property
    def dib_version(self) -> str:
        """``DIB_MLNX_OFED_VERSION`` as the element's users write it: ``5.8-3`` for ``5.8-3.0.7.0``."""
        major_minor, _, build = self.ofed_version.partition("-")
        return f"{major_minor}-{build.split('.')[0]}"


@dataclass(frozen=True)
class BundleName:
    """A parsed bundle name; ``ext`` tells whether it is add-kernel-support output."""

    identity: BundleIdentity
    ext: bool


def strip_archive_suffix(filename: str) -> str:
    """``MLNX_OFED_LINUX-...-x86_64.tgz`` → ``MLNX_OFED_LINUX-...-x86_64``."""
    for suffix in ARCHIVE_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def parse_bundle_name(name: str) -> BundleName:
    """Parse a bundle name, with or without ``-ext`` and an archive suffix; or a DOCA bundle's name."""
    stem = strip_archive_suffix(name)
    refusal = InvalidBundleName(
        f"{name[:80]!r} is not an MLNX_OFED bundle name "
        f"(expected {PREFIX}-<version>-<distro>-<arch>, e.g. {PREFIX}-5.8-3.0.7.0-rhel8.6-x86_64)"
    )
    try:
        doca = _DOCA_NAME.fullmatch(stem) if len(stem) <= 200 else None
        if doca and doca.group("arch") in RPM_ARCHES:
            identity = BundleIdentity(
                doca.group("version"),
                doca.group("distro"),
                doca.group("arch"),
                kind=BundleKind.DOCA,
                doca_version=doca.group("doca"),
            )
            return BundleName(identity=identity, ext=False)
        match = _NAME.fullmatch(stem) if len(stem) <= 200 else None
        if not match:
            raise refusal
        identity = BundleIdentity(match.group("version"), match.group("distro"), match.group("arch"))
    except InvalidInput:
        raise refusal from None
    return BundleName(identity=identity, ext=match.group("ext") is not None)


def identity_from_markers(
    mlnx: str | None, distro: str | None, arch: str | None, names: Sequence[str] = ()
) -> BundleIdentity:
    """Identity from the texts of a bundle's ``.mlnx``, ``distro`` and ``.arch`` files.

    ``.mlnx`` may carry a ``MLNX_OFED_LINUX-`` prefix; surrounding whitespace is ignored. A missing file is
    passed as None and named in the error, because that is what tells a user the input is not a bundle.
    When ``distro`` says ``skip-distro-check`` the tag comes from the first of ``names`` (the directory's,
    the archive's) that is a bundle name of the same version and architecture.
    """
    missing = [name for name, text in ((".mlnx", mlnx), ("distro", distro), (".arch", arch)) if text is None]
    if missing:
        raise NotABundle(f"not an MLNX_OFED bundle: missing {', '.join(missing)}")
    assert mlnx is not None and distro is not None and arch is not None
    version = mlnx.strip().removeprefix(f"{PREFIX}-")
    if not _VERSION_ONLY.fullmatch(version):
        raise NotABundle(f"not an MLNX_OFED bundle: .mlnx holds {version[:40]!r}, not an OFED version")
    arch = arch.strip()
    if arch not in RPM_ARCHES:
        raise NotABundle(f"not an MLNX_OFED bundle: .arch holds {arch[:40]!r}, not an architecture")
    if distro.strip() != SKIP_DISTRO_CHECK:
        return BundleIdentity(ofed_version=version, distro=parse_ofed_distro(distro.strip()).tag, arch=arch)
    for name in names:
        try:
            named = parse_bundle_name(name).identity
        except InvalidBundleName:
            continue
        if (named.ofed_version, named.arch) == (version, arch):
            return named
    shown = ", ".join(repr(name[:80]) for name in names) or "none"
    raise NotABundle(
        f"its distro file says {SKIP_DISTRO_CHECK} (add-kernel-support output, made with --distro) and no name it "
        f"came with tells the distro (names: {shown}); name it {PREFIX}-{version}-<distro>-{arch}-ext"
    )


def compare_ofed_versions(left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` is older than, the same as or newer than ``right`` (5.10-1.0 > 5.9-0.5)."""
    left_version, _, left_release = left.partition("-")
    right_version, _, right_release = right.partition("-")
    return int(rpm.labelCompare(("0", left_version, left_release), ("0", right_version, right_release)))
