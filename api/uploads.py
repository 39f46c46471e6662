"""Receiving a multipart file upload straight into the data dir, as it arrives.

Starlette's own form parsing spools uploads into the system temporary directory and holds the whole
request before the route runs; an image is gigabytes, must not land outside the data dir, and must be
hashed and size-checked while it streams. So the body is fed to python-multipart's streaming parser and
the bytes of the one wanted file part go to a sink (``ofedrepo.uploads.UploadSink``) in large writes, off
the event loop. JSON bodies, small by nature, are capped as they arrive (``CapJsonBodies``).
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import PathImport
from ofedrepo.errors import InvalidInput, TooLarge, UnsupportedMediaType
from ofedrepo.storage import DataDir
from ofedrepo.uploads import Candidate, UploadSink, discard, import_path, take_file

FLUSH_BYTES = 1024 * 1024
MAX_JSON_BYTES = 64 * 1024


class ChunkSink(Protocol):
    limit: int

    def write(self, chunk: bytes) -> None: ...


class _FilePart:
    """Parser callbacks that collect the wanted part's bytes and its ``filename``."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name
        self.filename: str | None = None
        self.buffered: list[bytes] = []
        self.buffered_size = 0
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._wanted = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def take(self) -> bytes:
        data = b"".join(self.buffered)
        self.buffered, self.buffered_size = [], 0
        return data

    def _part_begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, parameters = parse_options_header(self._headers.get(b"content-disposition", b""))
        is_wanted = parameters.get(b"name") == self.field_name.encode() and b"filename" in parameters
        self._wanted = is_wanted and self.filename is None
        if self._wanted:
            self.filename = parameters[b"filename"].decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._wanted:
            self.buffered.append(data[start:end])
            self.buffered_size += end - start

    def _part_end(self) -> None:
        self._wanted = False


async def receive_file(request: Request, field_name: str, sink: ChunkSink) -> str:
    """Stream the ``field_name`` file part of a multipart request into ``sink``; return its filename."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > sink.limit + 64 * 1024:
        raise TooLarge(f"upload of {declared} bytes is larger than the limit of {sink.limit} bytes")
    _, parameters = parse_options_header(request.headers.get("content-type", ""))
    boundary = parameters.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart/form-data body without a boundary")
    part = _FilePart(field_name)
    try:
        parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            parser.write(chunk)
            if part.buffered_size >= FLUSH_BYTES:
                await anyio.to_thread.run_sync(sink.write, part.take())
        parser.finalize()
    except FormParserError as error:  # a malformed body, or a boundary longer than the parser allows
        raise InvalidInput(f"malformed multipart/form-data body: {error}") from None
    if part.filename is None:
        raise InvalidInput(f"the multipart body has no file part named {field_name!r}")
    await anyio.to_thread.run_sync(sink.write, part.take())
    return part.filename


class CapJsonBodies:
    """Reads a JSON body (small by nature) before the route does, answering 413 past ``MAX_JSON_BYTES``: no
    route ever holds more, and a chunked body cannot get round a ``Content-Length`` check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse({"detail": f"a JSON body is at most {MAX_JSON_BYTES} bytes"}, status_code=413)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
            await too_large(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > MAX_JSON_BYTES:
                await too_large(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _json_body(scope: Scope) -> bool:
    content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
    return scope["method"] in ("POST", "PUT", "PATCH") and content_type == b"application/json"


async def read_small_body(request: Request) -> bytes:
    """A JSON request body, refused past ``MAX_JSON_BYTES`` instead of being held whole in memory."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise TooLarge(f"a JSON body is at most {MAX_JSON_BYTES} bytes")
    return bytes(body)


def upload_request_body(what: str) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of an endpoint taking a multipart ``file`` or a JSON ``{"path": ...}``."""
    return {
        "required": True,
        "description": f'{what}: a multipart `file` upload, or JSON `{{"path": ...}}` under `OFEDREPO_IMPORT_DIRS`',
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {"schema": PathImport.model_json_schema()},
        },
    }


@asynccontextmanager
async def received(
    request: Request,
    *,
    data: DataDir,
    limit: int,
    limit_setting: str,
    import_dirs: list[Path],
    take_in: Callable[[int, str], Candidate] | None = None,
    directories: bool = False,
) -> AsyncIterator[Candidate]:
    """The file a request brings, hashed: an upload, or an imported path opened once and copied in while hashed
    (``take_in``, a file by default; the original is left alone). Either copy is removed on exit."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            body = PathImport.model_validate_json(await read_small_body(request))
        except ValidationError:
            raise InvalidInput('expected a JSON object {"path": "/absolute/path/on/the/server"}') from None
        taking = take_in or partial(take_file, data=data)
        candidate = await run_in_threadpool(import_path, body.path, import_dirs, taking, directories)
        try:
            yield candidate
        finally:
            await run_in_threadpool(discard, candidate)
    elif media_type == "multipart/form-data":
        sink = UploadSink(data, limit, limit_setting)
        try:
            filename = await receive_file(request, "file", sink)
            yield sink.finish(filename)
        finally:
            sink.discard()
    else:
        raise UnsupportedMediaType('send a multipart/form-data upload (field "file") or JSON {"path": ...}')
