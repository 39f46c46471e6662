"""Reading what an untrusted tool left in its scratch directory: regular files inside it, checked on the descriptor.

The vendor's script writes its output, its logs and its work directories where we read them afterwards (and,
for its logs, while it runs). It can plant a symbolic link to ``/proc/self/environ`` or the site's signing key
under a name we read, a hard link, a FIFO that blocks the reader, a file of terabytes. So nothing is opened by a
path as such: every directory on the way is opened relative to the one before (``dir_fd``) without following
links, the file itself with ``O_NOFOLLOW | O_NONBLOCK``, and what was opened is checked with ``fstat`` before a
byte is read: a regular file, one link only, on the scratch's own filesystem, within a size bound.

``collect`` gives code that wants a path (archive readers, librpm) the very inode that passed the checks: it is
linked by its descriptor into a directory of the worker's own, made after the tool ended.
"""

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ofedrepo.errors import BuildFailed
from ofedrepo.storage import MAX_TREE_DEPTH

#: Bytes read at a time when a checked file is copied out of the scratch.
COPY_CHUNK = 1024 * 1024

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Entries one walk looks at, at most: a tool that makes a million files does not make each poll cost seconds.
WALK_BUDGET = 50_000


class UntrustedFile(BuildFailed):
    """A file the tool made that is not one we read: a link, a special file, one outside, or too big."""


def shown(name: str) -> str:
    """A name the tool chose, fit for a log line: undecodable bytes and control characters escaped."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)[:200]


class ScratchDir:
    """An open scratch directory; every path below is relative to it and resolved one component at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.descriptor = os.open(root, _DIRECTORY_FLAGS)
        self.device = os.fstat(self.descriptor).st_dev

    def close(self) -> None:
        os.close(self.descriptor)

    def __enter__(self) -> "ScratchDir":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def directory(self, relative: str) -> Iterator[int]:
        """A descriptor of the directory ``relative`` (``""`` for the root), reached without following a link."""
        parts = _parts(relative)
        current = os.dup(self.descriptor)
        try:
            for part in parts:
                try:
                    following = os.open(part, _DIRECTORY_FLAGS, dir_fd=current)
                except OSError as error:
                    message = f"{shown(relative)}: not a directory of the scratch ({error.strerror})"
                    raise UntrustedFile(message) from None
                os.close(current)
                current = following
            yield current
        finally:
            os.close(current)

    def names(self, relative: str = "") -> list[str]:
        """Entries of a directory, sorted (any kind: the caller opens what it wants through ``open``)."""
        with self.directory(relative) as descriptor:
            return sorted(os.listdir(descriptor))

    def open(self, relative: str, max_bytes: int | None = None) -> BinaryIO:
        """The regular file ``relative``, open for reading, once it proved to be one of the scratch's own."""
        *parents, name = _parts(relative)
        with self.directory("/".join(parents)) as parent:
            try:
                descriptor = os.open(name, _FILE_FLAGS, dir_fd=parent)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    message = f"{shown(relative)} is a symbolic link, not a file of the scratch's own"
                    raise UntrustedFile(message) from None
                message = f"{shown(relative)}: cannot be opened as a regular file ({error.strerror})"
                raise UntrustedFile(message) from None
        try:
            self._check(relative, os.fstat(descriptor), max_bytes)
            os.set_blocking(descriptor, True)
        except BaseException:
            os.close(descriptor)
            raise
        return os.fdopen(descriptor, "rb")

    def _check(self, relative: str, status: os.stat_result, max_bytes: int | None) -> None:
        if not stat.S_ISREG(status.st_mode):
            raise UntrustedFile(f"{shown(relative)} is not a regular file")
        if status.st_nlink != 1:
            raise UntrustedFile(f"{shown(relative)} has {status.st_nlink} links: it may be another file's")
        if status.st_dev != self.device:
            raise UntrustedFile(f"{shown(relative)} is not on the scratch directory's filesystem")
        if max_bytes is not None and status.st_size > max_bytes:
            raise UntrustedFile(f"{shown(relative)} is larger than {max_bytes} bytes")

    def walk(self, enter: Callable[[str], bool] = lambda _: True, budget: int = WALK_BUDGET) -> Iterator[str]:
        """Regular-looking files of the tree (paths relative to the root), directories entered by descriptor,
        never through a link, only those whose name ``enter`` accepts, at most ``MAX_TREE_DEPTH`` levels deep and
        ``budget`` entries in all (the tool may have made a tree of any depth or width; a walk's cost is
        bounded). Whatever vanishes or changes meanwhile is passed over: the tool may be running."""
        stack: list[tuple[int, str, list[str]]] = []

        def enter_directory(descriptor: int, path: str) -> None:
            nonlocal budget
            directories = []
            files = []
            try:
                with os.scandir(descriptor) as listing:
                    for entry in listing:
                        budget -= 1
                        if budget < 0:
                            break
                        if entry.is_dir(follow_symlinks=False):
                            if enter(entry.name):
                                directories.append(entry.name)
                        elif entry.is_file(follow_symlinks=False):
                            files.append(entry.name)
            except OSError:
                pass
            stack.append((descriptor, path, sorted(directories, reverse=True)))
            found.extend(f"{path}/{name}" if path else name for name in sorted(files))

        found: list[str] = []
        enter_directory(os.dup(self.descriptor), "")
        try:
            while stack:
                yield from found
                found.clear()
                descriptor, path, directories = stack[-1]
                if not directories or budget < 0:
                    os.close(descriptor)
                    stack.pop()
                    continue
                name = directories.pop()
                if len(stack) > MAX_TREE_DEPTH:
                    continue
                try:
                    child = os.open(name, _DIRECTORY_FLAGS, dir_fd=descriptor)
                except OSError:
                    continue
                enter_directory(child, f"{path}/{name}" if path else name)
            yield from found
        finally:  # also when the caller stops early
            for descriptor, _, _ in stack:
                os.close(descriptor)

    def collect(self, relative: str, into: Path, max_bytes: int | None = None) -> Path:
        """Link the checked file ``relative`` into ``into`` (a directory of ours) by its descriptor, and return
        that path: what readers then open is the inode that passed the checks. Where ``into`` is on another
        filesystem (the scratch has one of its own, ``workers.scratch_volume``) the file is copied from that
        descriptor instead, never more than ``max_bytes``."""
        into.mkdir(mode=0o700, exist_ok=True)
        target = into / _parts(relative)[-1]
        with self.open(relative, max_bytes) as opened:
            # linkat(AT_SYMLINK_FOLLOW) through /proc links the inode the descriptor holds; os.link calls plain
            # link(2), which would link the magic link itself, unless given a directory descriptor.
            proc = os.open("/proc", _DIRECTORY_FLAGS)
            try:
                os.link(f"self/fd/{opened.fileno()}", target, src_dir_fd=proc, follow_symlinks=True)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                _copy(opened, target, relative, max_bytes)
            finally:
                os.close(proc)
        return target


def _copy(opened: BinaryIO, target: Path, relative: str, max_bytes: int | None) -> None:
    """Copy an opened file of the scratch to a new file of ours, its holes kept as holes (``SEEK_DATA``): a
    sparse file of any size costs the data disk only what the tool really wrote, which its own filesystem
    bounded. Refused past ``max_bytes`` (checked when opened; the size is read again here)."""
    source = opened.fileno()
    size = os.fstat(source).st_size
    if max_bytes is not None and size > max_bytes:
        raise UntrustedFile(f"{shown(relative)} is larger than {max_bytes} bytes")
    with open(target, "xb") as output:
        os.fchmod(output.fileno(), 0o600)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(source, offset, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # no data past offset: the rest is a hole
                    break
                raise
            end = min(os.lseek(source, start, os.SEEK_HOLE), size)
            while start < end:
                chunk = os.pread(source, min(COPY_CHUNK, end - start), start)
                if not chunk:
                    break
                os.pwrite(output.fileno(), chunk, start)
                start += len(chunk)
            offset = end
        os.ftruncate(output.fileno(), size)


def _parts(relative: str) -> list[str]:
    parts = [part for part in PurePosixPath(relative).parts if part not in ("", ".")]
    if any(part in ("..", "/") for part in parts):
        raise UntrustedFile(f"{shown(relative)}: not a path inside the scratch directory")
    return parts
