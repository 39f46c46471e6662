"""DOCA-OFED bundles: NVIDIA's DOCA-Host yum repository of one DOCA release, for one distro and arch.

MLNX_OFED's successor ships no bundle directory with marker files and a script: it ships a yum repository,
in one of two forms, both accepted here:

- the local-repo package ``doca-host-<ver>-<build>_<ofed>_<distro>.<arch>.rpm``, whose payload is the
  repository at ``/usr/share/doca-host-<ver>/repo/`` (``Packages/``, ``repodata/``, ``RPM-GPG-KEY-doca``).
  Its payload is read with librpm, as ``rpm2cpio`` would, and never installed: only the members under that
  directory are written, each checked as an archive member is (``archive``);
- an unpacked copy of NVIDIA's online tree ``doca/<ver>/<distro>/<arch>/`` (packages anywhere below it).

What a bundle is comes from its packages: the DOCA version and the distro from the ``doca-host`` package, or
else from the DOCA metapackages (``doca-ofed``...: version ``<doca>``, release ``<build>_<ofed>_<distro>``, the
distro written without its dot, ``rhel95``; from DOCA 3.2 a major alone, ``rhel9``); the OFED driver version
from the ``MLNX_OFED_SRC-<ofed>.tgz`` that ``doca-ofed-source`` installs; the arch from the arch-specific
packages. The per-kernel rebuild needs ``doca-extra`` (``/opt/mellanox/doca/tools/doca-kernel-support``) and
``doca-ofed-source`` (the driver sources and ``get_mlnx_ofed_version``): a repository without either is
refused, saying which is missing. The two are the build's tools, not packages for an image, so a published
version leaves them out, with the wrapper packages (``doca-host``, ``doca-kernel-repo``).
"""

import hashlib
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ofedrepo.bundles.archive import Limits, extract_payload, is_regular_inside
from ofedrepo.bundles.names import DOCA, DOCA_VERSION, BundleIdentity
from ofedrepo.bundles.unpack import OpenedBundle, real_packages
from ofedrepo.distro import parse_ofed_distro
from ofedrepo.errors import InvalidInput, NotABundle
from ofedrepo.kernel import RPM_ARCHES
from ofedrepo.rpmfile import PackageHeader, module_kernels, open_payload, read_header
from ofedrepo.storage import DataDir, remove_tree

RPM_MAGIC = b"\xed\xab\xee\xdb"
LOCAL_REPO_PACKAGE = "doca-host"
EXTRA = "doca-extra"
SOURCE = "doca-ofed-source"
WRAPPER = "doca-kernel-repo"
#: Where doca-extra and doca-ofed-source install (the tool finds its resources there by absolute path).
TOOLS_PREFIX = "/opt/mellanox/doca"
TOOL = f"{TOOLS_PREFIX}/tools/doca-kernel-support"
SOURCES_DIR = f"{TOOLS_PREFIX}/tools/resources"
VENDOR_KEY = "RPM-GPG-KEY-doca"
#: Packages of the repository that no published version holds: the rebuild's tools and repository wrappers.
NOT_PUBLISHED = {
    EXTRA: "doca-kernel-support itself: the rebuild's tool, not for an image",
    SOURCE: "the driver sources doca-kernel-support builds from, not for an image",
    LOCAL_REPO_PACKAGE: "the wrapper of the repository ofedrepo publishes from",
    WRAPPER: "a wrapper of a kernel repository; ofedrepo publishes the packages inside",
}
METAPACKAGES = ("doca-ofed", "doca-all", "doca-networking", "doca-roce", "doca-ofed-userspace")
_OFED_SOURCE = re.compile(r"MLNX_OFED_SRC-(?:[a-z][a-z0-9.]*-)?(?P<version>[0-9]+\.[0-9]+-[0-9]+(?:\.[0-9]+)*)\.tgz")
_COMPACT_DISTRO = re.compile(r"(?P<family>[a-z]+)(?P<digits>[0-9]+)")


@dataclass(frozen=True)
class DocaBundle:
    """A DOCA repository ready to read: the package set it offers, and where its build tools are."""

    opened: OpenedBundle
    extra: str
    """The ``doca-extra`` package, relative to the root."""
    source: str
    """The ``doca-ofed-source`` package, relative to the root."""
    ofed_source: str
    """The driver sources' path as ``doca-ofed-source`` installs them (``.../MLNX_OFED_SRC-<ofed>.tgz``)."""
    tool_sha256: str
    """The checksum of ``doca-kernel-support`` itself: part of the builds' cache key."""
    left_out: dict[str, str]
    """Packages of the repository never published (path → reason)."""


def is_rpm_file(path: Path) -> bool:
    """A package file (the local-repo package), by its lead's magic."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == RPM_MAGIC
    except OSError:
        return False


def looks_like_doca_tree(root: Path) -> bool:
    """A directory holding DOCA's own packages (``doca-*``: its tools, metapackages): a DOCA repository, to be
    read as one (and refused as one, saying what it lacks), not as an MLNX_OFED bundle without markers."""
    return any(path.name.startswith("doca-") for path in _package_files(root))


def _package_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.rpm")):
        if "repodata" not in path.relative_to(root).parts:
            yield path


def unpack_local_repo(package: Path, header: PackageHeader, destination: Path, limits: Limits) -> None:
    """Write the repository in ``doca-host-*.rpm``'s payload (``/usr/share/doca-host-<ver>/repo/``) into
    ``destination``; the ``.repo`` file it would install is skipped."""
    prefix = f"/usr/share/{LOCAL_REPO_PACKAGE}-{header.version}/repo/"

    def select(name: str) -> str | None:
        return name[len(prefix) :] if name.startswith(prefix) and name != prefix else None

    if not extract_payload(package, destination, limits, select):
        raise NotABundle(f"{package.name} holds nothing under {prefix}: not a DOCA-Host local repository")


def unpack_tools(packages: list[Path], destination: Path, limits: Limits) -> Path:
    """``doca-extra`` and ``doca-ofed-source`` as they would install under ``/opt/mellanox/doca``, into
    ``destination``, the directory to mount there: the tool finds its resources by that absolute path."""
    prefix = TOOLS_PREFIX + "/"
    for package in packages:
        extract_payload(
            package, destination, limits, lambda name: name[len(prefix) :] if name.startswith(prefix) else None, "skip"
        )
    return destination


def unwrap_kernel_repo(wrapper: Path, kernel: str, destination: Path, limits: Limits) -> list[Path]:
    """The packages in ``doca-kernel-repo-*.rpm``'s repository for ``kernel``
    (``/usr/share/doca-host-<ver>/Modules/<K>/*.rpm``), written into ``destination``."""
    modules = rf"/usr/share/{LOCAL_REPO_PACKAGE}-[0-9][0-9.]*/Modules/{re.escape(kernel)}/"
    pattern = re.compile(modules + r"(?P<name>[^/]+\.rpm)")

    def select(name: str) -> str | None:
        match = pattern.fullmatch(name)
        return match.group("name") if match else None

    extract_payload(wrapper, destination, limits, select, links="skip")
    packages = sorted(destination.glob("*.rpm"))
    if not packages:
        raise NotABundle(f"{wrapper.name} holds no package under /usr/share/{LOCAL_REPO_PACKAGE}-*/Modules/{kernel}/")
    return packages


def parse_compact_distro(text: str) -> str:
    """``rhel95`` → ``rhel9.5``, ``rhel9`` → ``rhel9``, ``rhel100`` → ``rhel10.0``: DOCA's package releases
    write the distro without its dot; ofedrepo's tags (and images) have it."""
    match = _COMPACT_DISTRO.fullmatch(text)
    if not match:
        raise NotABundle(f"cannot read a distro from {text[:40]!r}")
    family, digits = match.group("family"), match.group("digits")
    major_length = 2 if digits.startswith("1") and len(digits) >= 2 else 1
    major, minor = digits[:major_length], digits[major_length:]
    return parse_ofed_distro(f"{family}{major}" + (f".{minor}" if minor else "")).tag


def _distro_of_release(release: str) -> str:
    return parse_compact_distro(release.rsplit("_", 1)[-1])


def _single(headers: dict[str, PackageHeader], name: str) -> str:
    found = [key for key, header in headers.items() if header.name == name]
    if not found:
        return ""
    if len(found) > 1:
        raise NotABundle(f"the repository holds {len(found)} {name} packages: {', '.join(sorted(found)[:4])}")
    return found[0]


def identify(
    headers: dict[str, PackageHeader], local_repo: PackageHeader | None = None
) -> tuple[BundleIdentity, str, str, str]:
    """(identity, doca-extra's key, doca-ofed-source's key, the driver sources' path) from the headers."""
    extra, source = _single(headers, EXTRA), _single(headers, SOURCE)
    missing = [name for name, key in ((EXTRA, extra), (SOURCE, source)) if not key]
    if missing:
        raise NotABundle(
            f"a DOCA-OFED repository without {' and '.join(missing)}: ofedrepo rebuilds its kernel modules with "
            f"doca-kernel-support, which {EXTRA} installs from the sources in {SOURCE}; add the missing "
            "package(s) from the same DOCA release"
        )
    sources = [name for name in headers[source].files if _OFED_SOURCE.fullmatch(PurePosixPath(name).name)]
    sources = [name for name in sources if name.startswith(SOURCES_DIR + "/")]
    if len(sources) != 1:
        raise NotABundle(f"{SOURCE} should install one {SOURCES_DIR}/MLNX_OFED_SRC-<ofed>.tgz; it has {len(sources)}")
    if TOOL not in headers[extra].files:
        raise NotABundle(f"{EXTRA} does not install {TOOL}")
    match = _OFED_SOURCE.fullmatch(PurePosixPath(sources[0]).name)
    assert match is not None
    ofed_version = match.group("version")
    described = local_repo or next(
        (header for name in METAPACKAGES for header in headers.values() if header.name == name), None
    )
    if described is None:
        raise NotABundle(
            f"cannot tell the DOCA version: no {LOCAL_REPO_PACKAGE} package and no DOCA metapackage "
            f"({', '.join(METAPACKAGES)})"
        )
    if not DOCA_VERSION.fullmatch(described.version):
        raise NotABundle(f"{described.nevra}: {described.version[:40]!r} is not a DOCA version")
    arches = {header.arch for header in headers.values() if header.arch != "noarch"}
    if local_repo is not None and local_repo.arch != "noarch":
        arches.add(local_repo.arch)
    if len(arches) != 1 or not arches <= set(RPM_ARCHES):
        shown = ", ".join(sorted(arches)[:4]) or "none"
        raise NotABundle(f"a DOCA repository holds the packages of one architecture; this one: {shown}")
    identity = BundleIdentity(
        ofed_version=ofed_version,
        distro=_distro_of_release(described.release),
        arch=arches.pop(),
        kind=DOCA,
        doca_version=described.version,
    )
    return identity, extra, source, sources[0]


def tool_checksum(extra: Path) -> str:
    """The sha256 of ``doca-kernel-support`` as ``doca-extra`` installs it."""
    with open_payload(extra) as (_, archive):
        for entry in archive:
            if entry.name == TOOL and stat.S_ISREG(entry.mode):
                digest = hashlib.sha256()
                while chunk := archive.read(1024 * 1024):
                    digest.update(chunk)
                return digest.hexdigest()
    raise NotABundle(f"{extra.name} does not install {TOOL}")


def read_doca_tree(
    root: Path, owned: bool, advance: Callable[[], None] | None = None, local_repo: PackageHeader | None = None
) -> DocaBundle:
    """Identify the DOCA repository at ``root`` and list the packages a version may publish."""
    packages = real_packages(root, list(_package_files(root)))
    if not packages:
        raise NotABundle(f"not a DOCA-OFED repository: {root.name} holds no packages")
    headers = {}
    for relative in packages:
        headers[relative] = read_header(root / relative)
        if advance:
            advance()
    identity, extra, source, ofed_source = identify(headers, local_repo)
    left_out = {key: NOT_PUBLISHED[header.name] for key, header in headers.items() if header.name in NOT_PUBLISHED}
    key = next((path for path in sorted(root.rglob(VENDOR_KEY)) if is_regular_inside(path, root)), None)
    opened = OpenedBundle(
        root=root,
        identity=identity,
        packages=[key_ for key_ in packages if key_ not in left_out],
        vendor_key=key.read_text(errors="replace")[:65536] if key else None,
        supported_kernels=sorted({kernel for header in headers.values() for kernel in module_kernels(header.files)}),
        library_set=None,
        owned=owned,
    )
    return DocaBundle(opened, extra, source, ofed_source, tool_checksum(root / extra), left_out)


def local_repo_header(package: Path) -> PackageHeader:
    """The ``doca-host`` package's header (what names the DOCA version and distro); refused if it is another."""
    try:
        header = read_header(package)
    except InvalidInput:
        raise NotABundle(f"{package.name}: not a readable DOCA-Host local repository package") from None
    if header.name != LOCAL_REPO_PACKAGE:
        raise NotABundle(f"{package.name}: a {header.name} package, not {LOCAL_REPO_PACKAGE}")
    return header


def is_doca_input(source: Path) -> bool:
    """A DOCA-Host local-repo package, or a tree holding DOCA's tools; anything else is taken for MLNX_OFED."""
    if source.is_file():
        return is_rpm_file(source)
    return source.is_dir() and not (source / ".mlnx").exists() and looks_like_doca_tree(source)


@contextmanager
def open_doca(
    source: Path, data: DataDir, limits: Limits, advance: Callable[[], None] | None = None
) -> Iterator[DocaBundle]:
    """Open a DOCA repository (the local-repo package, unpacked into scratch space, or a tree read in place)."""
    if source.is_dir():
        yield read_doca_tree(source, False, advance)
        return
    header = local_repo_header(source)
    scratch = data.new_scratch(data.work, "unpack")
    try:
        unpack_local_repo(source, header, scratch / "repo", limits)
        yield read_doca_tree(scratch / "repo", True, advance, local_repo=header)
    finally:
        remove_tree(scratch)
