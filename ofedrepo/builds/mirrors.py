"""Reading a distro's yum repository: its ``repomd.xml``, then the packages its primary metadata lists.

Both places that read distro mirrors go through here: kernel sources (``kernel-devel-<K>`` for a build) and
kernel feeds (which kernels a mirror holds). Everything from the mirror is hostile until checked: repomd.xml
is capped, the primary metadata is checksum-verified and capped as downloaded and again as decompressed (a
few KB of gzip can claim gigabytes), locations may not climb out of the repository, and the XML is parsed
by createrepo_c, never by hand.
"""

import bz2
import gzip
import hashlib
import lzma
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, Self

import createrepo_c as cr
import zstandard

from ofedrepo.errors import BuildFailed, OfedrepoError

MAX_DOWNLOAD = 2 * 1024**3
MAX_REPOMD_BYTES = 4 * 1024**2
_CHUNK = 1024 * 1024


class MirrorRefused(OfedrepoError):
    """A repository whose metadata cannot be used: the message says why."""


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, kind: Any, value: Any, traceback: Any, /) -> Any: ...


_OPENERS: dict[str, Callable[[Path], _Reader]] = {
    ".gz": lambda path: gzip.open(path, "rb"),
    ".xz": lambda path: lzma.open(path, "rb"),
    ".bz2": lambda path: bz2.open(path, "rb"),
    ".zst": lambda path: zstandard.open(path, "rb"),
}


@dataclass(frozen=True)
class Repomd:
    """What ``repodata/repomd.xml`` said: where the primary metadata is, and the answer's headers."""

    primary: Any
    """createrepo_c's record of the primary metadata: location, checksum, sizes."""
    headers: Message


def base_url(url: str) -> str:
    """``url`` with one trailing slash, once its scheme is known to be one we read."""
    base = url.rstrip("/") + "/"
    if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
        raise MirrorRefused("only http, https and file repository URLs are supported")
    return base


def safe_href(href: str) -> str:
    """A repository-relative location from metadata; anything absolute or climbing out is refused."""
    path = PurePosixPath(href)
    if not href or path.is_absolute() or ".." in path.parts or "://" in href or "\\" in href:
        raise BuildFailed(f"refusing the repository location {href[:200]!r}")
    return path.as_posix()


def read_repomd(base: str, scratch: Path, headers: dict[str, str] | None = None) -> Repomd | None:
    """``base``'s repomd.xml, asked with ``headers`` (validators of a conditional GET); None for a 304."""
    path = scratch / "repomd.xml"
    try:
        request = urllib.request.Request(base + "repodata/repomd.xml", headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as response:
            _copy_capped(response, path, MAX_REPOMD_BYTES, "repomd.xml")
            answer_headers = response.headers
    except urllib.error.HTTPError as error:
        if error.code == 304:
            return None
        raise MirrorRefused(f"repodata/repomd.xml: HTTP {error.code}") from None
    try:
        repomd = cr.Repomd(str(path))
    except cr.CreaterepoCError as error:
        raise MirrorRefused(f"repodata/repomd.xml is not yum metadata ({str(error).strip()[:300]})") from None
    primary = next((record for record in repomd.records if record.type == "primary"), None)
    if primary is None:
        raise MirrorRefused("repodata/repomd.xml lists no primary metadata")
    return Repomd(primary, answer_headers)


def read_packages(base: str, primary: Any, scratch: Path, max_bytes: int, names: Collection[str]) -> list[Any]:
    """The packages named ``names`` that the primary metadata lists (createrepo_c ``Package`` objects)."""
    if (primary.size or 0) > max_bytes or (primary.size_open or 0) > max_bytes:
        raise MirrorRefused(f"its primary metadata claims more than {max_bytes} bytes")
    href = safe_href(primary.location_href)
    compressed = scratch / ("primary" + Path(href).suffix)
    try:
        download(base + href, compressed, (primary.checksum_type, primary.checksum), max_bytes=max_bytes)
    except ValueError as error:
        raise MirrorRefused(str(error)) from None
    plain = scratch / "primary.xml"
    _decompress(compressed, plain, max_bytes)
    found: list[Any] = []

    def keep(package: Any) -> bool:
        if package.name in names:
            found.append(package)
        return True

    try:
        cr.xml_parse_primary(str(plain), pkgcb=keep, do_files=False, warningcb=lambda *_: True)
    except cr.CreaterepoCError as error:
        raise MirrorRefused(f"its primary metadata is not readable ({str(error).strip()[:300]})") from None
    return found


def kernel_release(package: Any) -> str:
    """The ``uname -r`` a kernel package (``kernel-devel``, ``kernel-core``...) is for: version-release.arch."""
    return f"{package.version}-{package.release}.{package.arch}"


def download(url: str, destination: Path, checksum: tuple[str, str] | None, max_bytes: int = MAX_DOWNLOAD) -> None:
    """Fetch ``url`` into ``destination``, never past ``max_bytes``; with ``checksum`` (type, hex), refuse a
    mismatch."""
    digest = hashlib.new(checksum[0]) if checksum else None
    size = 0
    with urllib.request.urlopen(url, timeout=60) as response, destination.open("wb") as writer:
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"{url} is larger than {max_bytes} bytes")
            writer.write(chunk)
            if digest:
                digest.update(chunk)
    if checksum and digest and digest.hexdigest() != checksum[1]:
        raise ValueError(f"{url}: {checksum[0]} {digest.hexdigest()} does not match the repository's {checksum[1]}")


def _copy_capped(reader: _Reader, destination: Path, max_bytes: int, what: str) -> None:
    written = 0
    with destination.open("wb") as writer:
        while chunk := reader.read(_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise MirrorRefused(f"{what} is larger than {max_bytes} bytes")
            writer.write(chunk)


def _decompress(source: Path, destination: Path, max_bytes: int) -> None:
    opener = _OPENERS.get(source.suffix)
    if opener is None:
        shutil.copyfile(source, destination)
        return
    try:
        with opener(source) as reader:
            _copy_capped(reader, destination, max_bytes, "its primary metadata, decompressed,")
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as error:
        raise MirrorRefused(f"its primary metadata is not a readable {source.suffix} stream ({error})") from None
