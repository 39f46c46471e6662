"""Files arriving from outside: uploads received into the data dir, and server paths a client names.

Both end as a ``Candidate``: a path, the name messages use, and the sha256 computed while the bytes went by
(an upload is hashed as it is written, so no file is read twice).

A server path is opened once and never again by name: the import directory, then each component with
``openat`` and ``O_NOFOLLOW`` (a link anywhere is refused, not followed), and what that descriptor reads is
hashed while it is copied into ``<data>/uploads``, as an upload would be. Checking a name and then opening
it again is a race anyone who can write in an import directory wins: swap a directory for a link between
the check and the read, and a file from elsewhere is read, or one file stored under another's sha256.
"""

import errno
import hashlib
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from ofedrepo.errors import InvalidInput, TooLarge
from ofedrepo.storage import DataDir, remove_tree

MAX_NAME = 255
#: A file name given to tools as it is: NVIDIA's names (``MLNX_OFED_LINUX-…-x86_64.tgz``, ``doca-host-….rpm``).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Candidate:
    """A file to take in (an image, a bundle), already hashed; ``name`` is what messages call it."""

    path: Path
    name: str
    sha256: str
    #: A copy made for this candidate (a path import), removed by ``discard`` once it has been taken in.
    scratch: Path | None = None
    #: The path it was imported from, as named (a DOCA online tree's ``doca/<ver>/<distro>/<arch>`` tells what it is).
    origin: str | None = None


def sha256_file(path: Path, advance: Callable[[int], None] | None = None) -> str:
    """The sha256 of a file, read once in large chunks; ``advance`` is told of each chunk's size."""
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            if advance:
                advance(len(chunk))
    return digest.hexdigest()


def hash_candidate(path: Path, advance: Callable[[int], None] | None = None) -> Candidate:
    try:
        digest = sha256_file(path, advance)
    except IsADirectoryError:
        raise InvalidInput(f"{path.name}: is a directory, not an image file") from None
    except OSError as error:
        raise InvalidInput(f"{path.name}: cannot read it ({error.strerror})") from None
    return Candidate(path=path, name=display_name(path.name), sha256=digest)


def display_name(name: str) -> str:
    """A file name from outside (an upload's ``filename``) made safe to store and show."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(character for character in base if character.isprintable())
    return cleaned[:MAX_NAME] or "upload"


#: Opening a path's last component: never through a link, never blocking on a FIFO, never taking a terminal.
_LAST = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Opening a directory on the way: only to look names up in it (search permission is enough).
_ON_THE_WAY = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_importable(text: str, import_dirs: Sequence[Path], directories: bool = False) -> tuple[int, str]:
    """A read-only descriptor of a server-side path a client named, and its last component's name.

    The path must lie inside a configured import directory, by its text (``..`` is refused), and is reached
    from that directory one component at a time without following any link: what the descriptor reads is
    inside the import directory whatever is renamed or replaced meanwhile. Only a regular file, or a
    directory when ``directories``, is accepted. The caller closes the descriptor.
    """
    if not import_dirs:
        raise InvalidInput("importing by path is disabled: the server has no OFEDREPO_IMPORT_DIRS")
    if not isinstance(text, str) or not text or "\x00" in text or len(text) > 4096:
        raise InvalidInput("path must be a non-empty absolute path")
    shown = repr(text[:200])
    requested = Path(text)
    if not requested.is_absolute():
        raise InvalidInput(f"path must be absolute: {shown}")
    if ".." in requested.parts:
        raise InvalidInput(f"{shown}: '..' is not accepted in an import path")
    found = _import_dir_of(requested, import_dirs)
    if found is None:
        raise InvalidInput(f"{shown} is outside the import directories ({', '.join(map(str, import_dirs))})")
    directory, parts = found
    try:
        # The operator's own directory: links in its path (its last component included) are theirs.
        descriptor = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise InvalidInput(f"the import directory {directory} cannot be opened ({error.strerror})") from None
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            parent, descriptor = descriptor, -1
            try:
                descriptor = _open_component(parent, part, _LAST if last else _ON_THE_WAY, shown)
            finally:
                os.close(parent)
        if not parts:  # the import directory itself: reopen it readable
            parent, descriptor = descriptor, -1
            try:
                descriptor = os.open(".", _LAST | os.O_DIRECTORY, dir_fd=parent)
            finally:
                os.close(parent)
        mode = os.fstat(descriptor).st_mode
        if not (stat.S_ISREG(mode) or (directories and stat.S_ISDIR(mode))):
            raise InvalidInput(f"{shown} is not a regular file{' or a directory' if directories else ''}")
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        raise
    return descriptor, parts[-1] if parts else directory.name


def _import_dir_of(requested: Path, import_dirs: Sequence[Path]) -> tuple[Path, tuple[str, ...]] | None:
    """The import directory ``requested`` lies in (as configured, or as its real path: the operator's links),
    and the components below it."""
    for configured in import_dirs:
        for directory in dict.fromkeys((Path(os.path.abspath(configured)), Path(os.path.realpath(configured)))):
            if requested.is_relative_to(directory):
                return directory, requested.relative_to(directory).parts
    return None


def _open_component(parent: int, name: str, flags: int, shown: str) -> int:
    """``name`` opened in the directory ``parent``; each way it can fail, said in one line (422)."""
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(parent, name):
            raise InvalidInput(
                f"{shown}: {name!r} is a symbolic link; links are not followed in import directories"
            ) from None
        if error.errno == errno.ENOTDIR:
            raise InvalidInput(f"{shown}: {name!r} is not a directory") from None
        if error.errno == errno.ENOENT:
            raise InvalidInput(f"{shown}: no such file or directory") from None
        if error.errno == errno.ENXIO:  # a socket
            raise InvalidInput(f"{shown} is not a regular file") from None
        raise InvalidInput(f"{shown}: cannot open {name!r} ({error.strerror})") from None


def _is_link(parent: int, name: str) -> bool:
    """For the message only (an ``O_PATH`` open of a link to a directory fails with ENOTDIR, not ELOOP)."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_named(path: Path) -> int:
    """A read-only descriptor of a path the operator named on the command line (links in it followed: they are
    the operator's); whatever happens to the name afterwards, what is read comes from this descriptor."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file or directory") from None
    except OSError as error:
        raise InvalidInput(f"{path}: cannot open it ({error.strerror})") from None


def copy_from(
    source: int, target: Path | None, hashed: Callable[[bytes], None], advance: Callable[[int], None] | None = None
) -> None:
    """Read the descriptor ``source`` to its end, giving every chunk to ``hashed`` and, when ``target`` is given,
    writing it there (a new file): the copy is the very bytes that were hashed. Runs of zeros are skipped rather
    than written, so a sparse disk image stays sparse."""
    with open(target, "xb") if target is not None else nullcontext() as writer:
        size = 0
        while chunk := os.read(source, CHUNK):
            hashed(chunk)
            size += len(chunk)
            if writer is not None:
                if chunk.count(0) == len(chunk):
                    writer.seek(len(chunk), os.SEEK_CUR)
                else:
                    writer.write(chunk)
            if advance:
                advance(len(chunk))
        if writer is not None:
            writer.truncate(size)


def take_file(source: int, name: str, data: DataDir, advance: Callable[[int], None] | None = None) -> Candidate:
    """The regular file ``source`` reads, copied into ``<data>/uploads`` while hashed: what is taken in later is
    exactly what was hashed, whatever happens to the original meanwhile. ``discard`` removes the copy."""
    shown = display_name(name)
    digest = hashlib.sha256()
    with import_scratch(data, shown) as scratch:
        copy_from(source, scratch / shown, digest.update, advance)
    return Candidate(path=scratch / shown, name=shown, sha256=digest.hexdigest(), scratch=scratch)


@contextmanager
def import_scratch(data: DataDir, shown: str) -> Iterator[Path]:
    """A new directory in ``<data>/uploads`` for a path import's copy, removed again when the copy fails: a
    source that cannot be read is bad input (``InvalidInput``), the service's own full disk is not."""
    scratch = data.new_scratch(data.uploads, "import")
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except OSError as error:
        remove_tree(scratch)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the service's own disk is full: answered as such (507), not as bad input
        raise InvalidInput(f"{shown}: cannot read it ({error.strerror})") from None
    except BaseException:
        remove_tree(scratch)
        raise


def import_path(
    text: str, import_dirs: Sequence[Path], take_in: Callable[[int, str], Candidate], directories: bool = False
) -> Candidate:
    """What a client named by path, opened once (``open_importable``) and taken in from that descriptor by
    ``take_in`` (``take_file``, or a bundle store's, which also takes directories)."""
    descriptor, name = open_importable(text, import_dirs, directories)
    try:
        return replace(take_in(descriptor, name), origin=text)
    finally:
        os.close(descriptor)


def discard(candidate: Candidate) -> None:
    """Remove the copy a path import made (nothing for other candidates)."""
    if candidate.scratch is not None:
        remove_tree(candidate.scratch)


class UploadSink:
    """Receives an upload into a directory of its own under ``<data>/uploads``: hashed as it arrives, refused
    past ``limit`` bytes, then called by the client's file name, so that what reads it (and every refusal) names
    the file the client sent."""

    def __init__(self, data: DataDir, limit: int, setting: str) -> None:
        data.uploads.mkdir(parents=True, exist_ok=True)
        self._directory = data.uploads / f"upload-{uuid.uuid4().hex}"
        self._directory.mkdir()
        self.path = self._directory / "upload"
        self.limit = limit
        self.setting = setting
        self.size = 0
        self._digest = hashlib.sha256()
        self._file: BinaryIO = open(self.path, "xb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"upload is larger than the limit of {self.limit} bytes ({self.setting})")
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self, name: str) -> Candidate:
        self._file.close()
        if self.size == 0:
            raise InvalidInput("the upload is empty")
        shown = display_name(name)
        if _PLAIN_NAME.fullmatch(shown):  # others (spaces, commas, a leading dash) stay "upload" on disk
            named = self._directory / shown
            os.rename(self.path, named)
            self.path = named
        return Candidate(path=self.path, name=shown, sha256=self._digest.hexdigest())

    def discard(self) -> None:
        self._file.close()
        remove_tree(self._directory)
