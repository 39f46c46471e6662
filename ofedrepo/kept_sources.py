"""Kernel sources kept under the data dir: ``kernel-sources/<K>/usr/src/kernels/<K>/``, one per kernel.

A distribution's mirror does not keep every ``kernel-devel`` it ever offered (Rocky 9 keeps the newest kernel of
a minor release only: rocky-linux/wiki.rockylinux.org ``docs/rocky/version.md``), so what was downloaded once is
kept: a build asked later for a kernel the mirror has dropped (a new bundle, a forced rebuild) still has its
sources. ``OFEDREPO_KERNEL_SOURCES_KEEP`` bounds how many; the least recently used go first.

Each tree's ``kept.json`` says where it came from and how big it is (read by the API without walking the tree);
its directory's mtime is its last use. A build reads a tree under a shared lock on the kernel's lock file;
downloading (``ofedrepo.builds.kernel_sources``) and removing take it exclusively, and removal never waits: a
tree in use is kept until the next retention run.
"""

import errno
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ofedrepo.kernel import is_kernel_release
from ofedrepo.storage import PARTIAL_PREFIX, DataDir

RECORD = "kept.json"
_RECORD_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class KeptSources:
    """One kernel's kept sources, as ``kept.json`` records them."""

    kernel: str
    package: str
    """The ``kernel-devel`` package's file name."""
    url: str
    """Where it was downloaded from."""
    size: int
    """Bytes of the unpacked tree."""
    kept_at: datetime
    last_used: datetime


def tree(data: DataDir, kernel: str) -> Path:
    """Where ``kernel``'s sources are, once kept (the directory to pass to the rebuild tool)."""
    return data.kernel_sources / kernel / "usr" / "src" / "kernels" / kernel


def lock_file(data: DataDir, kernel: str) -> Path:
    return data.locks / "kernel-sources" / f"{kernel}.lock"


def is_complete(data: DataDir, kernel: str) -> bool:
    return (tree(data, kernel) / "Makefile").is_file()


def _wanted(data: DataDir, kernel: str) -> Path:
    return data.locks / "kernel-sources" / f"{kernel}.wanted"


def want(data: DataDir, kernel: str) -> None:
    """Remember that a feed offered ``kernel`` and its sources could not be kept: tried again at each poll."""
    _wanted(data, kernel).parent.mkdir(parents=True, exist_ok=True)
    _wanted(data, kernel).touch()


def wanted(data: DataDir, kernel: str) -> bool:
    return _wanted(data, kernel).exists()


def got(data: DataDir, kernel: str) -> None:
    _wanted(data, kernel).unlink(missing_ok=True)


def record(unpacked: Path, kernel: str, package: str, url: str, size: int) -> None:
    """Write ``kept.json`` into a tree being unpacked (``unpacked`` is the kernel's directory, before its rename)."""
    now = datetime.now(UTC).isoformat()
    text = json.dumps({"kernel": kernel, "package": package, "url": url, "size": size, "kept_at": now})
    (unpacked / RECORD).write_text(text)


@contextmanager
def in_use(data: DataDir, kernel: str) -> Iterator[Path | None]:
    """``kernel``'s kept tree, held (shared) for as long as the block runs, its use recorded; None when none is
    kept."""
    path = lock_file(data, kernel)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        if not is_complete(data, kernel):
            yield None
            return
        os.utime(data.kernel_sources / kernel)
        yield tree(data, kernel)
    finally:
        os.close(descriptor)


def _read(directory: Path) -> KeptSources | None:
    try:
        with (directory / RECORD).open("rb") as handle:
            fields = json.loads(handle.read(_RECORD_MAX_BYTES))
        last_used = datetime.fromtimestamp(directory.stat().st_mtime, UTC)
        return KeptSources(
            kernel=directory.name,
            package=str(fields["package"]),
            url=str(fields["url"]),
            size=int(fields["size"]),
            kept_at=datetime.fromisoformat(fields["kept_at"]),
            last_used=last_used,
        )
    except (OSError, ValueError, KeyError, TypeError):
        # kept before ofedrepo recorded it (or the record is damaged): still kept, described from the tree
        try:
            stat = directory.stat()
        except OSError:
            return None
        when = datetime.fromtimestamp(stat.st_mtime, UTC)
        return KeptSources(directory.name, "", "", 0, when, when)


def list_kept(data: DataDir) -> list[KeptSources]:
    """Every kept kernel's sources, the most recently used first."""
    if not data.kernel_sources.is_dir():
        return []
    found = []
    for entry in data.kernel_sources.iterdir():
        if entry.name.startswith(PARTIAL_PREFIX) or not is_kernel_release(entry.name) or entry.is_symlink():
            continue
        if is_complete(data, entry.name) and (kept := _read(entry)) is not None:
            found.append(kept)
    return sorted(found, key=lambda kept: (kept.last_used, kept.kernel), reverse=True)


def beyond(data: DataDir, keep: int) -> list[KeptSources]:
    """What ``OFEDREPO_KERNEL_SOURCES_KEEP`` lets go: all but the ``keep`` most recently used."""
    return list_kept(data)[keep:]


def remove(data: DataDir, kernel: str, removing: Callable[[Path], None]) -> bool:
    """Remove ``kernel``'s kept sources with ``removing`` (which takes them out of place at once) unless a build
    holds them; whether they went."""
    path = lock_file(data, kernel)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        removing(data.kernel_sources / kernel)
        return True
    finally:
        os.close(descriptor)
