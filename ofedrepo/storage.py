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
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
        return self

    def repo_dir(self, bundle_name: str, kernel: str) -> Path:
        """``repos/<bundle>/<kernel>``; both parts must already be validated names."""
        return self.repos / bundle_name / kernel

    def repo_lock(self, bundle_name: str, kernel: str) -> Path:
        return self.locks / bundle_name / f"{kernel}.lock"

    def new_scratch(self, parent: Path, prefix: str) -> Path:
        """A fresh, unique, not-yet-existing path below ``parent``."""
        return parent / f"{prefix}-{uuid.uuid4().hex}"

    def keep_failed_build(self, scratch: Path, build_id: int) -> Path:
        """Set a failed build's scratch aside under a name retention recognises; its age starts now."""
        kept = self.work / f"{FAILED_BUILD_PREFIX}{build_id}-{uuid.uuid4().hex[:8]}"
        os.rename(scratch, kept)
        os.utime(kept)
        return kept

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
            shutil.rmtree(entry, ignore_errors=True)
            total -= taken
        return True

    def remove_stale_scratch(self, older_than_seconds: float) -> list[Path]:
        """Remove what killed processes left in ``staging/``, ``work/`` and ``uploads/``.

        Age, not process IDs, decides: the data dir may be shared by hosts whose processes we cannot see.
        """
        removed = list(self.stale_scratch(older_than_seconds))
        for entry in removed:
            shutil.rmtree(entry, ignore_errors=True)
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


def disk_usage(root: Path) -> int:
    """Bytes of disk a file or the tree below a directory takes (allocated blocks), links never followed; what
    vanishes or cannot be read meanwhile is passed over (a build may be writing it)."""
    try:
        status = os.lstat(root)
    except OSError:
        return 0
    total = status.st_blocks * 512
    pending = [str(root)] if stat.S_ISDIR(status.st_mode) else []
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
        except OSError:
            continue
    return total


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
    """Point ``link`` at ``target`` atomically: readers see the old target or the new, never nothing."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
    temporary.symlink_to(target)
    os.replace(temporary, link)
    fsync_directory(link.parent)


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
