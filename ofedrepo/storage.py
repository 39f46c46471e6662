"""The data directory: where each kind of file lives, and the filesystem primitives publishing relies on.

    <data_dir>/
        repos/<bundle>/<kernel>/<N>/      the published tree (served at /repos/)
        repos/<bundle>/<kernel>/latest    symlink to the newest complete <N>
        staging/                          versions being assembled (never served)
        work/                             unpacked archives, builds' scratch and other scratch space
        work/failed-build-<id>-<hex>/     a failed build's scratch, kept for debugging for a while
        uploads/                          uploads being received and inspected (never kept)
        bundles/<sha256>/<bundle>/        registered bundles, unpacked, read-only
        kernel-sources/<K>/               kernel-devel packages unpacked for builds
        builds/<id>.log                   build logs
        keys/                             the site signing key (a GnuPG home) and its lock
        locks/                            one lock file per repo, serialising version numbering
        home/                             HOME for the tools we run (no user's dotfiles)

Staging and work live in the same filesystem as the tree, so moving a finished version into place is a
single ``rename(2)``.
"""

import fcntl
import functools
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ofedrepo.errors import InvalidInput

LATEST = "latest"
FAILED_BUILD_PREFIX = "failed-build-"
#: A kernel-sources tree being unpacked; renamed to the kernel's name when complete.
PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True)
class DataDir:
    """Paths inside the data directory; ``ensure()`` creates them."""

    root: Path

    @property
    def repos(self) -> Path:
        return self.root / "repos"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def kernel_sources(self) -> Path:
        return self.root / "kernel-sources"

    @property
    def build_logs(self) -> Path:
        return self.root / "builds"

    def build_log(self, build_id: int) -> Path:
        return self.build_logs / f"{build_id}.log"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def ensure(self) -> "DataDir":
        for path in (
            self.repos,
            self.staging,
            self.work,
            self.uploads,
            self.home,
            self.locks,
            self.bundles,
            self.build_logs,
        ):
            path.mkdir(parents=True, exist_ok=True)
        self.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Builds' scratch is reached by the sandbox uid through unguessable names, never listed by anyone else.
        os.chmod(self.work, 0o711)
        return self

    @functools.cached_property
    def instance(self) -> str:
        """This deployment's id (``<data>/instance-id``, made once, shared by the hosts that share the data dir):
        what names its cgroups and containers, host-wide names that another deployment on the same host (a
        staging beside production, a test run) must never take for its own."""
        path = self.root / "instance-id"
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x") as created:
                created.write(uuid.uuid4().hex[:12] + "\n")
        except FileExistsError:
            pass
        text = path.read_text().strip()
        if not text.isalnum() or not 1 <= len(text) <= 32:
            raise InvalidInput(f"{path} holds no instance id (12 hex digits): remove it, and one is made again")
        return text

    def repo_dir(self, bundle_name: str, kernel: str) -> Path:
        """``repos/<bundle>/<kernel>``; both parts must already be validated names."""
        return self.repos / bundle_name / kernel

    def repo_lock(self, bundle_name: str, kernel: str) -> Path:
        return self.locks / bundle_name / f"{kernel}.lock"

    def new_scratch(self, parent: Path, purpose: str) -> Path:
        """A fresh, unique, not-yet-existing path below ``parent``: ``<purpose>-[<owner>-]<hex>`` (``owned_by``)."""
        return parent / f"{scratch_prefix(purpose)}{uuid.uuid4().hex}"

    def left_by(self, owner: str) -> list[Path]:
        """What a process that called ``owned_by(owner)`` made in ``work/``, ``staging/`` and the kernel sources'
        partial trees and did not remove: a killed build's leftovers, removed at once rather than at retention.
        ``owner`` ends where a name's next ``-`` is (``-a1-`` never matches ``-a10-``)."""
        found = []
        for parent in (self.work, self.staging, self.kernel_sources):
            for entry in list(parent.iterdir()) if parent.is_dir() else []:
                if f"-{owner}-" in entry.name:
                    found.append(entry)
        return found

    def keep_failed_build(self, scratch: Path, build_id: int) -> Path | None:
        """Set a failed build's scratch aside under a name retention recognises; its age starts now. Its files
        lose their set-ID bits first; a tree too deep to walk whole is removed instead (None)."""
        if not clear_set_id_bits(scratch):
            remove_tree(scratch)
            return None
        kept = self.failed_build_name(build_id)
        os.rename(scratch, kept)
        os.utime(kept)
        return kept

    def failed_build_name(self, build_id: int, suffix: str = "") -> Path:
        """A fresh name for a failed build's kept scratch, which retention recognises (``failed_builds``)."""
        return self.work / f"{FAILED_BUILD_PREFIX}{build_id}-{uuid.uuid4().hex[:32]}{suffix}"

    def expired_failed_builds(self, kept_seconds: float) -> Iterator[Path]:
        """Failed builds' scratch set aside longer ago than ``kept_seconds``."""
        deadline = time.time() - kept_seconds
        for entry in self.failed_builds():
            if entry.lstat().st_mtime < deadline:
                yield entry

    def failed_builds(self) -> list[Path]:
        """Failed builds' scratch set aside, oldest first."""
        entries = list(self.work.iterdir()) if self.work.is_dir() else []
        kept = [entry for entry in entries if entry.name.startswith(FAILED_BUILD_PREFIX)]
        return sorted(kept, key=lambda entry: entry.lstat().st_mtime)

    def room_for_failed_build(self, size: int, budget: int) -> bool:
        """Make room for a failed build's scratch of ``size`` bytes within ``budget`` for all of them, the
        oldest going first; False (nothing removed) when it alone is larger than the budget."""
        if size > budget:
            return False
        kept = [(entry, disk_usage(entry)) for entry in self.failed_builds()]
        total = size + sum(taken for _, taken in kept)
        for entry, taken in kept:
            if total <= budget:
                break
            remove_tree(entry)
            total -= taken
        return True

    def remove_stale_scratch(self, older_than_seconds: float) -> list[Path]:
        """Remove what killed processes left in ``staging/``, ``work/`` and ``uploads/``.

        Age, not process IDs, decides: the data dir may be shared by hosts whose processes we cannot see.
        """
        removed = list(self.stale_scratch(older_than_seconds))
        for entry in removed:
            remove_tree(entry)
        return removed

    def stale_scratch(self, older_than_seconds: float) -> Iterator[Path]:
        """Entries of ``staging/``, ``work/`` and ``uploads/``, and half-unpacked kernel sources, untouched for
        ``older_than_seconds`` (failed builds set aside for debugging have their own time:
        ``expired_failed_builds``)."""
        deadline = time.time() - older_than_seconds
        for parent in (self.staging, self.work, self.uploads):
            for entry in list(parent.iterdir()) if parent.is_dir() else []:
                if not entry.name.startswith(FAILED_BUILD_PREFIX) and entry.lstat().st_mtime < deadline:
                    yield entry
        sources = self.kernel_sources
        for entry in list(sources.iterdir()) if sources.is_dir() else []:
            if entry.name.startswith(PARTIAL_PREFIX) and entry.lstat().st_mtime < deadline:
                yield entry


_owner = ""


def owned_by(owner: str) -> None:
    """Name this process's scratch after ``owner`` from now on (``DataDir.new_scratch``): a build's process sets
    its attempt's name, so that what it leaves when it is killed is found (``DataDir.left_by``). One owner per
    process: a build's process runs one attempt; other processes leave it unset."""
    global _owner
    _owner = owner


def scratch_prefix(purpose: str) -> str:
    """How the names of this process's scratch for ``purpose`` start: ``<purpose>-`` or ``<purpose>-<owner>-``."""
    return f"{purpose}-{_owner}-" if _owner else f"{purpose}-"


#: How deep a tree is walked (by directory descriptors, one per level): builds' trees are a few dozen levels
#: deep; a tool that makes thousands of levels gets its tree reported ``too_deep`` instead of walked to the end.
MAX_TREE_DEPTH = 256
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class TreeUsage:
    """What a tree takes: allocated bytes, entries (inodes), and whether it went deeper than was walked."""

    bytes: int
    entries: int
    too_deep: bool = False


def _walk(root: Path, visit: Callable[[int, os.DirEntry[str]], None], max_depth: int) -> bool:
    """Call ``visit(directory descriptor, entry)`` for every entry below ``root``, walked by directory
    descriptors (paths of any length), links never followed, one descriptor per level held; what vanishes or
    cannot be read meanwhile is passed over (a build may be writing it). True when it went deeper than walked."""
    top = os.open(root, _DIRECTORY_FLAGS)
    too_deep = False
    stack: list[tuple[int, int, list[str]]] = []

    def enter(descriptor: int, depth: int) -> None:
        directories = []
        try:
            with os.scandir(descriptor) as listing:
                for entry in listing:
                    visit(descriptor, entry)
                    if entry.is_dir(follow_symlinks=False):
                        directories.append(entry.name)
        except OSError:
            pass
        stack.append((descriptor, depth, directories))

    enter(top, 0)
    while stack:
        descriptor, depth, directories = stack[-1]
        if not directories:
            os.close(descriptor)
            stack.pop()
            continue
        name = directories.pop()
        if depth + 1 > max_depth:
            too_deep = True
            continue
        try:
            enter(os.open(name, _DIRECTORY_FLAGS, dir_fd=descriptor), depth + 1)
        except OSError:
            continue
    return too_deep


def tree_usage(root: Path, max_depth: int = MAX_TREE_DEPTH) -> TreeUsage:
    """What the file or tree at ``root`` takes (see ``_walk``)."""
    try:
        top = os.lstat(root)
    except OSError:
        return TreeUsage(0, 0)
    if not stat.S_ISDIR(top.st_mode):
        return TreeUsage(top.st_blocks * 512, 1)
    total, entries = top.st_blocks * 512, 1

    def count(_: int, entry: os.DirEntry[str]) -> None:
        nonlocal total, entries
        try:
            total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            return
        entries += 1

    try:
        too_deep = _walk(root, count, max_depth)
    except OSError:
        return TreeUsage(total, entries)
    return TreeUsage(total, entries, too_deep)


_SET_ID = stat.S_ISUID | stat.S_ISGID
#: Opening a file a tool made to change its mode: never through a link, never blocking on a FIFO.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def clear_set_id_bits(root: Path, max_depth: int = MAX_TREE_DEPTH) -> bool:
    """Take the set-user-ID and set-group-ID bits off every regular file below ``root``, changed on the opened
    file (``fchmod``), never through a link: a tool's script may leave a setuid copy of a shell owned by its
    sandbox uid, which any local user could run to become that uid outside any sandbox. True when the whole
    tree was walked (False: deeper than ``max_depth``, or ``root`` unreadable)."""

    def clear(descriptor: int, entry: os.DirEntry[str]) -> None:
        try:
            if not entry.is_file(follow_symlinks=False) or not entry.stat(follow_symlinks=False).st_mode & _SET_ID:
                return
            file = os.open(entry.name, _FILE_FLAGS, dir_fd=descriptor)
        except OSError:
            return
        try:
            status = os.fstat(file)
            if stat.S_ISREG(status.st_mode):
                os.fchmod(file, stat.S_IMODE(status.st_mode) & ~_SET_ID)
        except OSError:
            pass
        finally:
            os.close(file)

    try:
        return not _walk(root, clear, max_depth)
    except OSError:
        return False


def disk_usage(root: Path) -> int:
    """Bytes of disk a file or the tree below a directory takes (allocated blocks; see ``tree_usage``)."""
    return tree_usage(root).bytes


def remove_tree(root: Path) -> None:
    """Remove ``root`` and everything below, however deep or wide, links never followed; errors are passed
    over (the tree may vanish meanwhile). Iterative with two descriptors at most: each subdirectory's own
    subdirectories are moved up beside it before it is emptied and removed, so no depth costs recursion (a
    tool's tree of 9000 levels made ``shutil.rmtree`` raise RecursionError) or descriptors."""
    try:
        top = os.open(root, _DIRECTORY_FLAGS)
    except OSError:
        try:
            os.unlink(root)
        except OSError:
            pass
        return
    try:
        while True:
            try:
                with os.scandir(top) as listing:
                    found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
            except OSError:
                break
            if not found:
                break
            progress = 0
            for name, is_directory in found:
                if is_directory:
                    progress += _empty_one_level(top, name)
                try:
                    (os.rmdir if is_directory else os.unlink)(name, dir_fd=top)
                    progress += 1
                except OSError:
                    pass
            if not progress:
                break  # what is left cannot be removed
    finally:
        os.close(top)
    try:
        os.rmdir(root)
    except OSError:
        pass


def _empty_one_level(top: int, name: str) -> int:
    """Delete the files of ``top``'s subdirectory ``name`` and move its subdirectories up into ``top``; how
    many entries went."""
    changed = 0
    try:
        directory = os.open(name, _DIRECTORY_FLAGS, dir_fd=top)
    except OSError:
        return changed
    try:
        os.fchmod(directory, 0o700)  # a tool may have left it unwritable to its owner
    except OSError:
        pass
    try:
        with os.scandir(directory) as listing:
            found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
        for child, is_directory in found:
            try:
                if is_directory:
                    os.rename(child, f".removing-{uuid.uuid4().hex}", src_dir_fd=directory, dst_dir_fd=top)
                else:
                    os.unlink(child, dir_fd=directory)
                changed += 1
            except OSError:
                continue
    except OSError:
        pass
    finally:
        os.close(directory)
    return changed


def human_size(size: int | None) -> str:
    """``1.5 MiB``: sizes for people (index pages, ``ofedrepo gc``)."""
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def human_duration(started: datetime | None, finished: datetime | None = None) -> str:
    """``1m05s``, ``2h03m``: how long a build took, or has been running (``finished`` None: until now); ``-``
    before it starts."""
    if started is None:
        return "-"
    seconds = max(0, int(((finished or datetime.now(UTC)) - started).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def version_numbers(repo_dir: Path) -> list[int]:
    """The numbered versions present in ``repo_dir``, ascending."""
    if not repo_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in repo_dir.iterdir() if entry.name.isdigit())


def latest_number(repo_dir: Path) -> int | None:
    """The version ``latest`` points to; None when the link is missing (a crash before version 1's switch)."""
    try:
        target = os.readlink(repo_dir / LATEST)
    except OSError:
        return None
    return int(target) if target.isdigit() else None


def switch_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: readers see the old target or the new, never nothing. The
    caller holds the directory's lock, so any temporary link already there was left by a killed switch."""
    remove_switch_leftovers(link)
    temporary = link.with_name(f"{_switch_prefix(link)}{uuid.uuid4().hex}")
    temporary.symlink_to(target)
    os.replace(temporary, link)
    fsync_directory(link.parent)


def remove_switch_leftovers(link: Path) -> None:
    """Remove the temporary links a process killed inside `switch_symlink` left beside ``link``; the caller
    holds the directory's lock."""
    prefix = _switch_prefix(link)
    for entry in link.parent.glob(f"{prefix}*"):
        if entry.is_symlink():
            entry.unlink(missing_ok=True)


def _switch_prefix(link: Path) -> str:
    return f".{link.name}."


def fsync_tree(root: Path) -> None:
    """Make every file and directory below ``root`` durable before a rename publishes them: after a crash,
    a renamed version must not hold files whose data never reached the disk."""
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            if path.is_symlink():
                continue
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_directory(Path(directory))


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if needed); released when the process dies."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
