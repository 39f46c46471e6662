"""Turning ofedrepo's exceptions into JSON ``{"detail": ...}`` answers with meaningful statuses."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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


def status_for(error: OfedrepoError) -> int:
    for kind, status in STATUS.items():
        if isinstance(error, kind):
            return status
    return 500


async def _ofedrepo_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, OfedrepoError)
    status = status_for(error)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(OfedrepoError, _ofedrepo_error)
