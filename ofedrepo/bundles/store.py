"""The bundle store: MLNX_OFED bundles and DOCA-OFED repositories registered once per sha256, kept unpacked and
read-only.

    <data_dir>/bundles/<sha256>/<bundle-name>/      the bundle's root (.mlnx, RPMS/, the vendor script; for
                                                    DOCA the repository: Packages/, RPM-GPG-KEY-doca)

A tgz or ISO is identified by the sha256 of the archive; an unpacked directory by a digest of its tree
(relative paths, link targets and file contents). What the bundle is comes from its own marker files, not
from the name it arrived under. Its files are made read-only because builds run the vendor's script from it:
a script that tried to change its bundle would fail loudly instead of changing it for every later build.
Directories stay writable by the owner: the vendor script copies the bundle (modes included) into its
temporary directory and deletes packages from the copy, which read-only directories would forbid.
"""

import hashlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.bundles.archive import Limits
from ofedrepo.bundles.names import BundleIdentity
from ofedrepo.bundles.vendor import StoredBundle, Workspace
from ofedrepo.bundles.vendors import vendor_for_input, vendor_of
from ofedrepo.config import Settings
from ofedrepo.errors import InvalidInput, NotFound
from ofedrepo.kinds import BundleKind
from ofedrepo.models import Bundle
from ofedrepo.storage import DataDir, exclusive_lock
from ofedrepo.uploads import Candidate, copy_from, import_scratch, open_named, take_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleView:
    id: int
    name: str
    kind: BundleKind
    doca_version: str | None
    ofed_version: str
    distro: str
    arch: str
    sha256: str
    supported_kernels: list[str]
    created_at: datetime
    identified_by: str | None
    """What told its identity where its own files do not (a DOCA ``doca-host`` package, an online tree's path)."""

    @classmethod
    def of(cls, bundle: Bundle) -> "BundleView":
        fields = {name: getattr(bundle, name) for name in cls.__dataclass_fields__ if name != "identified_by"}
        return cls(**fields, identified_by=(bundle.facts or {}).get("identified_by"))


#: Deeper directory trees are refused: a bundle is a few levels deep, and the walk holds one descriptor per level.
MAX_TREE_DEPTH = 64
#: Opening an entry of a walked tree: never through a link, never blocking on a FIFO.
_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def tree_digest(root: Path | int, advance: Callable[[int], None] | None = None, copy_to: Path | None = None) -> str:
    """A sha256 standing for a directory tree: every entry's relative path, kind, link target and content.

    The tree (a path, or a descriptor of an opened directory) is walked by descriptors: each directory and file
    is opened inside its parent's descriptor without following links, links are read, never followed, and a
    file is hashed from the descriptor it was opened by. With ``copy_to`` (a new directory) what was walked is
    copied there as it is hashed, links as links and files with their permission bits, so the copy holds
    exactly what the digest stands for, however the tree changed meanwhile. Entries are taken in the order
    of their relative paths' components, as ``sorted(root.rglob("*"))`` gave them: a tree keeps its digest.
    Anything but files, directories and links (a FIFO, a device) is refused.
    """
    digest = hashlib.sha256()
    # A root given as a path is the caller's own choice (links in it followed); below it, nothing is followed.
    descriptor = root if isinstance(root, int) else os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if copy_to is not None:
            copy_to.mkdir()
        _walk(descriptor, "", digest, advance, copy_to, 0)
    finally:
        if not isinstance(root, int):
            os.close(descriptor)
    return digest.hexdigest()


def _walk(
    directory: int,
    relative: str,
    digest: "hashlib._Hash",
    advance: Callable[[int], None] | None,
    copy_to: Path | None,
    depth: int,
) -> None:
    if depth >= MAX_TREE_DEPTH:
        raise InvalidInput(f"{relative!r}: the tree is more than {MAX_TREE_DEPTH} directories deep")
    for name in sorted(os.listdir(directory)):
        path = f"{relative}/{name}" if relative else name
        encoded = os.fsencode(path)  # names need not be UTF-8
        target = copy_to / name if copy_to is not None else None
        try:
            kind = stat.S_IFMT(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
        except OSError:
            raise InvalidInput(f"{path!r} changed while it was read") from None
        if kind == stat.S_IFLNK:
            try:
                link = os.readlink(name, dir_fd=directory)
            except OSError:
                raise InvalidInput(f"{path!r} changed while it was read") from None
            digest.update(b"L\0" + encoded + b"\0" + os.fsencode(link) + b"\0")
            if target is not None:
                os.symlink(link, target)
        elif kind in (stat.S_IFREG, stat.S_IFDIR):
            entry = _open_entry(directory, name, path, kind)
            try:
                if kind == stat.S_IFDIR:
                    digest.update(b"D\0" + encoded + b"\0")
                    if target is not None:
                        target.mkdir()
                    _walk(entry, path, digest, advance, target, depth + 1)
                else:
                    digest.update(b"F\0" + encoded + b"\0")
                    copy_from(entry, target, digest.update, advance)
                    if target is not None:
                        info = os.fstat(entry)
                        os.chmod(target, stat.S_IMODE(info.st_mode) & 0o777)  # the vendor's script stays executable
                        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
            finally:
                os.close(entry)
        else:
            raise InvalidInput(f"{path!r} is neither a file, a directory nor a link")


def _open_entry(directory: int, name: str, path: str, kind: int) -> int:
    """``name`` in ``directory``, opened without following a link; refused unless it is still of ``kind``."""
    try:
        entry = os.open(name, _ENTRY | (os.O_DIRECTORY if kind == stat.S_IFDIR else 0), dir_fd=directory)
    except OSError as error:
        raise InvalidInput(f"{path!r} changed while it was read ({error.strerror})") from None
    if stat.S_IFMT(os.fstat(entry).st_mode) != kind:
        os.close(entry)
        raise InvalidInput(f"{path!r} changed while it was read")
    return entry


def make_read_only(root: Path) -> None:
    for directory, _, files in os.walk(root):
        Path(directory).chmod(0o755)
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o222)


class BundleStore:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.data = DataDir(settings.data_dir).ensure()
        self.limits = Limits.of(settings)
        self.workspace = Workspace(self.data, self.limits, settings.bundle_libraries)

    def identify(self, source: Path, advance: Callable[[int], None] | None = None) -> Candidate:
        """The bundle at ``source`` (a path the operator named), opened once and taken in (``take_in``); the
        caller ``discard``s the candidate once it is added."""
        descriptor = open_named(source)
        origin = os.path.abspath(source)
        try:
            return replace(self.take_in(descriptor, Path(origin).name, advance), origin=origin)
        finally:
            os.close(descriptor)

    def take_in(self, source: int, name: str, advance: Callable[[int], None] | None = None) -> Candidate:
        """Hash what the descriptor ``source`` reads, the archive's bytes or the tree of a directory, while
        copying it into ``<data>/uploads``: the bundle unpacked and stored is the one hashed, whatever happens to
        the original meanwhile."""
        mode = os.fstat(source).st_mode
        if stat.S_ISREG(mode):
            return take_file(source, name, self.data, advance)
        if not stat.S_ISDIR(mode):
            raise InvalidInput(f"{name}: neither a bundle archive (tgz, iso) nor a bundle directory")
        with import_scratch(self.data, name) as scratch:
            copy = scratch / (name or "bundle")
            sha256 = tree_digest(source, advance, copy_to=copy)
        return Candidate(path=copy, name=copy.name, sha256=sha256, scratch=scratch)

    def add(self, candidate: Candidate, progress: Callable[[str], None] | None = None) -> tuple[BundleView, bool]:
        """Register the bundle (unless its sha256 is known: then what it arrived as must not name another
        identity than the stored one); True when this call stored it."""
        names = [candidate.name, *([candidate.origin] if candidate.origin else [])]
        known = self._known(candidate.sha256, names)
        if known:
            return known, False
        with exclusive_lock(self.data.locks / "bundles" / f"{candidate.sha256}.lock"):
            known = self._known(candidate.sha256, names)
            if known:
                return known, False
            target = self.data.bundles / candidate.sha256
            if target.exists():  # left by a process that died before recording it
                shutil.rmtree(target)
            if progress:
                progress(f"Unpacking {candidate.name}")
            vendor = vendor_for_input(candidate.path)
            with vendor.register(candidate.path, names, self.workspace, progress) as registration:
                opened = registration.opened
                target.mkdir(parents=True)
                stored = target / opened.identity.name
                if opened.owned:
                    os.rename(opened.root, stored)
                else:
                    shutil.copytree(opened.root, stored, symlinks=True)
                identity = opened.identity
            make_read_only(target)
            with self.sessions() as session:
                row = Bundle(
                    name=identity.name,
                    ofed_version=identity.ofed_version,
                    distro=identity.distro,
                    arch=identity.arch,
                    sha256=candidate.sha256,
                    path=stored.relative_to(self.data.root).as_posix(),
                    supported_kernels=registration.supported_kernels,
                    kind=identity.kind,
                    doca_version=identity.doca_version,
                    tool_sha256=registration.tool_sha256,
                    facts=registration.facts,
                )
                session.add(row)
                try:
                    session.commit()
                except IntegrityError:  # registered by another host sharing the database
                    session.rollback()
                    existing = self.find(candidate.sha256)
                    assert existing is not None
                    return existing, False
                log.info("stored bundle %s (%s) as %s", identity.name, candidate.sha256[:12], stored)
                return BundleView.of(row), True

    def _known(self, sha256: str, names: list[str]) -> BundleView | None:
        known = self.find(sha256)
        if known is not None:
            identity = BundleIdentity(known.ofed_version, known.distro, known.arch, known.kind, known.doca_version)
            vendor_of(known.kind).confirm_names(identity, names)
        return known

    def find(self, sha256: str) -> BundleView | None:
        with self.sessions() as session:
            row = session.scalars(select(Bundle).where(Bundle.sha256 == sha256)).one_or_none()
            return BundleView.of(row) if row else None

    def root(self, bundle: Bundle) -> Path:
        """Where a stored bundle's tree is."""
        if not bundle.path:
            raise NotFound(f"bundle {bundle.id} has no stored tree")
        return self.data.root / bundle.path

    def stored(self, bundle: Bundle) -> StoredBundle:
        """A registered bundle as its vendor's module reads it: its row's identity and facts, and its tree."""
        identity = BundleIdentity(bundle.ofed_version, bundle.distro, bundle.arch, bundle.kind, bundle.doca_version)
        return StoredBundle(identity, self.root(bundle), dict(bundle.facts or {}))

    def registered(self, kind: BundleKind) -> list[StoredBundle]:
        """Every stored bundle of ``kind``."""
        with self.sessions() as session:
            rows = session.scalars(
                select(Bundle).where(Bundle.kind == kind, Bundle.path.is_not(None)).order_by(Bundle.id)
            )
            return [self.stored(row) for row in rows]


def list_bundles(session: Session) -> list[BundleView]:
    return [BundleView.of(bundle) for bundle in session.scalars(select(Bundle).order_by(Bundle.id))]


def get_bundle(session: Session, bundle_id: int) -> BundleView:
    bundle = session.get(Bundle, bundle_id)
    if bundle is None:
        raise NotFound(f"no bundle with id {bundle_id}")
    return BundleView.of(bundle)
