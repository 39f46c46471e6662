"""Opening a bundle as it arrives: a tgz, an ISO, or an unpacked directory.

Archives are unpacked (safely, see ``archive``) into the data dir's ``work/``; a directory is read in
place. Either way the result is the bundle's root (the directory holding ``.mlnx`` and ``RPMS/``), its
identity read from its own marker files, and the packages of the set it offers:

- ``RPMS/*.rpm`` in most generations (4.x, 5.2 and later), ``repodata/`` aside;
- in 5.0-5.1 ``RPMS/`` is split: ``COMMON/`` holds the files and ``MLNX_LIBS/`` and ``UPSTREAM_LIBS/`` are
  two alternative package sets (the legacy verbs libraries, or rdma-core) made of their own files and links
  into ``../COMMON``; they must not be mixed, so exactly one is taken (``OFEDREPO_BUNDLE_LIBRARIES``).

Every package is resolved to the real file it is (links followed, which must stay inside the bundle) and
listed once, however many links reach it.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ofedrepo.bundles.archive import Limits, extract, is_regular_inside
from ofedrepo.bundles.names import BundleIdentity, identity_from_markers, parse_bundle_name
from ofedrepo.errors import InvalidBundleName, InvalidInput, NotABundle
from ofedrepo.kernel import is_kernel_release
from ofedrepo.storage import DataDir, remove_tree

MARKERS = (".mlnx", "distro", ".arch")
VENDOR_KEY = "RPM-GPG-KEY-Mellanox"
SUPPORTED_KERNELS = ".supported_kernels"
COMMON = "COMMON"
#: The library sets of a split (5.0-5.1) bundle, by the name of the setting's values.
LIBRARY_SETS = {"upstream": "UPSTREAM_LIBS", "mlnx": "MLNX_LIBS"}
Libraries = Literal["upstream", "mlnx"]
_MARKER_MAX_BYTES = 4096
_SUPPORTED_KERNELS_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class OpenedBundle:
    """A bundle ready to read. ``owned`` is True when ``root`` is our own scratch copy (files may move)."""

    root: Path
    identity: BundleIdentity
    packages: list[str]
    """The real files of the offered package set, relative to ``root``, sorted, each once."""
    vendor_key: str | None
    supported_kernels: list[str]
    """``.supported_kernels``: the GA kernel(s) NVIDIA built for, then each kernel add-kernel-support added."""
    library_set: str | None
    """The ``RPMS/`` subdirectory taken from a split bundle (``UPSTREAM_LIBS``), None for a flat one."""
    owned: bool
    rebuilt: frozenset[str] = frozenset()
    """Packages the rebuild tool made for the kernel (``packages`` keys), where their headers alone cannot tell
    them from the repository's (DOCA's KMP builds leave no kernel in a userspace package's release)."""


def _read_marker(root: Path, name: str, limit: int = _MARKER_MAX_BYTES) -> str | None:
    path = root / name
    if not is_regular_inside(path, root):
        return None
    with path.open("rb") as handle:
        return handle.read(limit).decode("utf-8", errors="replace")


_NO_MARKER = "not an MLNX_OFED bundle: no .mlnx file at its top (nor in its single top directory)"


def marked_root(directory: Path) -> Path | None:
    """Where an MLNX_OFED bundle's ``.mlnx`` is: ``directory`` itself, or the single directory inside it (how
    tarballs are made); None when neither holds one."""
    if (directory / ".mlnx").exists():
        return directory
    children = [child for child in directory.iterdir() if child.is_dir() and not child.is_symlink()]
    if len(children) == 1 and (children[0] / ".mlnx").exists():
        return children[0]
    return None


def _find_root(directory: Path) -> Path:
    """The bundle root (``marked_root``), or the refusal that says where ``.mlnx`` was looked for."""
    root = marked_root(directory)
    if root is None:
        raise NotABundle(_NO_MARKER)
    return root


def _shaped_like_a_bundle(names: list[str]) -> None:
    """What ``_find_root`` will look for, checked on an archive's member names before anything is unpacked."""
    if ".mlnx" in names:
        return
    top_directories = {name.split("/", 1)[0] for name in names if "/" in name}
    if len(top_directories) == 1 and f"{top_directories.pop()}/.mlnx" in names:
        return
    raise NotABundle(_NO_MARKER)


def _offered(root: Path, libraries: Libraries) -> tuple[list[Path], str | None]:
    """The package entries of the set the bundle offers, and the library set taken from a split bundle."""
    rpms = root / "RPMS"
    if not rpms.is_dir() or rpms.is_symlink():
        raise NotABundle(f"not an MLNX_OFED bundle: {root.name} has no RPMS/ directory")
    if (rpms / COMMON).is_dir():
        chosen = LIBRARY_SETS[libraries]
        if not (rpms / chosen).is_dir() or (rpms / chosen).is_symlink():
            present = ", ".join(sorted(name for name in LIBRARY_SETS.values() if (rpms / name).is_dir())) or "none"
            raise NotABundle(
                f"{root.name} splits RPMS/ into COMMON/ and library sets ({present}) but has no RPMS/{chosen}/ "
                f"(OFEDREPO_BUNDLE_LIBRARIES={libraries})"
            )
        return sorted((rpms / chosen).glob("*.rpm")), chosen
    return [path for path in sorted(rpms.rglob("*.rpm")) if path.relative_to(rpms).parts[0] != "repodata"], None


def real_packages(root: Path, entries: list[Path]) -> list[str]:
    """Each entry's real file, relative to ``root``, once; a name given to two different files is refused."""
    real_root = root.resolve()
    found: dict[str, str] = {}
    for entry in entries:
        shown = entry.relative_to(root).as_posix()
        if not is_regular_inside(entry, root):
            raise InvalidInput(f"{shown} is not a regular file inside the bundle")
        real = entry.resolve().relative_to(real_root).as_posix()
        name = real.rsplit("/", 1)[-1]
        if found.setdefault(name, real) != real:
            raise InvalidInput(f"the bundle holds two different packages named {name} ({found[name]} and {real})")
    return sorted(found.values())


def _supported_kernels(root: Path) -> list[str]:
    text = _read_marker(root, SUPPORTED_KERNELS, _SUPPORTED_KERNELS_MAX_BYTES) or ""
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if is_kernel_release(line.strip())))


def read_bundle(root: Path, owned: bool, libraries: Libraries, names: Sequence[str] = ()) -> OpenedBundle:
    """Identify the bundle at ``root`` and list the packages it offers.

    ``names`` are further names the bundle came with (its archive's, the bundle it was rebuilt from): an
    add-kernel-support output whose ``distro`` says ``skip-distro-check`` is placed by its names.
    """
    mlnx, distro, arch = (_read_marker(root, name) for name in MARKERS)
    identity = identity_from_markers(mlnx, distro, arch, names=[root.name, *names])
    try:
        named = parse_bundle_name(root.name).identity
    except InvalidBundleName:
        named = None  # a directory may be called anything; its markers are what count
    if named is not None and named != identity:
        raise NotABundle(f"{root.name} is named like another bundle than its marker files say ({identity.name})")
    entries, library_set = _offered(root, libraries)
    packages = real_packages(root, entries)
    if not packages:
        raise NotABundle(f"not an MLNX_OFED bundle: {root.name}/RPMS holds no packages")
    return OpenedBundle(
        root=root,
        identity=identity,
        packages=packages,
        vendor_key=_read_marker(root, VENDOR_KEY),
        supported_kernels=_supported_kernels(root),
        library_set=library_set,
        owned=owned,
    )


@contextmanager
def open_bundle(
    source: Path, data: DataDir, limits: Limits, libraries: Libraries, names: Sequence[str] = ()
) -> Iterator[OpenedBundle]:
    """Open ``source`` (archive or directory); scratch space is removed on exit."""
    if not source.exists():
        raise InvalidInput(f"{source} does not exist")
    if source.is_dir():
        yield read_bundle(_find_root(source), False, libraries, names)
        return
    if not source.is_file():
        raise InvalidInput(f"{source} is neither a file nor a directory")
    scratch = data.new_scratch(data.work, "unpack")
    try:
        extract(source, scratch, limits, accept=_shaped_like_a_bundle)
        yield read_bundle(_find_root(scratch), True, libraries, [*names, source.name])
    finally:
        remove_tree(scratch)
