"""Builds: state, the log as it grows, cancel."""

from fastapi import APIRouter, Query, Response

from api.auth import TOKEN_REQUIRED, TOKEN_RESPONSES
from api.deps import DataDirDep, IdPath, ReadSessionDep, SessionDep, SessionScopedRoute
from api.schemas import ENV_CONTENT, AnswerFormat, BuildOut, FormatQuery, env_response
from ofedrepo.builds import requests

router = APIRouter(prefix="/api/v1/builds", tags=["builds"], route_class=SessionScopedRoute)


@router.get("", response_model=list[BuildOut])
def list_builds(session: ReadSessionDep) -> list[BuildOut]:
    """The most recent builds, newest first."""
    return [BuildOut.of(build) for build in requests.list_builds(session)]


@router.get("/{build_id}", response_model=BuildOut, responses={200: ENV_CONTENT, 404: {"description": "No such build"}})
def get_build(
    build_id: IdPath, session: ReadSessionDep, answer_format: AnswerFormat = FormatQuery
) -> BuildOut | Response:
    answer = BuildOut.of(requests.get_build(session, build_id))
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
        0, ge=0, le=2**62, description="Start here (bytes): follow a running build by asking from the end"
    ),
) -> Response:
    """The build log as plain text; it grows while the build runs. `X-Build-State` carries the state."""
    build = requests.get_build(session, build_id)
    content = requests.read_log(data.build_log(build_id), offset)
    headers = {"X-Build-State": build.state, "X-Log-Offset": str(offset + len(content)), "Cache-Control": "no-cache"}
    return Response(content, media_type="text/plain; charset=utf-8", headers=headers)


@router.post(
    "/{build_id}/cancel",
    status_code=202,
    dependencies=TOKEN_REQUIRED,
    response_model=BuildOut,
    responses={
        **TOKEN_RESPONSES,
        413: {"description": "A JSON body larger than 64 KiB"},
        404: {"description": "No such build"},
        409: {"description": "The build has already ended"},
    },
)
def cancel_build(build_id: IdPath, session: SessionDep) -> BuildOut:
    """Cancel: a queued build at once; a running one is killed by its worker within seconds."""
    return BuildOut.of(requests.cancel_build(session, build_id))
