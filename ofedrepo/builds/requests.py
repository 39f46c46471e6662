"""Repo requests and builds: which bundle fits, the cache key, and the transitions clients cause.

A request names a kernel, or an image whose default kernel and distro are known. The bundle is chosen by
distro tag and arch (the newest OFED version unless one is named). The cache key is (bundle sha256, kernel,
builder fingerprint): a succeeded build for it answers at once; an active (queued or running) one is
shared, which a partial unique index guarantees even when requests race; ``force`` asks for a new build.
A kernel the bundle already holds modules for (its GA kernel) gets a build with ``rebuild`` false: the
worker publishes the bundle's own packages, no compile.

A new build is born ``queued`` here; every transition after that is in ``ofedrepo.builds.lifecycle``.
"""

import hashlib
import json
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from functools import cmp_to_key
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ofedrepo.builds import lifecycle
from ofedrepo.bundles.names import BundleIdentity, compare_ofed_versions
from ofedrepo.bundles.vendors import vendor_of
from ofedrepo.config import Settings
from ofedrepo.distro import compare_distros, ofed_distro_for_kernel, parse_ofed_distro
from ofedrepo.errors import InvalidInput, NotFound
from ofedrepo.kernel import parse_kernel_release
from ofedrepo.kinds import BundleKind
from ofedrepo.models import ACTIVE_STATES, Build, BuildState, Bundle, Image, Priority, Worker, utcnow
from ofedrepo.repos import queries

log = logging.getLogger(__name__)

#: Changes whenever the way ofedrepo builds changes in a way that should produce new versions.
BUILDER_REVISION = "2"


@dataclass(frozen=True)
class RepoRequest:
    kernel: str | None = None
    image_id: int | None = None
    ofed_version: str | None = None
    distro: str | None = None
    arch: str | None = None
    bundle_id: int | None = None
    kind: BundleKind | None = None
    """``mlnx_ofed`` or ``doca`` to choose among bundles of both kinds; None: the newest driver of either."""
    force: bool = False
    priority: int = Priority.REQUEST
    feed_id: int | None = None
    """The kernel feed asking (``ofedrepo.builds.feeds``), when no person is."""


@dataclass(frozen=True)
class RequestOutcome:
    """The repo asked for, and its build: ``ready`` when a succeeded build already answers the request.

    ``build_id`` is None for a repo published from an ``-ext`` bundle (``ofedrepo publish``): no build made it.
    """

    repo_id: int
    build_id: int | None
    ready: bool
    queued: bool = False
    """This request queued a new build (not an answer from one already built or under way)."""


def container_image(settings: Settings, distro: str) -> str:
    """The builder image for a distro tag: the exact tag's, else its major's (``rhel8.6`` → ``rhel8``)."""
    images = settings.build_container_images
    major = distro.split(".", 1)[0]
    if distro in images:
        return images[distro]
    if major in images:
        return images[major]
    raise InvalidInput(
        f"no builder container image for {distro}: add {major}=<image> to OFEDREPO_BUILD_CONTAINER_IMAGES"
    )


def builder_fingerprint(settings: Settings, distro: str, tool_sha256: str | None = None) -> str:
    """What, besides the bundle and the kernel, decides the build's output: runner, image, library set,
    the module signing certificate, our revision, and the rebuild tool's own checksum where the tool is a
    package of its own (DOCA's doca-kernel-support, versioned apart from the driver it builds)."""
    parts = {"revision": BUILDER_REVISION, "runner": settings.build_runner, "libraries": settings.bundle_libraries}
    if tool_sha256:
        parts["tool"] = tool_sha256
    if settings.build_runner != "local":
        parts["image"] = container_image(settings, distro)
    if settings.module_sign_pub_key is not None:
        parts["module_signing"] = str(settings.module_sign_pub_key)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def fits_distro(bundle: Bundle, distro: str) -> bool:
    """Whether ``bundle`` serves images of the distro tag ``distro``, as its vendor says."""
    return vendor_of(bundle.kind).fits_distro(bundle.distro, distro)


def choose_bundle(
    bundles: list[Bundle], distro: str, arch: str, ofed_version: str | None, kind: BundleKind | None = None
) -> Bundle:
    """The newest bundle for (distro, arch), or the named version; 422 listing candidates when none or a tie.

    MLNX_OFED bundles and DOCA repositories compete on their OFED driver version (DOCA's is newer than
    MLNX_OFED's last, 24.10) unless ``kind`` names one."""
    fitting = [bundle for bundle in bundles if fits_distro(bundle, distro) and bundle.arch == arch]
    if ofed_version:
        fitting = [bundle for bundle in fitting if bundle.ofed_version == ofed_version]
    if kind:
        fitting = [bundle for bundle in fitting if bundle.kind == kind]
    if not fitting:
        available = ", ".join(sorted(f"{bundle.name} (id {bundle.id})" for bundle in bundles)) or "none registered"
        wanted = f"{distro} {arch}" + (f" OFED {ofed_version}" if ofed_version else "") + (f" {kind}" if kind else "")
        raise InvalidInput(f"no MLNX_OFED bundle or DOCA-OFED repository fits {wanted}; bundles: {available}")

    def newer_first(left: Bundle, right: Bundle) -> int:
        """The newer OFED version first; of one version, the newer distro (a kernel naming a major release alone,
        as UEK's does, is fitted by the bundles of every minor: the newest minor's userspace is the best guess)."""
        by_version = compare_ofed_versions(right.ofed_version, left.ofed_version)
        return by_version or compare_distros(right.distro, left.distro)

    ordered = sorted(fitting, key=cmp_to_key(newer_first))
    first = (ordered[0].ofed_version, ordered[0].distro)
    newest = [bundle for bundle in ordered if (bundle.ofed_version, bundle.distro) == first]
    if len(newest) > 1:
        listed = ", ".join(f"id {bundle.id} (sha256 {bundle.sha256[:12]})" for bundle in newest)
        raise InvalidInput(
            f'several bundles are {newest[0].name} and none can be preferred: {listed}; pass "bundle_id"'
        )
    return newest[0]


def identity_of(bundle: Bundle) -> BundleIdentity:
    return BundleIdentity(bundle.ofed_version, bundle.distro, bundle.arch, bundle.kind, bundle.doca_version)


def resolve_target(session: Session, request: RepoRequest) -> tuple[str, str, str, Image | None]:
    """(kernel, distro tag, arch, image) for a request; each given value is validated first."""
    if (request.kernel is None) == (request.image_id is None):
        raise InvalidInput('give exactly one of "kernel" and "image_id"')
    image = None
    if request.image_id is not None:
        image = session.get(Image, request.image_id)
        if image is None:
            raise NotFound(f"no image with id {request.image_id}")
        kernel = parse_kernel_release(image.default_kernel)
    else:
        assert request.kernel is not None
        kernel = parse_kernel_release(request.kernel)
    if request.distro:
        distro = parse_ofed_distro(request.distro).tag
    elif image is not None and image.ofed_distro:
        distro = image.ofed_distro
    else:
        from_kernel = ofed_distro_for_kernel(kernel)
        if from_kernel is None:
            raise InvalidInput(f'cannot tell the MLNX_OFED distro of kernel {kernel}: pass "distro" (e.g. rhel8.6)')
        distro = from_kernel.tag
    arch = request.arch or kernel.arch or (image.arch if image else None)
    if not arch:
        raise InvalidInput(f'cannot tell the architecture of kernel {kernel}: pass "arch"')
    if kernel.arch and arch != kernel.arch:
        raise InvalidInput(f"kernel {kernel} is {kernel.arch}, not {arch}")
    return kernel.text, distro, arch, image


def request_repo(session: Session, settings: Settings, request: RepoRequest) -> RequestOutcome:
    """Find or enqueue the build that gives ``request`` its repo; commits."""
    outcome = _answer(session, settings, request, read_only=False)
    assert outcome is not None
    return outcome


def answer_without_writing(session: Session, settings: Settings, request: RepoRequest) -> RequestOutcome | None:
    """``request_repo``'s answer when it needs no write (the repo is published or its build is under way), in a
    read-only session; None when only ``request_repo`` can answer. Most requests are of this kind (an image
    build asking for a kernel that was built long ago), and on SQLite a write would queue them one by one."""
    return _answer(session, settings, request, read_only=True)


def _answer(session: Session, settings: Settings, request: RepoRequest, read_only: bool) -> RequestOutcome | None:
    kernel, distro, arch, image = resolve_target(session, request)
    candidates = list(session.scalars(select(Bundle)))
    if request.bundle_id is not None:
        candidates = [bundle for bundle in candidates if bundle.id == request.bundle_id]
        if not candidates:
            raise NotFound(f"no bundle with id {request.bundle_id}")
    try:
        bundle = choose_bundle(candidates, distro, arch, request.ofed_version, request.kind)
    except InvalidInput:
        published = (
            None
            if request.bundle_id or request.force
            else queries.published_for(session, kernel, distro, arch, request.ofed_version, request.kind)
        )
        if published is None:
            raise
        return RequestOutcome(published.id, None, ready=True)
    fingerprint = builder_fingerprint(settings, bundle.distro, bundle.tool_sha256)
    identity = identity_of(bundle)
    if read_only:
        found = queries.find_repo(session, identity, kernel)
        if found is None or found.bundle_id is None:
            return None
        repo = found
    else:
        repo = queries.get_or_create_repo(session, identity, kernel)
    if repo.bundle_id is None:
        repo.bundle_id = bundle.id
    key = (Build.bundle_id == bundle.id, Build.kernel == kernel, Build.fingerprint == fingerprint)
    active = session.scalars(select(Build).where(*key, Build.state.in_(ACTIVE_STATES))).first()
    if active is not None:
        if active.priority < request.priority:
            if read_only:
                return None
            lifecycle.lift(session, active.id, request.priority)
        session.commit()
        return RequestOutcome(repo.id, active.id, ready=False)
    if not request.force:
        done = session.scalars(
            select(Build).where(*key, Build.state == BuildState.SUCCEEDED).order_by(Build.id.desc())
        ).first()
        if done is not None and repo.versions:
            session.commit()
            return RequestOutcome(repo.id, done.id, ready=True)
    if read_only:
        return None
    build = Build(
        repo_id=repo.id,
        bundle_id=bundle.id,
        kernel=kernel,
        fingerprint=fingerprint,
        image_id=image.id if image else None,
        rebuild=kernel not in bundle.supported_kernels,
        priority=request.priority,
        feed_id=request.feed_id,
    )
    try:
        with session.begin_nested():
            session.add(build)
    except IntegrityError:
        # A concurrent identical request enqueued it first: share that build.
        active = session.scalars(select(Build).where(*key, Build.state.in_(ACTIVE_STATES))).first()
        if active is None:
            raise
        session.commit()
        return RequestOutcome(repo.id, active.id, ready=False)
    session.commit()
    asked_by = f"kernel feed {request.feed_id}" if request.feed_id is not None else "a request"
    log.info("build %d queued by %s: %s for %s", build.id, asked_by, bundle.name, kernel)
    return RequestOutcome(repo.id, build.id, ready=False, queued=True)


def get_build(session: Session, build_id: int) -> Build:
    build = session.get(Build, build_id)
    if build is None:
        raise NotFound(f"no build with id {build_id}")
    return build


def list_builds(session: Session, limit: int = 200, state: BuildState | None = None, skip: int = 0) -> list[Build]:
    """The newest ``limit`` builds (of ``state`` when given) after the newest ``skip``, newest first."""
    query = select(Build).order_by(Build.id.desc()).offset(skip).limit(limit)
    return list(session.scalars(query if state is None else query.where(Build.state == state)))


def queue_by_arch(session: Session) -> dict[str, dict[str, int]]:
    """Queued and running builds by their bundle's architecture: ``{"x86_64": {"queued": 3, "running": 1}}``."""
    counts: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(Bundle.arch, Build.state, func.count())
        .join(Bundle, Build.bundle_id == Bundle.id)
        .where(Build.state.in_(ACTIVE_STATES))
        .group_by(Bundle.arch, Build.state)
    )
    for arch, state, count in rows:
        counts.setdefault(arch, {})[BuildState(state).value] = count
    return counts


def running_by_worker(session: Session) -> dict[str, list[Build]]:
    """The builds each worker runs now, oldest first: ``{worker id: [build, ...]}``."""
    running: dict[str, list[Build]] = {}
    for build in session.scalars(select(Build).where(Build.state == BuildState.RUNNING).order_by(Build.started_at)):
        if build.worker_id is not None:
            running.setdefault(build.worker_id, []).append(build)
    return running


def read_log(log_file: Path, offset: int = 0, limit: int = 4 * 1024 * 1024) -> bytes:
    """The build log from ``offset`` (for clients following it as it grows); empty before it starts, and from
    an offset at or past its end (the end is compared first: seeking far past it fails with EINVAL)."""
    try:
        with log_file.open("rb") as reader:
            if offset >= os.fstat(reader.fileno()).st_size:
                return b""
            reader.seek(offset)
            return reader.read(limit)
    except FileNotFoundError:
        return b""


def live_workers(session: Session, within_seconds: float) -> list[Worker]:
    """Workers whose heartbeat is recent (the health endpoint's list)."""
    cutoff = utcnow() - timedelta(seconds=within_seconds)
    return list(session.scalars(select(Worker).where(Worker.heartbeat_at >= cutoff).order_by(Worker.started_at)))


def live_arches(session: Session, within_seconds: float) -> frozenset[str]:
    """The architectures the live workers build: read once for a whole answer (``waiting_reason``)."""
    return frozenset(arch for worker in live_workers(session, within_seconds) for arch in worker.arches)


def waiting_reason(build: Build, arches: Collection[str]) -> str | None:
    """Why a queued build is not taken, when no live worker builds for its bundle's architecture (``arches``:
    ``live_arches``); None otherwise (it waits for a free slot, if at all)."""
    if build.state != BuildState.QUEUED or build.bundle is None or build.bundle.arch in arches:
        return None
    arch = build.bundle.arch
    return f"no {arch} worker: it waits for a worker declared for {arch} (OFEDREPO_WORKER_ARCHES)"
