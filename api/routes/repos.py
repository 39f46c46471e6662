from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session

from api.answers import FRESH_SECONDS, AnswerCache
from api.auth import TOKEN_REQUIRED, TOKEN_RESPONSES
from api.deps import IdPath, ReadSessionDep, SessionDep, SessionScopedRoute, SettingsDep, in_read_session
from api.schemas import ENV_CONTENT, AnswerFormat, DibSnippet, FormatQuery, RepoOut, RepoRequestIn, env_response
from ofedrepo.builds import requests
from ofedrepo.bundles.names import parse_bundle_name
from ofedrepo.bundles.vendors import dib_package_list
from ofedrepo.models import MAX_ID, Repo
from ofedrepo.repos import queries
from ofedrepo.repos.repofile import (
    dib_environment,
    render_repo_file,
    render_shell_exports,
    render_tripleo_yaml,
)

router = APIRouter(prefix="/api/v1/repos", tags=["repos"], route_class=SessionScopedRoute)

VersionQuery = Query(None, ge=1, le=MAX_ID, description="Pin a version number instead of `latest`")


@router.post(
    "",
    status_code=202,
    dependencies=TOKEN_REQUIRED,
    response_model=RepoOut,
    responses={
        **TOKEN_RESPONSES,
        413: {"description": "A JSON body larger than 64 KiB"},
        200: {"model": RepoOut, "description": "Already built: the repo, published", **ENV_CONTENT},
        202: {"model": RepoOut, "description": "The repo and its queued or running build", **ENV_CONTENT},
        404: {"description": "No such image"},
        422: {"description": "Invalid kernel, no bundle fits (the candidates are listed), or several do"},
    },
)
def request_repo(
    request: Request,
    body: RepoRequestIn,
    response: Response,
    reader: ReadSessionDep,
    session: SessionDep,
    settings: SettingsDep,
    answer_format: AnswerFormat = FormatQuery,
) -> RepoOut | Response:
    """Ask for a repo for a kernel or an image: 202 with the repo and its queued or running build, 200 when built.

    Identical requests share one build; `force` builds again (a new version once it succeeds).
    """
    asked = requests.RepoRequest(**body.model_dump())
    outcome = requests.answer_without_writing(reader, settings, asked)
    if outcome is None:  # something to create: only now take the (on SQLite, exclusive) write transaction
        reader.close()
        outcome = requests.request_repo(session, settings, asked)
        reader = session
        reader.expire_all()
    request.app.state.answers.forget(outcome.repo_id)  # a client that asks next sees what this request did
    repo = queries.get_repo(reader, outcome.repo_id)
    response.status_code = 200 if outcome.ready else 202
    arches = requests.live_arches(reader, settings.build_lease_seconds)
    answer = RepoOut.of(queries.view(repo, settings.base_url), settings.base_url, arches)
    return env_response(answer.env(), response.status_code) if answer_format == "env" else answer


@router.get("", response_model=list[RepoOut])
def list_repos(session: ReadSessionDep, settings: SettingsDep) -> list[RepoOut]:
    """Every repo, with its versions and the URLs to give yum and DIB."""
    arches = requests.live_arches(session, settings.build_lease_seconds)
    return [
        RepoOut.of(queries.view(repo, settings.base_url), settings.base_url, arches)
        for repo in queries.list_repos(session)
    ]


@router.get("/{repo_id}", response_model=RepoOut, responses={200: ENV_CONTENT, 404: {"description": "No such repo"}})
async def get_repo(
    request: Request, repo_id: IdPath, settings: SettingsDep, answer_format: AnswerFormat = FormatQuery
) -> Response:
    """The repo, its versions, its latest build; answered again from memory for up to a second
    (``api.answers``): a client polling it may see a change that much later."""
    cache: AnswerCache = request.app.state.answers
    key = ("repo", repo_id, answer_format)
    found = cache.get(key)
    if found is None:
        generation = cache.generation()

        def answer(session: Session) -> Response:
            repo = queries.get_repo(session, repo_id)
            arches = requests.live_arches(session, settings.build_lease_seconds)
            out = RepoOut.of(queries.view(repo, settings.base_url), settings.base_url, arches)
            if answer_format == "env":
                return env_response(out.env())
            return Response(out.model_dump_json().encode(), media_type="application/json")

        response = await in_read_session(request, answer)
        found = (bytes(response.body), response.media_type or "application/json")
        cache.put(key, *found, FRESH_SECONDS, generation)
    body, media_type = found
    return Response(body, media_type=media_type, headers={"Cache-Control": f"max-age={FRESH_SECONDS:g}"})


@router.get(
    "/{repo_id}/repofile",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}, 404: {"description": "No such repo or version"}},
)
def repo_file(
    repo_id: IdPath, session: ReadSessionDep, settings: SettingsDep, version: int | None = VersionQuery
) -> str:
    """A `.repo` file for yum/dnf pointing at `latest` (or at a pinned version)."""
    return repo_file_text(queries.get_repo(session, repo_id), settings.base_url, version)


@router.get("/{repo_id}/dib", response_model=DibSnippet, responses={404: {"description": "No such repo or version"}})
def dib(
    repo_id: IdPath, session: ReadSessionDep, settings: SettingsDep, version: int | None = VersionQuery
) -> DibSnippet:
    """The DIB environment for the `mlnx-ofed` element and a TripleO `disk_images` fragment."""
    return dib_snippet(queries.get_repo(session, repo_id), settings.base_url, version)


def repo_file_text(repo: Repo, base_url: str, version: int | None) -> str:
    """The `.repo` file of a version (the latest when None), as the route and the repo page show it."""
    location, published = queries.version_location(repo, base_url, version)
    return render_repo_file(location, gpgcheck=published.gpgcheck, repo_gpgcheck=published.repo_gpgcheck)


def dib_snippet(repo: Repo, base_url: str, version: int | None) -> DibSnippet:
    """The DIB variables of a version (the latest when None), as the route and the repo page show them."""
    location, published = queries.version_location(repo, base_url, version)
    environment = dib_environment(
        location,
        parse_bundle_name(repo.bundle_name).identity.dib_version,
        dib_package_list(repo.bundle_name, published.package_names),
    )
    return DibSnippet(
        environment=environment,
        shell=render_shell_exports(environment),
        tripleo_yaml=render_tripleo_yaml(environment),
    )
