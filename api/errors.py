"""Turning ofedrepo's exceptions into JSON ``{"detail": ...}`` answers with meaningful statuses; a person's browser
asking for a page (not the REST API) gets the same status and reason as a page of the site."""

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from api.templating import templates
from ofedrepo.db import unreachable_database
from ofedrepo.errors import (
    ApplianceFailed,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    OfedrepoError,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
    disk_full,
    disk_full_message,
)

log = logging.getLogger(__name__)

#: Checked in order, so subclasses come before their bases.
STATUS = {
    TooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    Conflict: 409,
    ApplianceFailed: 503,
}


def _answer(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    """``{"detail": ...}`` with ``status``, or that reason as a page for a browser asking for a page: the REST API
    (``/api/``) and ``/metrics`` always answer JSON, whatever the client accepts."""
    page = not request.url.path.startswith(("/api/", "/metrics")) and "text/html" in request.headers.get("accept", "")
    if not page:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    if isinstance(detail, list):  # a validation error's problems
        detail = "; ".join(f"{'.'.join(problem['loc'])}: {problem['msg']}" for problem in detail)
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    context = {"status": status, "reason": reason, "detail": str(detail)}
    return templates.TemplateResponse(request, "pages/error.html", context, status_code=status, headers=headers)


def status_for(error: OfedrepoError) -> int:
    for kind, status in STATUS.items():
        if isinstance(error, kind):
            return status
    return 500


async def _ofedrepo_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, OfedrepoError)
    status = status_for(error)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return _answer(request, status, str(error), headers)


PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at this path, found by asking every route as if each were used."""
    allowed = []
    for method in PROBED_METHODS:
        probe = {"type": "http", "path": request.url.path, "root_path": "", "method": method, "headers": []}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own errors, made consistent with ours.

    A body that cannot be parsed at all (not UTF-8, say) is a 422 like any other invalid body, and a 405
    lists in ``Allow`` every method of the path: Starlette names only those of the first route it matched,
    though GET and POST of one path are separate routes.
    """
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400:
        return _answer(request, 422, f"the request body cannot be read: {error.detail}")
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    if error.status_code == 304 or error.status_code < 200:
        return Response(status_code=error.status_code, headers=headers)
    return _answer(request, error.status_code, error.detail, headers)


async def _validation_error(request: Request, error: Exception) -> Response:
    """422 saying where and what, without echoing the input: a client's NaN, 1e999 or lone surrogate cannot
    be written back as JSON, and an answer should not repeat what was sent anyway."""
    assert isinstance(error, RequestValidationError)
    detail = [
        {"loc": [str(part) for part in problem.get("loc", ())], "msg": str(problem.get("msg", "")),
         "type": str(problem.get("type", ""))}
        for problem in error.errors()
    ]  # fmt: skip
    return _answer(request, 422, detail)


async def _os_error(request: Request, error: Exception) -> Response:
    """A full disk is 507 with the reason; any other OS error is a fault of ours, answered without details."""
    assert isinstance(error, OSError)
    if disk_full(error):
        log.error("%s %s: %s", request.method, request.url.path, error)
        return _answer(request, 507, disk_full_message(error))
    log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return _answer(request, 500, "internal error (see the server's log)")


#: Seconds a client told 503 (the service busy) waits before trying again.
RETRY_AFTER_SECONDS = 1


async def _busy(request: Request, error: Exception) -> Response:
    """No database connection came within ``db.POOL_TIMEOUT``: a burst larger than the service takes at once.
    Said at once, so that clients back off, instead of holding them for a timeout and answering 500."""
    return _answer(
        request, 503, "the service is busy: try again in a moment", {"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


async def _database_error(request: Request, error: Exception) -> Response:
    """The database down, lost, out of connections or locked past its busy timeout: a 503 to retry, as for a
    full pool; any other database error is a fault of ours. A disk that is full is said so (507), not "busy":
    retrying will not help until space is freed."""
    if disk_full(error):
        log.error("%s %s: %s", request.method, request.url.path, error)
        return _answer(request, 507, disk_full_message(error))
    if unreachable_database(error):
        log.warning("%s %s: the database cannot be reached (%s)", request.method, request.url.path, error)
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return _answer(request, 503, "the database cannot be reached or is busy: try again in a moment", retry)
    log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return _answer(request, 500, "internal error (see the server's log)")


async def _client_gone(request: Request, error: Exception) -> Response:
    """The client went away while sending its body (an aborted upload): one line, not a traceback; the answer
    reaches no one."""
    log.info("%s %s: the client disconnected before its request body was complete", request.method, request.url.path)
    return Response(status_code=400)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(OfedrepoError, _ofedrepo_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(PoolTimeout, _busy)
    app.add_exception_handler(DBAPIError, _database_error)
