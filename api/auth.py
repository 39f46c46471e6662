"""Bearer tokens for every call that changes state; reads, the yum tree and the read pages stay open.

Tokens come from ``OFEDREPO_API_TOKENS``; when it is empty nothing is checked (a lab or a loopback-only
service). The web pages' actions send the token a login form stored in a ``SameSite=Strict`` cookie, so
another site cannot make a browser use it. Tokens are compared in constant time and never logged.
"""

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SettingsDep
from ofedrepo.errors import Forbidden, Unauthorized

TOKEN_COOKIE = "ofedrepo_token"

bearer = HTTPBearer(auto_error=False, description="One of `OFEDREPO_API_TOKENS`")


def token_is_valid(offered: str, tokens: list[str]) -> bool:
    return any(hmac.compare_digest(offered.encode(), token.encode()) for token in tokens)


def require_token(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 without a token, 403 with a wrong one; nothing when no tokens are configured."""
    if not settings.api_tokens:
        return
    offered = credentials.credentials if credentials else request.cookies.get(TOKEN_COOKIE)
    if not offered:
        raise Unauthorized("this call changes state and needs a token: send 'Authorization: Bearer <token>'")
    if not token_is_valid(offered, settings.api_tokens):
        raise Forbidden("the token is not one of this service's tokens")


#: Put on every route that changes state, with TOKEN_RESPONSES among its documented answers.
TOKEN_REQUIRED = [Depends(require_token)]
TOKEN_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"description": "No token (when `OFEDREPO_API_TOKENS` is set)"},
    403: {"description": "A token that is not one of `OFEDREPO_API_TOKENS`"},
}
