"""The published tree at ``/repos/``, served the way dnf/librepo and DIB need it.

GET and HEAD only; exact ``Content-Length``; single byte ranges (206, 416); never a
``Content-Encoding`` (``.gz``/``.zst``/``.xz`` files are served as the bytes they are); ``repomd.xml`` and
anything reached through ``latest`` must be revalidated (``no-cache``), numbered versions are immutable.
Nothing outside the tree is reachable: ``..``/``.`` segments (also when percent-encoded) and hidden names
are refused, and the resolved path (symlinks followed) must stay inside the tree.
"""

import functools
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.responses import MalformedRangeHeader

from api.deps import DataDirDep, SessionScopedRoute
from api.templating import templates
from ofedrepo.storage import LATEST

router = APIRouter(tags=["tree"], route_class=SessionScopedRoute)
#: The route of every file and directory below ``/repos/`` (its template labels their requests in metrics).
ROUTE = "/repos/{path:path}"
#: Threads of the tree's own: a burst on the API (whose routes share anyio's default pool of 40) never keeps yum
#: clients waiting, and the tree never touches the database (DESIGN: "Serving the tree").
TREE_THREADS = 16

CHUNK = 1024 * 1024
#: Whole files up to this size are answered from one read; larger ones and ranges are streamed in CHUNKs.
WHOLE = 1024 * 1024
#: Whole files up to this size are read in the event loop itself (see ``tree``).
SMALL = 64 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CONTENT_TYPES = {
    ".rpm": "application/x-rpm",
    ".xml": "application/xml",
    ".gz": "application/gzip",
    ".zst": "application/zstd",
    ".xz": "application/x-xz",
    ".bz2": "application/x-bzip2",
    ".repo": "text/plain; charset=utf-8",
    ".asc": "application/pgp-signature",
    ".sqlite": "application/vnd.sqlite3",
}


def content_type(name: str) -> str:
    if name.startswith("RPM-GPG-KEY"):
        return "application/pgp-keys"
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


def cache_control(segments: list[str]) -> str:
    """Numbered versions never change; ``latest`` moves, and ``repomd.xml`` is what clients poll."""
    if not segments or segments[-1].startswith("repomd.xml") or LATEST in segments:
        return REVALIDATE
    return IMMUTABLE


@functools.cache
def _real(root: Path) -> Path:
    """The tree's own location, symlinks resolved; it does not move while the service runs."""
    return root.resolve()


def resolve(root: Path, path: str) -> tuple[Path, list[str]]:
    """The file or directory ``path`` names inside ``root``; 404 for anything that would leave it."""
    segments = [segment for segment in path.split("/") if segment]
    for segment in segments:
        if segment in (".", "..") or segment.startswith(".") or "\x00" in segment or "\\" in segment:
            raise HTTPException(404, "Not Found")
    real_root = _real(root)
    try:
        target = (real_root.joinpath(*segments)).resolve(strict=True)
    except (OSError, RuntimeError):
        raise HTTPException(404, "Not Found") from None
    if not target.is_relative_to(real_root):
        raise HTTPException(404, "Not Found")
    return target, segments


@dataclass
class _TreeReader:
    """The part of ``anyio.AsyncFile`` that ``FileResponse`` uses, on a limiter of the caller's choice."""

    handle: BinaryIO
    threads: anyio.CapacityLimiter

    async def read(self, size: int) -> bytes:
        return await anyio.to_thread.run_sync(self.handle.read, size, limiter=self.threads)

    async def seek(self, offset: int) -> int:
        return await anyio.to_thread.run_sync(self.handle.seek, offset, limiter=self.threads)


class TreeFile(FileResponse):
    """Starlette's ``FileResponse`` (byte ranges, ``If-Range``, HEAD, the length, ETag and Last-Modified) held
    to the tree's rules: one byte range is honoured; several, or one Starlette cannot read (``bytes=9-0``,
    5,000 digits, another unit), get the whole file with 200, as HTTP lets a server ignore ``Range`` (dnf and
    librepo ask for one range at a time). Large files are read in 1 MiB chunks, on the tree's own threads
    (Starlette's would take the thread pool the API's routes share)."""

    chunk_size = CHUNK

    def __init__(self, *arguments: Any, threads: anyio.CapacityLimiter, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.threads = threads

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[_TreeReader]:  # type: ignore[override]
        reader = _TreeReader(await anyio.to_thread.run_sync(open, self.path, "rb", limiter=self.threads), self.threads)
        try:
            yield reader
        finally:
            with anyio.CancelScope(shield=True):  # closing must finish even when the transfer is cancelled
                await anyio.to_thread.run_sync(reader.handle.close, limiter=self.threads)

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            ranges = super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []
        return ranges if len(ranges) == 1 else []


def _not_modified(request: Request, etag: str, last_modified: str) -> bool:
    """Conditional GET, which ``FileResponse`` leaves to the caller."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        # If-None-Match compares weakly (RFC 9110 §13.1.2): W/"x" matches "x".
        offered = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return etag in offered or if_none_match.strip() == "*"
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
    return False


def serve_file(
    request: Request,
    path: Path,
    segments: list[str],
    info: os.stat_result,
    threads: anyio.CapacityLimiter,
    body: bytes | None = None,
) -> Response:
    """The file's answer; ``body``, when the caller has read the file already (``info`` then describes what it
    read)."""
    headers = _file_headers(path, segments, info)
    if _not_modified(request, headers["etag"], headers["last-modified"]):
        return Response(status_code=304, headers=headers)
    if request.method == "GET" and "range" not in request.headers and info.st_size <= WHOLE:
        # Most requests (repomd.xml, the metadata, most packages) are small: one read here, in the route's worker
        # thread, instead of a thread hop each to open, read and close the file.
        if body is None:
            with path.open("rb") as handle:
                body = handle.read(info.st_size)
        return _whole(path, headers, body)
    streamed = {"Cache-Control": headers["Cache-Control"]}  # TreeFile adds the validators itself, and the range's
    return TreeFile(path, headers=streamed, media_type=content_type(path.name), stat_result=info, threads=threads)


def _file_headers(path: Path, segments: list[str], info: os.stat_result) -> dict[str, str]:
    """``Cache-Control``, and ``ETag``, ``Last-Modified`` and ``Accept-Ranges`` as Starlette's ``FileResponse``
    makes them: the same in every answer of a file (200, 206, 304)."""
    made = FileResponse(path, stat_result=info).headers
    validators = {name: made[name] for name in ("etag", "last-modified", "accept-ranges")}
    return {"Cache-Control": cache_control(segments), **validators}


def _whole(path: Path, headers: dict[str, str], body: bytes) -> Response:
    """The 200 answer of a whole file already read (``headers``: its ``_file_headers``): what ``TreeFile`` would
    answer, without its streaming."""
    return Response(body, headers=headers, media_type=content_type(path.name))


@dataclass(frozen=True)
class SmallFile:
    """A small file of the tree, read whole, and its answer to a plain GET (``api/tree_fast_path.py`` keeps
    these). ``lookup`` is its path as asked for, links not followed; ``info`` describes the bytes read: the file
    was this one while ``body`` was read."""

    lookup: Path
    info: os.stat_result
    body: bytes
    headers: list[tuple[bytes, bytes]]


def small_file(root: Path, path: str) -> SmallFile | None:
    """The file at ``path`` in the tree (the route's path: after ``/repos/``, percent-decoded), when it is a
    regular file of at most ``SMALL`` bytes, with every check the route makes; None for anything else, which is
    the route's to answer (a 404, a directory, a larger file)."""
    try:
        target, segments = resolve(root, path)
    except HTTPException:
        return None
    small = _read_small(target)
    if small is None:
        return None
    info, body = small
    answer = _whole(target, _file_headers(target, segments, info), body)
    return SmallFile(_real(root).joinpath(*segments), info, body, answer.raw_headers)


def listing(directory: Path, url_path: str, root: Path) -> list[dict[str, Any]]:
    """The entries of a tree directory; a link that leads out of the tree is not listed at all (neither its
    target nor the size and date of what it points to)."""
    real_root = root.resolve()
    entries = []
    with os.scandir(directory) as scan:
        for entry in scan:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink() and not Path(entry.path).resolve(strict=True).is_relative_to(real_root):
                    continue
                info = entry.stat()
            except (OSError, RuntimeError):
                continue  # a dangling or looping link: nothing to list
            is_dir = stat.S_ISDIR(info.st_mode)
            entries.append(
                {
                    "name": entry.name,
                    "type": "directory" if is_dir else "file",
                    "size": None if is_dir else info.st_size,
                    "modified": datetime.fromtimestamp(info.st_mtime, UTC).isoformat(),
                    "href": url_path + quote(entry.name) + ("/" if is_dir else ""),
                    "link": os.readlink(entry.path) if entry.is_symlink() else None,
                }
            )
    entries.sort(key=lambda entry: (entry["type"] != "directory", _natural(str(entry["name"]))))
    return entries


def _natural(name: str) -> tuple[int, int | str]:
    """Version directories sort as numbers (2 before 10), everything else by name."""
    return (0, int(name)) if name.isdigit() else (1, name)


def tree_url(segments: list[str]) -> str:
    """The URL path of a directory in the tree, with its trailing slash."""
    return "/repos/" + "".join(f"{quote(segment)}/" for segment in segments)


def serve_directory(request: Request, directory: Path, segments: list[str]) -> Response:
    url_path = tree_url(segments)
    if not request.url.path.endswith("/"):
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(url_path + query, status_code=301)
    entries = listing(directory, url_path, request.app.state.data.repos)
    parent = tree_url(segments[:-1]) if segments else None
    headers = {"Cache-Control": REVALIDATE}
    if request.query_params.get("format") == "json":
        return JSONResponse({"path": url_path, "parent": parent, "entries": entries}, headers=headers)
    crumbs = [("repos", tree_url([]))] + [
        (segment, tree_url(segments[: index + 1])) for index, segment in enumerate(segments)
    ]
    return templates.TemplateResponse(
        request,
        "listing.html",
        {"path": url_path, "parent": parent, "entries": entries, "crumbs": crumbs},
        headers=headers,
    )


@router.api_route("/repos", methods=["GET", "HEAD"], include_in_schema=False)
@router.head(ROUTE, include_in_schema=False)  # the GET's twin: one operation id in the schema
@router.get(
    ROUTE,
    summary="The published yum tree (HEAD too)",
    responses={
        206: {"description": "The single byte range asked for"},
        304: {"description": "Unchanged since the `ETag` or date the client has"},
        404: {"description": "Nothing published at this path"},
        416: {"description": "The range lies outside the file"},
    },
)
async def tree(request: Request, data: DataDirDep, path: str = "") -> Response:
    """Files with ranges and caching rules for yum; directories as an HTML index or `?format=json`."""
    threads = _threads(request)
    target, segments = resolve(data.repos, path)
    small = None if "range" in request.headers else _read_small(target)
    if small is not None:
        # Most of what yum asks for (repomd.xml, the metadata) is a few KiB already in the page cache: read in the
        # event loop, as nginx reads files in its own, a thread hop each way would cost more than the read.
        info, body = small
        return serve_file(request, target, segments, info, threads, body)
    return await anyio.to_thread.run_sync(_answer, request, target, segments, threads, limiter=threads)


def _read_small(target: Path) -> tuple[os.stat_result, bytes] | None:
    """The regular file at ``target`` and its bytes, when it is at most ``SMALL`` bytes; None for anything else
    (left to a thread). Opened without blocking and judged by its descriptor: a FIFO put there meanwhile is
    never waited on."""
    try:
        descriptor = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > SMALL:
            return None
        chunks = []
        while chunk := os.read(descriptor, SMALL + 1):
            chunks.append(chunk)
        body = b"".join(chunks)
        return (info, body) if len(body) == info.st_size else None  # it changed while read: left to a thread
    finally:
        os.close(descriptor)


def _threads(request: Request) -> anyio.CapacityLimiter:
    """The app's limiter of the tree's threads, made in its event loop on the first request."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "tree_threads", None)
    if limiter is None:
        limiter = request.app.state.tree_threads = anyio.CapacityLimiter(TREE_THREADS)
    return limiter


def _answer(request: Request, target: Path, segments: list[str], threads: anyio.CapacityLimiter) -> Response:
    try:
        info = target.stat()
    except OSError:
        raise HTTPException(404, "Not Found") from None
    if stat.S_ISDIR(info.st_mode):
        return serve_directory(request, target, segments)
    if not stat.S_ISREG(info.st_mode):
        raise HTTPException(404, "Not Found")
    return serve_file(request, target, segments, info, threads)
