"""The kernels by bundles matrix: for every kernel ofedrepo has heard of (inspected images, requests and builds,
kernel feeds) and every registered bundle, where that pair stands. What Koji or Copr show at a glance: which
kernels have modules for which bundles, what is building, what failed and why, what does not fit.

``cell`` is pure; ``kernel_matrix`` reads the rows it needs in a few queries (no query per cell).
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ofedrepo.bundles.vendors import vendor_of
from ofedrepo.distro import ofed_distro_for_kernel
from ofedrepo.errors import InvalidKernelRelease
from ofedrepo.kernel import KernelRelease, parse_kernel_release
from ofedrepo.models import ACTIVE_STATES, Build, BuildState, Bundle, Image, KernelFeed, Repo, RepoVersion

#: Rows a page shows, the newest kernels first.
KERNELS_PER_PAGE = 100


@dataclass(frozen=True)
class Cell:
    """Where one (kernel, bundle) pair stands: ``state`` is a build state, ``published``, ``not built`` or
    ``does not fit``; ``link`` the page to open; ``note`` the version, the failure or when it started."""

    state: str
    link: str | None = None
    note: str = ""
    since: datetime | None = None
    """When its build started (running) or was queued: the page shows the time elapsed."""


@dataclass(frozen=True)
class Row:
    kernel: str
    sources: list[str]
    """Where ofedrepo heard of it: ``image``, ``request``, ``feed``."""
    cells: list[Cell]


@dataclass(frozen=True)
class Matrix:
    bundles: list[Bundle]
    rows: list[Row]
    more: bool = False
    """Older kernels follow on the next page."""


def fits(bundle: Bundle, kernel: KernelRelease) -> bool:
    """Whether ``bundle`` serves ``kernel``: its arch, and a distro its vendor says fits the kernel's."""
    distro = ofed_distro_for_kernel(kernel)
    if kernel.arch != bundle.arch or distro is None:
        return False
    return vendor_of(bundle.kind).fits_distro(bundle.distro, distro.tag)


def cell(fitting: bool, latest_build: Build | None, published: RepoVersion | None, repo: Repo | None) -> Cell:
    """One pair's cell: a build under way first, then a published version, then the last build's failure."""
    if latest_build is not None and latest_build.state in ACTIVE_STATES:
        since = latest_build.started_at if latest_build.state == BuildState.RUNNING else latest_build.created_at
        return Cell(latest_build.state.value, f"/ui/builds/{latest_build.id}", since=since)
    if published is not None and repo is not None:
        return Cell("published", f"/ui/repos/{repo.id}", f"version {published.number}")
    if latest_build is not None and latest_build.state in (BuildState.FAILED, BuildState.CANCELLED):
        return Cell(latest_build.state.value, f"/ui/builds/{latest_build.id}", latest_build.error or "")
    return Cell("not built" if fitting else "does not fit")


def kernel_matrix(session: Session, page: int = 1) -> Matrix:
    """Page ``page`` (from 1) of the matrix: ``KERNELS_PER_PAGE`` kernels, the newest first.

    A kernel's sources: ``image`` (an inspected image boots it), ``request`` (a person's or an image's request,
    or a repo published from an `-ext` bundle), ``feed`` (a kernel feed offers it; what a feed queued is not
    a request)."""
    bundles = list(session.scalars(select(Bundle).order_by(Bundle.id)))
    heard: dict[str, set[str]] = {}

    def hear(kernel: str, source: str) -> None:
        heard.setdefault(kernel, set()).add(source)

    for image in session.scalars(select(Image)):
        hear(image.default_kernel, "image")
    asked = select(Build.kernel).where(Build.feed_id.is_(None))
    published_unbuilt = select(Repo.kernel).where(~Repo.builds.any())
    for kernel in session.scalars(asked.union(published_unbuilt)):
        hear(kernel, "request")
    for feed in session.scalars(select(KernelFeed)):
        for kernel in feed.kernels:
            hear(kernel, "feed")
    releases = []
    for text in heard:
        try:
            releases.append(parse_kernel_release(text))
        except InvalidKernelRelease:  # stored by an older grammar: not shown
            continue
    first = (page - 1) * KERNELS_PER_PAGE
    ordered = sorted(releases, reverse=True)
    releases = ordered[first : first + KERNELS_PER_PAGE]
    wanted = [release.text for release in releases]
    latest: dict[tuple[int, str], Build] = {}
    for build in session.scalars(select(Build).where(Build.kernel.in_(wanted)).order_by(Build.id)):
        if build.bundle_id is not None:
            latest[(build.bundle_id, build.kernel)] = build
    repos = {
        (repo.bundle_name, repo.kernel): repo for repo in session.scalars(select(Repo).where(Repo.kernel.in_(wanted)))
    }
    newest_versions = {
        version.repo_id: version
        for version in session.scalars(
            select(RepoVersion)
            .where(RepoVersion.repo_id.in_([repo.id for repo in repos.values()]))
            .order_by(RepoVersion.number)
        )
    }
    rows = []
    for release in releases:
        cells = []
        for bundle in bundles:
            repo = repos.get((bundle.name, release.text))
            published = newest_versions.get(repo.id) if repo is not None else None
            cells.append(cell(fits(bundle, release), latest.get((bundle.id, release.text)), published, repo))
        rows.append(Row(release.text, sorted(heard[release.text]), cells))
    return Matrix(bundles, rows, more=len(ordered) > first + KERNELS_PER_PAGE)
