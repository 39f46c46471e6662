"""Bearer tokens for every call that changes state; reads, the yum tree and the read pages stay open.

Tokens come from ``OFEDREPO_API_TOKENS``; when it is unset nothing is checked (a lab or a loopback-only
service). A variable set but blank never gets here: ``Settings`` refuses it, so a template that expanded to
nothing stops the service instead of silently turning authentication off. The web pages' actions send the
token a login form stored in a ``SameSite=Strict`` cookie; a call made with that cookie is also refused when
the browser says it comes from another site (``Sec-Fetch-Site``, or an ``Origin`` that is not this host), and
so is a cross-site login. Tokens are compared in constant time and never logged.

``AuthenticateFirst`` checks every mutating ``/api/`` call before anything reads its body: a client without
a token cannot make the service read (and hold) a large body only to be told 401 afterwards.
"""

import hmac
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import SettingsDep
from ofedrepo.config import Settings
from ofedrepo.errors import Forbidden, OfedrepoError, Unauthorized

TOKEN_COOKIE = "ofedrepo_token"

bearer = HTTPBearer(auto_error=False, description="One of `OFEDREPO_API_TOKENS`")


def token_is_valid(offered: str, tokens: list[str]) -> bool:
    return any(hmac.compare_digest(offered.encode(), token.encode()) for token in tokens)


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cross_site(request: Request) -> bool:
    """Whether a browser says this request comes from another site than this service's own pages."""
    if request.headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False  # not a browser's cross-origin request (browsers send Origin with those)
    return origin == "null" or urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


def credential_problem(request: Request, tokens: list[str]) -> OfedrepoError | None:
    """Why this mutating call may not go on (no token, a wrong one, the cookie from another site), or None."""
    if not tokens:
        return None
    authorization = request.headers.get("authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        offered = credential.strip()
    else:
        offered = request.cookies.get(TOKEN_COOKIE, "")
        if offered and cross_site(request):
            return Forbidden("the login cookie is not accepted on a request from another site")
    if not offered:
        return Unauthorized("this call changes state and needs a token: send 'Authorization: Bearer <token>'")
    if not token_is_valid(offered, tokens):
        return Forbidden("the token is not one of this service's tokens")
    return None


def require_token(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 without a token, 403 with a wrong one; nothing when ``OFEDREPO_API_TOKENS`` is unset."""
    problem = credential_problem(request, settings.api_tokens)
    if problem:
        raise problem


class AuthenticateFirst:
    """Answers 401/403 to a mutating ``/api/`` call before its body is read (``require_token`` documents it)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in MUTATING and scope["path"].startswith("/api/"):
            problem = credential_problem(Request(scope), self.settings.api_tokens)
            if problem is not None:
                status = 401 if isinstance(problem, Unauthorized) else 403
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                await JSONResponse({"detail": str(problem)}, status_code=status, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: Put on every route that changes state, with TOKEN_RESPONSES among its documented answers.
TOKEN_REQUIRED = [Depends(require_token)]
TOKEN_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"description": "No token (when `OFEDREPO_API_TOKENS` is set)"},
    403: {"description": "A token that is not one of `OFEDREPO_API_TOKENS`"},
}
