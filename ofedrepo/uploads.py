"""Files arriving from outside: uploads received into the data dir, and server paths a client names.

Both end as a ``Candidate``: a path, the name messages use, and the sha256 computed while the bytes went by
(an upload is hashed as it is written, so no file is read twice).
"""

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ofedrepo.errors import InvalidInput, TooLarge
from ofedrepo.storage import DataDir

MAX_NAME = 255
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Candidate:
    """A file to take in (an image, a bundle), already hashed; ``name`` is what messages call it."""

    path: Path
    name: str
    sha256: str


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


def importable_path(text: str, import_dirs: Sequence[Path], directories: bool = False) -> Path:
    """A server-side path a client named, accepted only inside a configured import directory."""
    if not import_dirs:
        raise InvalidInput("importing by path is disabled: the server has no OFEDREPO_IMPORT_DIRS")
    if not isinstance(text, str) or not text or "\x00" in text or len(text) > 4096:
        raise InvalidInput("path must be a non-empty absolute path")
    requested = Path(text)
    if not requested.is_absolute():
        raise InvalidInput(f"path must be absolute: {text[:200]!r}")
    resolved = Path(os.path.realpath(requested))
    for directory in import_dirs:
        if resolved.is_relative_to(Path(os.path.realpath(directory))):
            if not (resolved.is_file() or (directories and resolved.is_dir())):
                raise InvalidInput(f"{text[:200]!r} is not a file{' or a directory' if directories else ''}")
            return resolved
    raise InvalidInput(f"{text[:200]!r} is outside the import directories ({', '.join(map(str, import_dirs))})")


class UploadSink:
    """Receives an upload into ``<data>/uploads``: hashed as it arrives, refused past ``limit`` bytes."""

    def __init__(self, data: DataDir, limit: int, setting: str) -> None:
        data.uploads.mkdir(parents=True, exist_ok=True)
        self.path = data.uploads / f"upload-{uuid.uuid4().hex}"
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
        return Candidate(path=self.path, name=display_name(name), sha256=self._digest.hexdigest())

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)
