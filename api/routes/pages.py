"""The web pages: repos, their versions and DIB snippets, builds with a live log, images, bundles, login.

Server-rendered from the same views the REST API returns; the little JavaScript in ``base.html`` follows
build logs and sends the actions (request a repo, cancel a build) to the REST API, with the token the login
form stored in a ``SameSite=Strict`` cookie.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import TOKEN_COOKIE, cross_site, token_is_valid
from api.deps import DataDirDep, IdPath, ReadSessionDep, SessionScopedRoute, SettingsDep
from api.routes.repos import dib_snippet, repo_file_text
from api.schemas import BuildOut, BundleOut, FeedOut, ImageOut, KeptSourcesOut, RepoOut, WorkerOut
from api.templating import templates
from ofedrepo import kept_sources
from ofedrepo.builds import feeds, matrix, requests
from ofedrepo.bundles import store
from ofedrepo.images import catalog
from ofedrepo.models import ACTIVE_STATES, BuildState
from ofedrepo.repos import queries

router = APIRouter(tags=["pages"], route_class=SessionScopedRoute, include_in_schema=False)


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    settings = request.app.state.settings
    context |= {"auth_required": bool(settings.api_tokens), "logged_in": TOKEN_COOKIE in request.cookies}
    return templates.TemplateResponse(request, f"pages/{name}.html", context)


@router.get("/", response_class=HTMLResponse)
def front_page(request: Request, session: ReadSessionDep, settings: SettingsDep) -> HTMLResponse:
    base = settings.base_url
    arches = requests.live_arches(session, settings.build_lease_seconds)
    repos = [RepoOut.of(queries.view(repo, base), base, arches) for repo in queries.list_repos(session)]
    return page(request, "repos", repos=repos)


@router.get("/ui/repos/{repo_id}", response_class=HTMLResponse)
def repo_page(request: Request, repo_id: IdPath, session: ReadSessionDep, settings: SettingsDep) -> HTMLResponse:
    repo = queries.get_repo(session, repo_id)
    arches = requests.live_arches(session, settings.build_lease_seconds)
    out = RepoOut.of(queries.view(repo, settings.base_url), settings.base_url, arches)
    dib = dib_snippet(repo, settings.base_url, None) if repo.versions else None
    repo_file = repo_file_text(repo, settings.base_url, None) if repo.versions else None
    builds_of_repo = [BuildOut.of(build, arches) for build in reversed(repo.builds)]
    return page(request, "repo", repo=out, dib=dib, repo_file=repo_file, builds=builds_of_repo)


#: Builds a page of the builds list shows.
BUILDS_PER_PAGE = 50


@router.get("/ui/builds", response_class=HTMLResponse)
def builds_page(
    request: Request,
    session: ReadSessionDep,
    settings: SettingsDep,
    state: Annotated[BuildState | None, Query(description="Only builds in this state")] = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The builds, newest first, a page at a time, with their bundle, how long they took and why one failed."""
    rows = requests.list_builds(session, BUILDS_PER_PAGE + 1, state, (page_number - 1) * BUILDS_PER_PAGE)
    arches = requests.live_arches(session, settings.build_lease_seconds)
    builds = [(BuildOut.of(build, arches), build.repo.bundle_name) for build in rows[:BUILDS_PER_PAGE]]
    return page(
        request, "builds", builds=builds, chosen_state=state.value if state else None,
        states=[each.value for each in BuildState], page_number=page_number, more=len(rows) > BUILDS_PER_PAGE,
    )  # fmt: skip


@router.get("/ui/builds/{build_id}", response_class=HTMLResponse)
def build_page(
    request: Request, build_id: IdPath, session: ReadSessionDep, data: DataDirDep, settings: SettingsDep
) -> HTMLResponse:
    row = requests.get_build(session, build_id)
    build = BuildOut.of(row, requests.live_arches(session, settings.build_lease_seconds))
    log = requests.read_log(data.build_log(build_id))
    text = log.decode("utf-8", "replace")
    live = build.state in ACTIVE_STATES
    return page(request, "build", build=build, bundle=row.bundle, log=text, offset=len(log), live=live)


@router.get("/ui/images", response_class=HTMLResponse)
def images_page(request: Request, session: ReadSessionDep) -> HTMLResponse:
    return page(request, "images", images=[ImageOut.of(image) for image in catalog.list_images(session)])


@router.get("/ui/images/{image_id}", response_class=HTMLResponse)
def image_page(request: Request, image_id: IdPath, session: ReadSessionDep, settings: SettingsDep) -> HTMLResponse:
    image = ImageOut.of(catalog.get_image(session, image_id))
    base = settings.base_url
    found = queries.repos_for_kernel(session, image.default_kernel)
    return page(request, "image", image=image, repos=[RepoOut.of(queries.view(repo, base), base) for repo in found])


@router.get("/ui/bundles", response_class=HTMLResponse)
def bundles_page(request: Request, session: ReadSessionDep) -> HTMLResponse:
    return page(request, "bundles", bundles=[BundleOut.of(bundle) for bundle in store.list_bundles(session)])


@router.get("/ui/bundles/{bundle_id}", response_class=HTMLResponse)
def bundle_page(request: Request, bundle_id: IdPath, session: ReadSessionDep, settings: SettingsDep) -> HTMLResponse:
    bundle = BundleOut.of(store.get_bundle(session, bundle_id))
    base = settings.base_url
    found = queries.repos_of_bundle(session, bundle.name)
    return page(request, "bundle", bundle=bundle, repos=[RepoOut.of(queries.view(repo, base), base) for repo in found])


@router.get("/ui/kernels", response_class=HTMLResponse)
def kernels_page(
    request: Request,
    session: ReadSessionDep,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Every kernel heard of (images, requests, feeds) by every bundle: each cell where that pair stands."""
    shown = matrix.kernel_matrix(session, page_number)
    return page(request, "kernels", matrix=shown, page_number=page_number)


@router.get("/ui/status", response_class=HTMLResponse)
def status_page(request: Request, session: ReadSessionDep, settings: SettingsDep) -> HTMLResponse:
    """The queue by architecture, the live workers with theirs, the kernel feeds."""
    workers = [WorkerOut.model_validate(worker, from_attributes=True)
               for worker in requests.live_workers(session, settings.build_lease_seconds)]  # fmt: skip
    return page(
        request, "status", queue=requests.queue_by_arch(session), workers=workers,
        running=requests.running_by_worker(session),
        feeds=[FeedOut.of(feed) for feed in feeds.list_feeds(session)],
    )  # fmt: skip


@router.get("/ui/feeds", response_class=HTMLResponse)
def feeds_page(request: Request, session: ReadSessionDep, data: DataDirDep) -> HTMLResponse:
    kept = [KeptSourcesOut.of(sources) for sources in kept_sources.list_kept(data)]
    return page(request, "feeds", feeds=[FeedOut.of(feed) for feed in feeds.list_feeds(session)], kept=kept)


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return page(request, "login", error=None)


@router.post("/ui/login", response_class=HTMLResponse, response_model=None)
def login(request: Request, settings: SettingsDep, token: Annotated[str, Form(max_length=512)]) -> Response:
    """Keep a valid token in a cookie the pages' actions send; a wrong one is refused here, not later, and so is
    a login another site's page sends (it would log the browser in under that site's choice of token)."""
    if cross_site(request):
        response = page(request, "login", error="A login must come from this service's own login page.")
        response.status_code = 403
        return response
    if settings.api_tokens and not token_is_valid(token, settings.api_tokens):
        response = page(request, "login", error="That is not one of this service's tokens.")
        response.status_code = 403
        return response
    redirect = RedirectResponse("/", status_code=303)
    secure = settings.base_url.startswith("https://")
    redirect.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=secure, max_age=30 * 86400)
    return redirect


@router.post("/ui/logout")
def logout() -> RedirectResponse:
    redirect = RedirectResponse("/", status_code=303)
    redirect.delete_cookie(TOKEN_COOKIE)
    return redirect
