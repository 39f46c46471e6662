"""Builds: state, the log as it grows, cancel."""

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.auth import TOKEN_REQUIRED, TOKEN_RESPONSES
from api.deps import DataDirDep, IdPath, ReadSessionDep, SessionDep, SessionScopedRoute, SettingsDep
from api.schemas import ENV_CONTENT, AnswerFormat, BuildOut, FormatQuery, env_response
from ofedrepo.builds import lifecycle, requests
from ofedrepo.models import BuildState

#: The largest offset asked for: every JSON client (the log page's JavaScript too) holds integers up to it exactly.
MAX_LOG_OFFSET = 2**53 - 1

router = APIRouter(prefix="/api/v1/builds", tags=["builds"], route_class=SessionScopedRoute)


@router.get("", response_model=list[BuildOut])
def list_builds(
    session: ReadSessionDep,
    settings: SettingsDep,
    state: Annotated[BuildState | None, Query(description="Only builds in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Builds in one answer")] = 200,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Newest builds to pass over first")] = 0,
) -> list[BuildOut]:
    """The most recent builds, newest first, a page at a time (``limit``, ``offset``)."""
    arches = requests.live_arches(session, settings.build_lease_seconds)
    return [BuildOut.of(build, arches) for build in requests.list_builds(session, limit, state, offset)]


@router.get("/{build_id}", response_model=BuildOut, responses={200: ENV_CONTENT, 404: {"description": "No such build"}})
def get_build(
    build_id: IdPath, session: ReadSessionDep, settings: SettingsDep, answer_format: AnswerFormat = FormatQuery
) -> BuildOut | Response:
    build = requests.get_build(session, build_id)
    answer = BuildOut.of(build, requests.live_arches(session, settings.build_lease_seconds))
    return env_response(answer.env()) if answer_format == "env" else answer


@router.get(
    "/{build_id}/log",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, 404: {"description": "No such build"}},
)
def build_log(
    build_id: IdPath,
    session: ReadSessionDep,
    data: DataDirDep,
    offset: int = Query(
        0,
        ge=0,
        le=MAX_LOG_OFFSET,
        description="Start here (bytes): follow a running build by asking from the previous answer's "
        "`X-Log-Offset`. An offset past the end answers as the end does: an empty body and the log's size",
    ),
) -> Response:
    """The build log as plain text; it grows while the build runs. `X-Build-State` carries the state,
    `X-Log-Offset` where to ask from next.

    An offset past the end is answered from the end rather than refused: a client following the log (the DIB
    element) then carries on from the log's real size instead of failing or asking the same thing forever.
    """
    build = requests.get_build(session, build_id)
    log_file = data.build_log(build_id)
    start = min(offset, _log_size(log_file))  # measured first: bytes written meanwhile are read, not skipped
    content = requests.read_log(log_file, start)
    headers = {"X-Build-State": build.state, "X-Log-Offset": str(start + len(content)), "Cache-Control": "no-cache"}
    return Response(content, media_type="text/plain; charset=utf-8", headers=headers)


def _log_size(log_file: Path) -> int:
    """The log's size now; 0 before its build starts writing it."""
    try:
        return log_file.stat().st_size
    except FileNotFoundError:
        return 0


@router.post(
    "/{build_id}/cancel",
    status_code=202,
    dependencies=TOKEN_REQUIRED,
    response_model=BuildOut,
    responses={
        **TOKEN_RESPONSES,
        413: {"description": "A JSON body larger than 64 KiB"},
        404: {"description": "No such build"},
        409: {"description": "The build has already ended, or has already published its version"},
    },
)
def cancel_build(request: Request, build_id: IdPath, session: SessionDep) -> BuildOut:
    """Cancel: a queued build at once; a running one is stopped by its worker within seconds."""
    build = BuildOut.of(lifecycle.cancel(session, build_id))
    request.app.state.answers.forget(build.repo_id)
    return build
