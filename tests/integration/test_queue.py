"""The build queue's transitions on SQLite and PostgreSQL: claim, heartbeat, reap, finish, release, cancel."""

import threading
import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import lifecycle, requests
from ofedrepo.bundles.names import BundleIdentity
from ofedrepo.db import transaction
from ofedrepo.errors import Conflict
from ofedrepo.models import Build, BuildState, Bundle, Priority, RepoVersion, Worker
from ofedrepo.repos import queries

IDENTITY = BundleIdentity("5.8-3.0.7.0", "rhel8.6", "x86_64")
KERNEL = "4.18.0-372.26.1.el8_6.x86_64"


def enqueue(sessions: sessionmaker[Session], count: int = 1) -> list[int]:
    """``count`` queued builds of one x86_64 bundle (workers claim builds by their bundle's arch)."""
    with transaction(sessions) as session:
        bundle = session.scalar(select(Bundle).where(Bundle.name == IDENTITY.name))
        if bundle is None:
            bundle = Bundle(
                name=IDENTITY.name, ofed_version=IDENTITY.ofed_version, distro=IDENTITY.distro, arch=IDENTITY.arch,
                sha256="e" * 64,
            )  # fmt: skip
            session.add(bundle)
            session.flush()
        repo_id = queries.get_or_create_repo(session, IDENTITY, KERNEL).id
        queued = [
            Build(repo_id=repo_id, bundle_id=bundle.id, kernel=KERNEL, fingerprint=f"f{index}")
            for index in range(count)
        ]
        session.add_all(queued)
        session.flush()
        return [build.id for build in queued]


def state_of(sessions: sessionmaker[Session], build_id: int) -> Build:
    with sessions() as session:
        build = session.get(Build, build_id)
        assert build is not None
        return build


def test_concurrent_claimers_never_share_a_build(sessions: sessionmaker[Session]) -> None:
    enqueued = enqueue(sessions, 5)
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(worker_id: str) -> None:
        while (build_id := lifecycle.claim(sessions, worker_id, lease_seconds=60)) is not None:
            with lock:
                claimed.append(build_id)

    threads = [threading.Thread(target=claimer, args=(f"worker-{index}",)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == enqueued  # each exactly once, oldest first overall
    assert all(state_of(sessions, build_id).attempts == 1 for build_id in enqueued)


def test_an_expired_lease_goes_back_to_the_queue_then_fails(sessions: sessionmaker[Session]) -> None:
    (build_id,) = enqueue(sessions)
    assert lifecycle.claim(sessions, "dead", lease_seconds=0.1) == build_id
    time.sleep(0.3)
    assert lifecycle.reap(sessions, max_attempts=2, worker_timeout=60) == lifecycle.Reaped([build_id], [])
    assert not lifecycle.finish(sessions, build_id, "dead", BuildState.SUCCEEDED)  # it is not the dead worker's now
    assert lifecycle.claim(sessions, "second", lease_seconds=0.1) == build_id
    time.sleep(0.3)
    assert lifecycle.reap(sessions, max_attempts=2, worker_timeout=60) == lifecycle.Reaped([], [build_id])
    build = state_of(sessions, build_id)
    assert (build.state, build.attempts) == ("failed", 2) and "stopped answering" in (build.error or "")


def test_heartbeats_keep_a_lease_and_report_cancels(sessions: sessionmaker[Session]) -> None:
    """Each beat moves the lease's end later (never a race with the clock: the lease is long, its renewal is
    read back); that an unrenewed lease expires is the test above."""
    (build_id,) = enqueue(sessions)
    lifecycle.register(sessions, "alive", concurrency=1)
    assert lifecycle.claim(sessions, "alive", lease_seconds=60) == build_id
    ends = [state_of(sessions, build_id).lease_expires_at]
    for _ in range(3):
        time.sleep(0.01)  # the clock moves on between beats
        assert lifecycle.heartbeat(sessions, "alive", lease_seconds=60, running={build_id}) == lifecycle.Beat(
            set(), set()
        )
        ends.append(state_of(sessions, build_id).lease_expires_at)
        assert lifecycle.reap(sessions, max_attempts=3, worker_timeout=60) == lifecycle.Reaped([], [])
    assert all(ends) and ends == sorted(set(ends)), ends  # renewed at every beat
    with sessions() as session:
        assert lifecycle.cancel(session, build_id).cancel_requested
    assert lifecycle.heartbeat(sessions, "alive", lease_seconds=0.5, running={build_id}).cancelled == {build_id}
    assert lifecycle.finish(sessions, build_id, "alive", BuildState.CANCELLED)
    assert state_of(sessions, build_id).state == "cancelled"
    lifecycle.unregister(sessions, "alive")


def test_a_stopping_worker_releases_its_build(sessions: sessionmaker[Session]) -> None:
    (build_id,) = enqueue(sessions)
    assert lifecycle.claim(sessions, "leaving", lease_seconds=60) == build_id
    assert not lifecycle.release(sessions, build_id, "someone else")
    assert lifecycle.release(sessions, build_id, "leaving")
    assert lifecycle.claim(sessions, "next", lease_seconds=60) == build_id
    assert state_of(sessions, build_id).attempts == 2


def test_a_cancelled_build_whose_process_died_before_stopping_ends_cancelled(sessions: sessionmaker[Session]) -> None:
    """The cancel was answered 202; the build's process then died (a signal, a crash) before its worker told it
    to stop: its end is the cancel the client was promised, not a failure."""
    (build_id,) = enqueue(sessions)
    assert lifecycle.claim(sessions, "w", lease_seconds=60) == build_id
    with sessions() as session:
        assert lifecycle.cancel(session, build_id).cancel_requested
    died = "its process was killed by signal 9 (SIGKILL)"
    assert lifecycle.finish(sessions, build_id, "w", BuildState.FAILED, error=died) == BuildState.CANCELLED
    assert (state_of(sessions, build_id).state, state_of(sessions, build_id).error) == (
        "cancelled",
        "cancelled while running",
    )


def test_cancel_of_a_queued_build_is_immediate(sessions: sessionmaker[Session]) -> None:
    (build_id,) = enqueue(sessions)
    with sessions() as session:
        assert lifecycle.cancel(session, build_id).state == "cancelled"
    assert lifecycle.claim(sessions, "late", lease_seconds=60) is None


def test_only_running_builds_are_renewed_and_lost_ones_are_reported(sessions: sessionmaker[Session]) -> None:
    """A build whose slot died is not renewed: it expires and goes back to the queue for another worker."""
    orphan, running = enqueue(sessions, 2)
    lifecycle.register(sessions, "half", concurrency=2)
    assert lifecycle.claim(sessions, "half", lease_seconds=0.2) == orphan
    assert lifecycle.claim(sessions, "half", lease_seconds=0.2) == running
    # The beat renews only the running build (for a minute: no race with a slow machine); the orphan's short
    # lease runs out, however long that takes here.
    assert lifecycle.heartbeat(sessions, "half", lease_seconds=60, running={running}).lost == set()
    deadline = time.monotonic() + 30
    while (reaped := lifecycle.reap(sessions, max_attempts=3, worker_timeout=60)) == lifecycle.Reaped([], []):
        assert time.monotonic() < deadline, "the orphan's lease never expired"
        time.sleep(0.05)
    assert reaped == lifecycle.Reaped([orphan], [])
    assert lifecycle.claim(sessions, "other", lease_seconds=60) == orphan
    # If "half" still believed it ran the orphan, its next beat says it is not its own any more.
    assert lifecycle.heartbeat(sessions, "half", lease_seconds=0.4, running={orphan, running}).lost == {orphan}


def test_a_forgotten_worker_registers_again(sessions: sessionmaker[Session]) -> None:
    lifecycle.register(sessions, "cut-off", concurrency=1)
    lifecycle.unregister(sessions, "cut-off")  # what a reaper does to a worker that stopped answering
    lifecycle.heartbeat(sessions, "cut-off", lease_seconds=60, running=set(), concurrency=1, arches=["aarch64"])
    with sessions() as session:
        (worker,) = requests.live_workers(session, within_seconds=60)
        assert (worker.id, worker.concurrency, worker.arches) == ("cut-off", 1, ["aarch64"])


def test_a_waiting_request_preempts_the_most_recently_started_feed_build_only(
    sessions: sessionmaker[Session],
) -> None:
    older, newer, request = enqueue(sessions, 3)
    with transaction(sessions) as session:
        for build_id in (older, newer):
            session.get(Build, build_id).priority = Priority.FEED  # type: ignore[union-attr]
    assert lifecycle.claim(sessions, "a", lease_seconds=60) == request  # a person's request goes first...
    lifecycle.release(sessions, request, "a")
    with transaction(sessions) as session:
        session.get(Build, request).priority = Priority.FEED  # type: ignore[union-attr]
    assert lifecycle.claim(sessions, "a", lease_seconds=60) == older
    time.sleep(0.01)
    assert lifecycle.claim(sessions, "b", lease_seconds=60) == newer
    assert lifecycle.claim(sessions, "b", lease_seconds=60) == request
    lifecycle.release(sessions, request, "b")
    with transaction(sessions) as session:  # ...and when no slot is free, it takes one from a feed build
        session.get(Build, request).priority = Priority.REQUEST  # type: ignore[union-attr]
    beats = {
        worker: lifecycle.heartbeat(sessions, worker, lease_seconds=60, running={build}, preempt_after=0.001)
        for worker, build in (("a", older), ("b", newer))
    }
    assert beats["a"].preempted == set() and beats["b"].preempted == {newer}  # one, the same for every worker
    assert lifecycle.heartbeat(sessions, "b", lease_seconds=60, running={newer}).preempted == set()  # not asked
    attempts = state_of(sessions, newer).attempts
    assert lifecycle.release(sessions, newer, "b", attempt_counts=False)
    assert state_of(sessions, newer).attempts == attempts - 1  # a preempted attempt is not held against it
    assert lifecycle.claim(sessions, "b", lease_seconds=60) == request


def test_a_waiting_request_preempts_only_a_feed_build_on_a_worker_of_its_arch(sessions: sessionmaker[Session]) -> None:
    """An aarch64 request waiting for a slot stops nothing on an x86_64-only worker: the slot freed would be of no
    use to it."""
    feed_build, request = enqueue(sessions, 2)
    lifecycle.register(sessions, "x86", concurrency=1, arches=["x86_64"])
    with transaction(sessions) as session:
        session.get(Build, feed_build).priority = Priority.FEED  # type: ignore[union-attr]
    assert lifecycle.claim(sessions, "x86", lease_seconds=60, arches=["x86_64"]) == request
    lifecycle.release(sessions, request, "x86")
    with transaction(sessions) as session:
        session.get(Build, request).priority = Priority.FEED  # type: ignore[union-attr]
    assert lifecycle.claim(sessions, "x86", lease_seconds=60, arches=["x86_64"]) == feed_build
    with transaction(sessions) as session:  # the request, now for an aarch64 bundle, waits
        arm = Bundle(name="MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-aarch64", ofed_version="5.8-3.0.7.0", distro="rhel8.6",
                     arch="aarch64", sha256="a" * 64)  # fmt: skip
        session.add(arm)
        session.flush()
        waiting = session.get(Build, request)
        assert waiting is not None
        waiting.bundle_id, waiting.priority = arm.id, Priority.REQUEST

    def beat() -> set[int]:
        return lifecycle.heartbeat(sessions, "x86", lease_seconds=60, running={feed_build}, preempt_after=0.001,
                                   arches=["x86_64"]).preempted  # fmt: skip

    assert beat() == set()
    with transaction(sessions) as session:  # declared for both: now the slot is of use to the request
        session.get(Worker, "x86").arches = ["x86_64", "aarch64"]  # type: ignore[union-attr]
    assert beat() == {feed_build}


def test_a_cancel_stops_the_publish_or_comes_too_late_never_both(sessions: sessionmaker[Session]) -> None:
    """The publish's fence and a cancel serialise on the build's row: a cancel before the fence makes the fence
    refuse the publish; one after the version is recorded is a 409 (it was a 202 and the build still published)."""
    early, late = enqueue(sessions, 2)
    for build_id in (early, late):
        assert lifecycle.claim(sessions, "w", lease_seconds=60) == build_id
    with sessions() as session:
        assert lifecycle.cancel(session, early).cancel_requested
    repo_id = state_of(sessions, late).repo_id
    with transaction(sessions) as session:
        assert lifecycle.hold(session, early, "w", lease_seconds=60) == lifecycle.StopReason.CANCELLED
        assert lifecycle.hold(session, late, "w", lease_seconds=60) is None
        assert lifecycle.hold(session, late, "someone else", lease_seconds=60) == lifecycle.StopReason.LEASE_LOST
        session.add(RepoVersion(repo_id=repo_id, number=1, source_digest="d", package_count=1, size_bytes=1,
                                build_id=late))  # fmt: skip
    with sessions() as session, pytest.raises(Conflict, match="already published its version"):
        lifecycle.cancel(session, late)
    assert not state_of(sessions, late).cancel_requested


def test_a_cancel_waiting_on_a_publish_sees_its_version(sessions: sessionmaker[Session]) -> None:
    """A cancel that comes while the publish holds the build's row waits for it and then finds the version: a
    409. (On PostgreSQL, one UPDATE judging the version's absence on its own snapshot said 202.)"""
    (build_id,) = enqueue(sessions)
    assert lifecycle.claim(sessions, "w", lease_seconds=60) == build_id
    repo_id = state_of(sessions, build_id).repo_id
    answered: list[BaseException | Build] = []

    def cancel() -> None:
        with sessions() as session:
            try:
                answered.append(lifecycle.cancel(session, build_id))
            except Conflict as error:
                answered.append(error)

    with transaction(sessions) as publishing:
        assert lifecycle.hold(publishing, build_id, "w", lease_seconds=60) is None
        publishing.add(RepoVersion(repo_id=repo_id, number=1, source_digest="d", package_count=1, size_bytes=1,
                                   build_id=build_id))  # fmt: skip
        publishing.flush()
        canceller = threading.Thread(target=cancel)
        canceller.start()
        canceller.join(1)
        assert canceller.is_alive()  # waiting for the publish's row lock (PostgreSQL) or write lock (SQLite)
    canceller.join(60)
    assert not canceller.is_alive()
    assert len(answered) == 1 and isinstance(answered[0], Conflict), answered
    assert "already published its version" in str(answered[0])
    assert not state_of(sessions, build_id).cancel_requested


def test_a_cancelled_build_never_runs_again(sessions: sessionmaker[Session]) -> None:
    """A cancel answered 202 sticks whatever becomes of the attempt: its worker lost (reap), its worker stopping
    (release), or its run reaching the end without publishing a version of its own (finish)."""
    lost, stopping, finishing, untouched = enqueue(sessions, 4)
    assert lifecycle.claim(sessions, "dead", lease_seconds=0.1) == lost
    for build_id in (stopping, finishing, untouched):
        assert lifecycle.claim(sessions, "w", lease_seconds=60) == build_id
    for build_id in (lost, stopping, finishing):
        with sessions() as session:
            assert lifecycle.cancel(session, build_id).cancel_requested
    time.sleep(0.3)
    assert lifecycle.reap(sessions, max_attempts=3, worker_timeout=60) == lifecycle.Reaped([], [], [lost])
    assert lifecycle.release(sessions, stopping, "w")
    assert lifecycle.finish(sessions, finishing, "w", BuildState.SUCCEEDED, version=1) == BuildState.CANCELLED
    assert lifecycle.finish(sessions, untouched, "w", BuildState.SUCCEEDED, version=1) == BuildState.SUCCEEDED
    for build_id in (lost, stopping, finishing):
        build = state_of(sessions, build_id)
        assert (build.state, build.version_number, build.finished_at is not None) == ("cancelled", None, True)
        assert build.error is not None and build.error.startswith("cancelled while running")
    assert lifecycle.claim(sessions, "next", lease_seconds=60) is None


def test_a_worker_claims_only_builds_of_its_architectures(sessions: sessionmaker[Session]) -> None:
    """An aarch64 bundle's build waits, saying why, while only x86_64 workers live; an aarch64 worker takes it."""
    with transaction(sessions) as session:
        bundle = Bundle(
            name="MLNX_OFED_LINUX-24.10-1.1.4.0-rhel9.4-aarch64", ofed_version="24.10-1.1.4.0", distro="rhel9.4",
            arch="aarch64", sha256="a" * 64,
        )  # fmt: skip
        session.add(bundle)
        session.flush()
        identity = BundleIdentity(bundle.ofed_version, bundle.distro, bundle.arch)
        kernel = "5.14.0-427.13.1.el9_4.aarch64"
        repo_id = queries.get_or_create_repo(session, identity, kernel).id
        build = Build(repo_id=repo_id, bundle_id=bundle.id, kernel=kernel, fingerprint="arm")
        session.add(build)
        session.flush()
        build_id = build.id
    lifecycle.register(sessions, "x86", concurrency=1, arches=["x86_64"])
    assert lifecycle.claim(sessions, "x86", lease_seconds=60, arches=["x86_64"]) is None
    with sessions() as session:
        waiting = requests.waiting_reason(state_of_in(session, build_id), requests.live_arches(session, 60))
        assert waiting is not None and waiting.startswith("no aarch64 worker")
    lifecycle.register(sessions, "arm", concurrency=1, arches=["aarch64"])
    with sessions() as session:
        assert requests.waiting_reason(state_of_in(session, build_id), requests.live_arches(session, 60)) is None
        assert {worker.id: worker.arches for worker in requests.live_workers(session, 60)} == {
            "x86": ["x86_64"], "arm": ["aarch64"],
        }  # fmt: skip
    assert lifecycle.claim(sessions, "arm", lease_seconds=60, arches=["aarch64"]) == build_id


def state_of_in(session: Session, build_id: int) -> Build:
    build = session.get(Build, build_id)
    assert build is not None
    return build
