"""Queries over repos and their versions; the API and the CLI call these and write no SQL."""

from dataclasses import dataclass
from functools import cmp_to_key

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ofedrepo.bundles.names import BundleIdentity, compare_ofed_versions, parse_bundle_name
from ofedrepo.bundles.vendors import vendor_of
from ofedrepo.errors import InvalidBundleName, NotFound
from ofedrepo.kinds import BundleKind
from ofedrepo.models import Repo, RepoVersion
from ofedrepo.repos.repofile import RepoLocation
from ofedrepo.storage import LATEST


def find_repo(session: Session, identity: BundleIdentity, kernel: str) -> Repo | None:
    query = select(Repo).where(Repo.bundle_name == identity.name, Repo.kernel == kernel)
    return session.scalars(query).one_or_none()


def get_or_create_repo(session: Session, identity: BundleIdentity, kernel: str) -> Repo:
    """The repo row of (bundle, kernel); safe when two processes create it at once."""
    query = select(Repo).where(Repo.bundle_name == identity.name, Repo.kernel == kernel)
    repo = session.scalars(query).one_or_none()
    if repo is not None:
        return repo
    try:
        with session.begin_nested():
            repo = Repo(
                bundle_name=identity.name,
                kernel=kernel,
                ofed_version=identity.ofed_version,
                distro=identity.distro,
                arch=identity.arch,
            )
            session.add(repo)
    except IntegrityError:
        repo = session.scalars(query).one()
    return repo


def latest_version(session: Session, repo_id: int) -> RepoVersion | None:
    query = select(RepoVersion).where(RepoVersion.repo_id == repo_id).order_by(RepoVersion.number.desc()).limit(1)
    return session.scalars(query).first()


def version_of_build(session: Session, build_id: int) -> RepoVersion | None:
    """The version a build published, if it did (its worker may have died before recording the end)."""
    return session.scalars(select(RepoVersion).where(RepoVersion.build_id == build_id).limit(1)).first()


def recorded_numbers(session: Session, repo_id: int) -> set[int]:
    return set(session.scalars(select(RepoVersion.number).where(RepoVersion.repo_id == repo_id)))


def highest_number(session: Session, repo_id: int) -> int:
    query = select(func.max(RepoVersion.number)).where(RepoVersion.repo_id == repo_id)
    return session.scalar(query) or 0


def published_for(
    session: Session, kernel: str, distro: str, arch: str, ofed_version: str | None, kind: BundleKind | None
) -> Repo | None:
    """The repo with a version for ``kernel`` that fits (the newest OFED version unless one is named; of ``kind``
    when given; a distro its vendor says the repo's bundle serves), however it was published: the answer to a
    request no registered bundle can build, after ``ofedrepo publish``."""
    query = select(Repo).where(Repo.kernel == kernel, Repo.arch == arch, Repo.versions.any())
    if ofed_version:
        query = query.where(Repo.ofed_version == ofed_version)

    def fits(repo: Repo) -> bool:
        try:
            repo_kind = parse_bundle_name(repo.bundle_name).identity.kind
        except InvalidBundleName:
            return False
        return (kind is None or repo_kind == kind) and vendor_of(repo_kind).fits_distro(repo.distro, distro)

    def newer_first(left: Repo, right: Repo) -> int:
        return compare_ofed_versions(right.ofed_version, left.ofed_version)

    repos = sorted(filter(fits, session.scalars(query)), key=cmp_to_key(newer_first))
    return repos[0] if repos else None


def repos_for_kernel(session: Session, kernel: str) -> list[Repo]:
    """Every bundle's repo for ``kernel`` (an image's page links them)."""
    query = select(Repo).where(Repo.kernel == kernel).options(selectinload(Repo.versions), selectinload(Repo.builds))
    return list(session.scalars(query.order_by(Repo.id)))


def repos_of_bundle(session: Session, bundle_name: str) -> list[Repo]:
    """Every kernel's repo of the bundle named ``bundle_name`` (its page lists them)."""
    query = select(Repo).where(Repo.bundle_name == bundle_name)
    query = query.options(selectinload(Repo.versions), selectinload(Repo.builds))
    return list(session.scalars(query.order_by(Repo.id)))


def list_repos(session: Session) -> list[Repo]:
    query = select(Repo).options(selectinload(Repo.versions), selectinload(Repo.builds)).order_by(Repo.id)
    return list(session.scalars(query))


def get_repo(session: Session, repo_id: int) -> Repo:
    query = select(Repo).where(Repo.id == repo_id).options(selectinload(Repo.versions), selectinload(Repo.builds))
    repo = session.scalars(query).one_or_none()
    if repo is None:
        raise NotFound(f"repo {repo_id} does not exist")
    return repo


@dataclass(frozen=True)
class RepoView:
    """A repo as clients see it: state, versions and the URLs to hand to yum and DIB."""

    repo: Repo
    latest: RepoLocation

    @property
    def state(self) -> str:
        if self.repo.versions:
            return "published"
        if self.repo.builds:
            return self.repo.builds[-1].state
        return "empty"


def view(repo: Repo, base_url: str) -> RepoView:
    return RepoView(repo=repo, latest=RepoLocation(base_url, repo.bundle_name, repo.kernel, LATEST))


def version_location(repo: Repo, base_url: str, number: int | None) -> tuple[RepoLocation, RepoVersion]:
    """The location of version ``number`` (the latest when None); NotFound when there is none."""
    if not repo.versions:
        raise NotFound(f"repo {repo.id} has no published version yet")
    if number is None:
        return RepoLocation(base_url, repo.bundle_name, repo.kernel, LATEST), repo.versions[-1]
    for version in repo.versions:
        if version.number == number:
            return RepoLocation(base_url, repo.bundle_name, repo.kernel, str(number)), version
    raise NotFound(f"repo {repo.id} has no version {number}")
