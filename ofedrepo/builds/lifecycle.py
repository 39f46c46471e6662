"""The build state machine: every transition of a build, in one place (as pulpcore's ``Task`` keeps its own).

    (request) ──> queued ──claim──> running ──finish──> succeeded | failed | cancelled
                    │  ^               │  │
           cancel   │  └──release──────┘  └──reap (lease expired)──> queued, or failed past the attempts
                    v     (preempted, worker stopping, the database failing under it)
                cancelled

Every transition is one conditional UPDATE that names the state it expects (and, once claimed, the worker
that owns the build); a transition that changes no row did not happen. That, not locking, is what keeps two
workers from owning one build:

- enqueue (``ofedrepo.builds.requests``): a new row is ``queued``; a person's request for what a kernel feed
  queued ``lift``s it to the request's priority.
- claim: ``queued`` and unowned → ``running``, owned, attempts + 1, lease set; the highest ``priority`` first
  (people's requests before what kernel feeds queue), then the oldest. On PostgreSQL the candidate is
  picked with ``FOR UPDATE SKIP LOCKED`` so claimers never wait on each other; SQLAlchemy drops that clause
  on SQLite, where the ``BEGIN IMMEDIATE`` transaction serialises claimers and the repeated conditions in
  the UPDATE keep it correct.
- heartbeat: renews the leases of the builds a worker is running (not of every build it owns: one whose slot
  died must expire) and reports which of them a client cancelled, which are no longer its own, and which a
  person's request waiting for a slot preempts (the most recently started builds a kernel feed queued, one
  per waiting request, on workers that build the request's architecture, chosen the same way by every worker
  so that no more are stopped than needed).
- cancel (a client): ``queued`` → ``cancelled`` at once; ``running`` → ``cancel_requested``, which its worker
  acts on, unless the build has already published its version (then the cancel is refused: 409). The flag
  outlives its worker: whatever ends or requeues a build that carries it (release, reap, a finish as
  ``succeeded`` that published nothing new, or as ``failed``: its process died before it could stop) makes it
  ``cancelled`` instead, so a cancel answered 202 is never followed by another run nor by another end.
- release (a preempted or stopping worker's build): ``running`` and mine → ``queued``; a preempted attempt
  does not count towards ``build_max_attempts``.
- reap (any worker, periodically): a ``running`` build whose lease expired lost its worker (killed, host
  gone): back to ``queued`` while attempts remain, else ``failed``.
- hold (inside a publish's transaction): renew my lease, or learn that the build is no longer mine or that a
  client cancelled it; a worker cut off from the database long enough to lose its lease can therefore never
  publish for it afterwards, and a cancel is either in time to stop the publish or refused.
- finish: ``running`` and owned by me → ``succeeded``/``failed``/``cancelled``.

Why a running build stops before its end is a ``StopReason``.
"""

import os
import socket
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from ofedrepo.db import transaction
from ofedrepo.errors import Conflict, NotFound
from ofedrepo.models import Build, BuildState, Bundle, Priority, RepoVersion, Worker, utcnow

QUEUED, RUNNING = BuildState.QUEUED, BuildState.RUNNING
_NO_SYNC = {"synchronize_session": False}


class StopReason(StrEnum):
    """Why a running build is stopped before its end (and what becomes of it)."""

    CANCELLED = "cancelled"
    """A client cancelled it: ``cancelled``."""
    LEASE_LOST = "lease lost"
    """Its lease expired (its worker was cut off): another worker owns it now; nothing is recorded."""
    PREEMPTED = "preempted"
    """A kernel feed queued it and a person's request needs the slot: back to ``queued``, the attempt not counted."""
    WORKER_STOPPING = "worker stopping"
    """Its worker shuts down: back to ``queued``."""
    TIMED_OUT = "timed out"
    """It ran past ``OFEDREPO_BUILD_TIMEOUT``: ``failed``."""
    SCRATCH_FULL = "scratch full"
    """Its tool's scratch grew past ``OFEDREPO_BUILD_MAX_SCRATCH_BYTES``: ``failed``."""


def new_worker_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def register(sessions: sessionmaker[Session], worker_id: str, concurrency: int, arches: Sequence[str] = ()) -> None:
    """Say that this worker is alive, how many builds it runs at once and for which architectures."""
    with transaction(sessions) as session:
        session.add(_worker_row(worker_id, concurrency, arches))


def _worker_row(worker_id: str, concurrency: int, arches: Sequence[str]) -> Worker:
    return Worker(
        id=worker_id, hostname=socket.gethostname()[:255], pid=os.getpid(), concurrency=concurrency, arches=list(arches)
    )


def unregister(sessions: sessionmaker[Session], worker_id: str) -> None:
    with transaction(sessions) as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))


def claim(
    sessions: sessionmaker[Session], worker_id: str, lease_seconds: float, arches: Collection[str] | None = None
) -> int | None:
    """Take the queued build of the highest priority, the oldest first, among those whose bundle is of one of
    ``arches`` (None: of any); its id, or None when there is none."""
    now = utcnow()
    queued = aliased(Build)
    buildable = [] if arches is None else [queued.bundle_id.in_(select(Bundle.id).where(Bundle.arch.in_(arches)))]
    candidate = (
        select(queued.id)
        .where(queued.state == QUEUED, queued.worker_id.is_(None), *buildable)
        .order_by(queued.priority.desc(), queued.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(Build)
        .where(Build.id == candidate, Build.state == QUEUED, Build.worker_id.is_(None))
        .values(
            state=RUNNING,
            worker_id=worker_id,
            attempts=Build.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
        )
        .returning(Build.id)
        .execution_options(**_NO_SYNC)
    )
    with transaction(sessions) as session:
        return session.execute(statement).scalar_one_or_none()


@dataclass(frozen=True)
class Beat:
    """What one heartbeat found: builds clients cancelled, and builds that are no longer this worker's."""

    cancelled: set[int]
    lost: set[int]
    """Running here, but their lease was not renewed: reaped meanwhile (another worker may own them now)."""
    preempted: set[int] = field(default_factory=set)
    """Running here, queued by a kernel feed, and wanted back in the queue: a person's request waits for a slot."""


def heartbeat(
    sessions: sessionmaker[Session],
    worker_id: str,
    lease_seconds: float,
    running: set[int],
    preempt_after: float | None = None,
    concurrency: int = 0,
    arches: Sequence[str] = (),
) -> Beat:
    """Renew the leases of the builds this worker is running, and its own liveness.

    Only ``running`` builds are renewed: a build whose slot died is left to expire, so that the reaper gives it to
    another worker instead of this heartbeat keeping it ``running`` for ever. An update that touches fewer rows than
    expected says what is no longer ours; a worker row that is gone (forgotten by a reaper while this worker could
    not reach the database) is registered again, with ``concurrency`` and ``arches``. With ``preempt_after``, a
    request queued that long ago with no slot free preempts a feed's build (see the module's docstring).
    """
    now = utcnow()
    with transaction(sessions) as session:
        renewed = set(
            session.scalars(
                update(Build)
                .where(Build.worker_id == worker_id, Build.state == RUNNING, Build.id.in_(running))
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                .returning(Build.id)
                .execution_options(**_NO_SYNC)
            )
        )
        alive = session.execute(
            update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now).execution_options(**_NO_SYNC)
        )
        if not alive.rowcount:  # type: ignore[attr-defined]
            session.add(_worker_row(worker_id, concurrency, arches))
        cancelled = session.scalars(
            select(Build.id).where(Build.worker_id == worker_id, Build.state == RUNNING, Build.cancel_requested)
        )
        preempted = _preempted(session, worker_id, now - timedelta(seconds=preempt_after)) if preempt_after else set()
        return Beat(cancelled=set(cancelled), lost=running - renewed, preempted=preempted & renewed)


def _preempted(session: Session, worker_id: str, waiting_since: datetime) -> set[int]:
    """My feed builds that requests waiting since ``waiting_since`` take the slots of: for each waiting request,
    the most recently started feed build (not given to another request yet) on a worker that builds the request's
    architecture (a worker that declares none builds any); the same answer for every worker."""
    waiting = session.execute(
        select(Bundle.arch, func.count())
        .select_from(Build)
        .join(Bundle, Build.bundle_id == Bundle.id)
        .where(Build.state == QUEUED, Build.priority >= Priority.REQUEST, Build.created_at <= waiting_since)
        .group_by(Bundle.arch)
        .order_by(Bundle.arch)
    ).all()
    if not waiting:
        return set()
    builds_arches = {worker.id: set(worker.arches) for worker in session.scalars(select(Worker))}
    victims = session.execute(
        select(Build.id, Build.worker_id)
        .where(Build.state == RUNNING, Build.priority < Priority.REQUEST)
        .order_by(Build.started_at.desc(), Build.id.desc())
    ).all()
    taken: set[int] = set()
    mine: set[int] = set()
    for arch, count in waiting:
        able = [
            (build_id, owner)
            for build_id, owner in victims
            if build_id not in taken and (not builds_arches.get(owner or "") or arch in builds_arches[owner or ""])
        ][:count]
        taken |= {build_id for build_id, _ in able}
        mine |= {build_id for build_id, owner in able if owner == worker_id}
    return mine


def hold(session: Session, build_id: int, worker_id: str, lease_seconds: float) -> StopReason | None:
    """In the caller's transaction: renew my lease of a running build that no client cancelled; None when
    done, else why the build may not go on (``CANCELLED``, or ``LEASE_LOST`` when it is no longer mine).

    The fence a publish goes through: the update's row lock lasts until the caller commits, so no reaper,
    claimer or cancel can touch the build between this check and the version the same transaction records;
    a cancel that comes after finds the version and is refused (``cancel``).
    """
    result = session.execute(
        update(Build)
        .where(Build.id == build_id, Build.worker_id == worker_id, Build.state == RUNNING, ~Build.cancel_requested)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(**_NO_SYNC)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return None
    cancelled = session.scalar(
        select(Build.id).where(Build.id == build_id, Build.worker_id == worker_id, Build.cancel_requested)
    )
    return StopReason.CANCELLED if cancelled is not None else StopReason.LEASE_LOST


def cancel(session: Session, build_id: int) -> Build:
    """A queued build is cancelled at once; a running one is asked to stop (its worker kills it within
    seconds), unless it has already published its version: then it is too late (``Conflict``, a 409), never a
    cancel accepted and ignored."""
    build = session.get(Build, build_id)
    if build is None:
        raise NotFound(f"no build with id {build_id}")
    # The build's row first, locked (PostgreSQL; SQLite's write transaction already excludes the publish's): a
    # publish holding it commits its version before this goes on, and the version is then looked for in a
    # statement of its own, which sees that commit. In one UPDATE, the version's absence would be judged on a
    # snapshot taken before the lock was granted.
    state = session.scalar(select(Build.state).where(Build.id == build_id).with_for_update())
    published = session.scalar(select(RepoVersion.id).where(RepoVersion.build_id == build_id).limit(1))
    values: dict[str, Any]
    if state == QUEUED:
        values = {"state": BuildState.CANCELLED, "finished_at": utcnow(), "error": "cancelled while queued"}
    elif state == RUNNING and published is None:
        values = {"cancel_requested": True}
    else:
        session.rollback()
        if state == RUNNING:
            raise Conflict(f"build {build_id} has already published its version: too late to cancel it")
        if state != BuildState.CANCELLED:
            raise Conflict(f"build {build_id} has already {state}")
        session.refresh(build)
        return build
    session.execute(
        update(Build).where(Build.id == build_id, Build.state == state).values(**values).execution_options(**_NO_SYNC)
    )
    session.commit()
    session.refresh(build)
    return build


def lift(session: Session, build_id: int, priority: int) -> None:
    """In the caller's transaction: a queued or running build gets at least ``priority`` (a person now waits
    for what a kernel feed queued, which goes before the feed's other builds)."""
    session.execute(
        update(Build)
        .where(Build.id == build_id, Build.priority < priority)
        .values(priority=priority)
        .execution_options(**_NO_SYNC)
    )


def attempt(session: Session, build_id: int) -> int:
    """The number of the build's current (or last) attempt: what its leftovers are named after."""
    return session.scalar(select(Build.attempts).where(Build.id == build_id)) or 0


def attempt_is_running(session: Session, build_id: int, attempt: int) -> bool:
    """Whether attempt ``attempt`` of the build is the one running now, under a lease not yet expired."""
    found = session.scalar(
        select(Build.id).where(
            Build.id == build_id, Build.state == RUNNING, Build.attempts == attempt, Build.lease_expires_at > utcnow()
        )
    )
    return found is not None


@dataclass(frozen=True)
class Reaped:
    """What one ``reap`` did with the builds whose lease expired."""

    requeued: list[int]
    failed: list[int]
    """Past ``build_max_attempts``."""
    cancelled: list[int] = field(default_factory=list)
    """Cancelled by a client before their worker was lost."""


def reap(sessions: sessionmaker[Session], max_attempts: int, worker_timeout: float) -> Reaped:
    """Re-queue (or fail, past ``max_attempts``) running builds whose lease expired, and end as ``cancelled``
    those a client had cancelled; forget dead workers."""
    now = utcnow()
    expired = (Build.state == RUNNING, Build.lease_expires_at < now)
    with transaction(sessions) as session:
        cancelled = session.scalars(
            update(Build)
            .where(*expired, Build.cancel_requested)
            .values(
                state=BuildState.CANCELLED,
                finished_at=now,
                lease_expires_at=None,
                error="cancelled while running (its worker stopped answering before it stopped the build)",
            )
            .returning(Build.id)
            .execution_options(**_NO_SYNC)
        ).all()
        requeued = session.scalars(
            update(Build)
            .where(*expired, Build.attempts < max_attempts)
            .values(state=QUEUED, worker_id=None, lease_expires_at=None)
            .returning(Build.id)
            .execution_options(**_NO_SYNC)
        ).all()
        failed = session.scalars(
            update(Build)
            .where(*expired, Build.attempts >= max_attempts)
            .values(
                state=BuildState.FAILED,
                finished_at=now,
                error=f"its worker stopped answering {max_attempts} times (lease expired); giving up",
            )
            .returning(Build.id)
            .execution_options(**_NO_SYNC)
        ).all()
        session.execute(delete(Worker).where(Worker.heartbeat_at < now - timedelta(seconds=worker_timeout)))
    return Reaped(list(requeued), list(failed), list(cancelled))


def finish(
    sessions: sessionmaker[Session],
    build_id: int,
    worker_id: str,
    state: BuildState,
    error: str | None = None,
    version: int | None = None,
) -> BuildState | None:
    """``running`` and mine → ``state``: the state recorded, or None when the build is no longer mine (my lease
    expired). A build a client cancelled ends ``cancelled`` rather than ``succeeded`` or ``failed``: a cancel
    answered 202 is kept. To succeed it got here without publishing a version of its own (a cancel after the
    version is refused), finding its result already published; to fail, its process died (or it failed) before
    the stop it was asked for."""
    values: dict[str, Any] = {"finished_at": utcnow(), "lease_expires_at": None}
    if state in (BuildState.SUCCEEDED, BuildState.FAILED):
        values |= {
            "state": case((Build.cancel_requested, BuildState.CANCELLED.value), else_=state.value),
            "error": case((Build.cancel_requested, "cancelled while running"), else_=error),
            "version_number": None if version is None else case((Build.cancel_requested, None), else_=version),
        }
    else:
        values |= {"state": state, "error": error, "version_number": version}
    with transaction(sessions) as session:
        recorded = session.scalar(
            update(Build)
            .where(Build.id == build_id, Build.worker_id == worker_id, Build.state == RUNNING)
            .values(**values)
            .returning(Build.state)
            .execution_options(**_NO_SYNC)
        )
        return None if recorded is None else BuildState(recorded)


def release(sessions: sessionmaker[Session], build_id: int, worker_id: str, attempt_counts: bool = True) -> bool:
    """``running`` and mine → ``queued``, when this worker stops before the build is done (``attempt_counts``
    false: it was preempted, and this attempt is not held against it); → ``cancelled`` when a client cancelled
    it meanwhile."""
    cancelled = Build.cancel_requested
    with transaction(sessions) as session:
        result = session.execute(
            update(Build)
            .where(Build.id == build_id, Build.worker_id == worker_id, Build.state == RUNNING)
            .values(
                state=case((cancelled, BuildState.CANCELLED.value), else_=QUEUED.value),
                finished_at=case((cancelled, utcnow()), else_=None),
                error=case((cancelled, "cancelled while running"), else_=None),
                worker_id=None,
                lease_expires_at=None,
                attempts=Build.attempts if attempt_counts else Build.attempts - 1,
            )
            .execution_options(**_NO_SYNC)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_no_rebuild(sessions: sessionmaker[Session], build_id: int, worker_id: str) -> None:
    """Record that the running build of mine publishes the bundle's own packages (no compile was needed)."""
    with transaction(sessions) as session:
        session.execute(
            update(Build)
            .where(Build.id == build_id, Build.worker_id == worker_id, Build.state == RUNNING)
            .values(rebuild=False)
            .execution_options(**_NO_SYNC)
        )
