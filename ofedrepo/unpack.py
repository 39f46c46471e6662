"""Opening a bundle as it arrives: a tgz, an ISO, or an unpacked directory.

Archives are unpacked (safely, see ``archive``) into the data dir's ``work/``; a directory is read in
place. Either way the result is the bundle's root (the directory holding ``.mlnx`` and ``RPMS/``), its
identity read from its own marker files, and its packages, each checked to be a regular file inside the
bundle (a directory may hold symlinks pointing anywhere).
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ofedrepo.archive import Limits, extract, is_regular_inside
from ofedrepo.bundle import BundleIdentity, identity_from_markers, parse_bundle_name
from ofedrepo.errors import InvalidBundleName, InvalidInput, NotABundle
from ofedrepo.storage import DataDir

MARKERS = (".mlnx", "distro", ".arch")
VENDOR_KEY = "RPM-GPG-KEY-Mellanox"
_MARKER_MAX_BYTES = 4096


@dataclass(frozen=True)
class OpenedBundle:
    """A bundle ready to read. ``owned`` is True when ``root`` is our own scratch copy (files may move)."""

    root: Path
    identity: BundleIdentity
    packages: list[str]
    """Package paths relative to ``RPMS/``, sorted; never anything under ``repodata/``."""
    vendor_key: str | None
    owned: bool

    @property
    def rpms(self) -> Path:
        return self.root / "RPMS"


def _read_marker(root: Path, name: str) -> str | None:
    path = root / name
    if not is_regular_inside(path, root):
        return None
    with path.open("rb") as handle:
        return handle.read(_MARKER_MAX_BYTES).decode("utf-8", errors="replace")


def _find_root(directory: Path) -> Path:
    """The bundle root: ``directory`` itself, or the single directory inside it (how tarballs are made)."""
    if (directory / ".mlnx").exists():
        return directory
    children = [child for child in directory.iterdir() if child.is_dir() and not child.is_symlink()]
    if len(children) == 1 and (children[0] / ".mlnx").exists():
        return children[0]
    raise NotABundle("not an MLNX_OFED bundle: no .mlnx file at its top (nor in its single top directory)")


def read_bundle(root: Path, owned: bool) -> OpenedBundle:
    """Identify the bundle at ``root`` and list its packages."""
    identity = identity_from_markers(*(_read_marker(root, name) for name in MARKERS))
    try:
        named = parse_bundle_name(root.name).identity
    except InvalidBundleName:
        named = None  # a directory may be called anything; its markers are what count
    if named is not None and named != identity:
        raise NotABundle(f"{root.name} is named like another bundle than its marker files say ({identity.name})")
    rpms = root / "RPMS"
    if not rpms.is_dir() or rpms.is_symlink():
        raise NotABundle(f"not an MLNX_OFED bundle: {root.name} has no RPMS/ directory")
    packages = []
    for path in sorted(rpms.rglob("*.rpm")):
        relative = path.relative_to(rpms)
        if relative.parts[0] == "repodata":
            continue
        if not is_regular_inside(path, root):
            raise InvalidInput(f"RPMS/{relative} is not a regular file inside the bundle")
        packages.append(relative.as_posix())
    if not packages:
        raise NotABundle(f"not an MLNX_OFED bundle: {root.name}/RPMS holds no packages")
    key = _read_marker(root, VENDOR_KEY)
    return OpenedBundle(root=root, identity=identity, packages=packages, vendor_key=key, owned=owned)


@contextmanager
def open_bundle(source: Path, data: DataDir, limits: Limits) -> Iterator[OpenedBundle]:
    """Open ``source`` (archive or directory); scratch space is removed on exit."""
    if not source.exists():
        raise InvalidInput(f"{source} does not exist")
    if source.is_dir():
        yield read_bundle(_find_root(source), owned=False)
        return
    if not source.is_file():
        raise InvalidInput(f"{source} is neither a file nor a directory")
    scratch = data.new_scratch(data.work, "unpack")
    try:
        extract(source, scratch, limits)
        yield read_bundle(_find_root(scratch), owned=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
