"""The worker's supervision of its builds, on SQLite and PostgreSQL: whatever breaks, no build stays stuck.

Faults are injected where a real one struck before (the database failing while a build ended killed the
slot's thread, and the heartbeat then renewed that build's lease for ever): the pipeline raises, and the
worker must end the build with the reason, or, when even that cannot be written, stop renewing its lease
so that it goes back to the queue; either way the slot goes on working.
"""

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import lifecycle, requests
from ofedrepo.bundles.store import BundleStore
from ofedrepo.config import Settings
from ofedrepo.db import make_engine, session_factory, transaction
from ofedrepo.models import Build, BuildState, RepoVersion
from ofedrepo.repos.publish import Publisher
from synthetic.bundle import CURRENT
from tests.conftest import TARGET_KERNEL, make_settings
from tests.integration.test_queue import enqueue, state_of
from workers.pipeline import Pipeline
from workers.worker import Worker


@pytest.fixture
def worker_settings(tmp_path: Path, database_url: str, engine: Engine) -> Settings:
    """A quick poll, on the test's database (migrated by the ``engine`` fixture). Leases are long: a loaded
    machine that delays a heartbeat must not turn one attempt into two; the test that needs a lease to expire
    sets a short one itself."""
    settings = make_settings(tmp_path / "var", database_url)
    return settings.model_copy(update={"build_lease_seconds": 30, "queue_poll_interval": 0.1})


def run_until(worker: Worker, done: Callable[[], bool], timeout: float = 30) -> None:
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the worker never got there"
            time.sleep(0.1)
    finally:
        worker.stop()


def database_gone() -> OperationalError:
    return OperationalError("UPDATE builds ...", {}, Exception("server closed the connection unexpectedly"))


def runs_of(settings: Settings, build_id: int) -> int:
    """How many times a stand-in build ran for ``build_id`` (each run leaves a file: it runs in another process)."""
    return len(list((settings.data_dir / "runs").glob(f"{build_id}-*")))


def recorded_run(settings: Settings, build_id: int) -> int:
    runs = settings.data_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    count = runs_of(settings, build_id) + 1
    (runs / f"{build_id}-{count}").touch()
    return count


def finishes(settings: Settings, build_id: int, worker_id: str) -> None:
    engine = make_engine(settings.resolved_database_url)
    lifecycle.finish(session_factory(engine), build_id, worker_id, BuildState.SUCCEEDED)
    engine.dispose()


def breaks_once(settings: Settings, build_id: int, worker_id: str, deadline: float, should_stop: object) -> None:
    """A stand-in build: build 1 has a bug, build 2's database fails under its first run, others succeed."""
    count = recorded_run(settings, build_id)
    if build_id == 1:
        raise KeyError("a bug")
    if build_id == 2 and count == 1:
        raise database_gone()
    finishes(settings, build_id, worker_id)


def crashes_once(settings: Settings, build_id: int, worker_id: str, deadline: float, should_stop: object) -> None:
    """A stand-in build: build 1 dies of a segmentation fault, as a C extension on bad input would."""
    if recorded_run(settings, build_id) == 1 and build_id == 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    finishes(settings, build_id, worker_id)


def hangs(settings: Settings, build_id: int, worker_id: str, deadline: float, should_stop: object) -> None:
    """A stand-in build stuck in a Python step that never looks whether it should stop."""
    recorded_run(settings, build_id)
    time.sleep(3600)


def test_a_build_that_breaks_out_of_its_pipeline_fails_with_the_reason_and_the_slot_goes_on(
    worker_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """A bug fails the build with the reason; a database error is not the build's fault: it is retried."""
    broken, unlucky, healthy = enqueue(sessions, 3)
    assert (broken, unlucky) == (1, 2)
    worker = Worker(worker_settings, concurrency=1, target=breaks_once)
    run_until(worker, lambda: {state_of(sessions, build).state for build in (unlucky, healthy)} == {"succeeded"})
    failed = state_of(sessions, broken)
    assert failed.state == "failed" and failed.error == "internal error: its process exited with status 1"
    retried = state_of(sessions, unlucky)
    assert (retried.state, retried.attempts, runs_of(worker_settings, unlucky)) == ("succeeded", 2, 2)
    log = Path(worker_settings.data_dir / "builds" / f"{unlucky}.log").read_text()
    assert "the database failed under this build: back in the queue" in log
    assert state_of(sessions, healthy).state == "succeeded"


def test_a_build_whose_process_dies_of_a_signal_fails_with_it_and_the_worker_goes_on(
    worker_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    crashed, next_one = enqueue(sessions, 2)
    assert crashed == 1  # the one crashes_once crashes
    worker = Worker(worker_settings, concurrency=1, target=crashes_once)
    run_until(worker, lambda: state_of(sessions, next_one).state == "succeeded")
    build = state_of(sessions, crashed)
    assert build.state == "failed" and build.error == "its process was killed by signal 11 (SIGSEGV)", build.error
    assert "FAILED: its process was killed by signal 11" in (worker_settings.data_dir / "builds" / f"{crashed}.log"
                                                             ).read_text()  # fmt: skip


def test_a_build_stuck_in_a_python_step_ends_at_its_deadline(
    worker_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """It never looks whether to stop: at the deadline it is asked, and killed when it does not."""
    (build_id,) = enqueue(sessions)
    settings = worker_settings.model_copy(update={"build_timeout": 2})
    worker = Worker(settings, concurrency=1, target=hangs)
    run_until(worker, lambda: state_of(sessions, build_id).state == "failed", timeout=60)
    build = state_of(sessions, build_id)
    assert build.state == "failed" and build.error == "the build did not finish within 2 s (OFEDREPO_BUILD_TIMEOUT)"


def test_a_build_whose_end_cannot_be_written_goes_back_to_the_queue(
    worker_settings: Settings, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails under the build, and refuses even to take it back (here, in the worker): the lease is
    no longer renewed and another attempt follows."""
    _, unlucky = enqueue(sessions, 2)  # build 2's first run meets a database error (``breaks_once``)
    with sessions() as session:  # build 1 (the bug) is not this test's
        lifecycle.cancel(session, 1)
    finish, release = lifecycle.finish, lifecycle.release
    refused: list[int] = []

    def unwritable(*arguments: object, **keywords: object) -> bool:
        refused.append(1)
        if len(refused) == 3:  # every try the worker makes (it then leaves the lease to expire)
            monkeypatch.setattr(lifecycle, "finish", finish)
            monkeypatch.setattr(lifecycle, "release", release)
        raise database_gone()

    monkeypatch.setattr(lifecycle, "finish", unwritable)
    monkeypatch.setattr(lifecycle, "release", unwritable)
    expiring = worker_settings.model_copy(update={"build_lease_seconds": 1.2})  # left to expire, then retried
    worker = Worker(expiring, concurrency=1, target=breaks_once)
    run_until(worker, lambda: state_of(sessions, unlucky).state == "succeeded")
    build = state_of(sessions, unlucky)
    assert (build.state, build.attempts, runs_of(worker_settings, unlucky)) == ("succeeded", 2, 2)
    log = Path(worker_settings.data_dir / "builds" / f"{unlucky}.log").read_text()
    assert "stopped answering: back in the queue" in log


def test_a_retry_records_the_version_its_killed_attempt_published(
    worker_settings: Settings, sessions: sessionmaker[Session], bundle_tgz: Path, ext_tgz: Path
) -> None:
    """Published, then killed before recording the end: the next attempt records that version, makes none."""
    store = BundleStore(worker_settings, sessions)
    store.add(store.identify(bundle_tgz))
    with sessions() as session:
        outcome = requests.request_repo(session, worker_settings, requests.RepoRequest(kernel=TARGET_KERNEL))
    assert outcome.build_id is not None
    assert lifecycle.claim(sessions, "killed", lease_seconds=60) == outcome.build_id
    first = Publisher(worker_settings, sessions).publish(ext_tgz, build_id=outcome.build_id)  # then SIGKILL
    assert lifecycle.release(sessions, outcome.build_id, "killed")  # what the reaper does once the lease expires
    assert lifecycle.claim(sessions, "retry", lease_seconds=60) == outcome.build_id
    state = Pipeline(worker_settings, sessions, "retry").run(outcome.build_id, lambda: None)
    build = state_of(sessions, outcome.build_id)
    assert (state, build.version_number, build.attempts) == (BuildState.SUCCEEDED, first.version, 2)
    assert sorted(path.name for path in first.path.parent.iterdir()) == ["1", "latest"]
    log = (worker_settings.data_dir / "builds" / f"{outcome.build_id}.log").read_text()
    assert "version 1 was published by an earlier attempt: recording it, nothing to redo" in log


def test_a_worker_that_lost_its_build_never_publishes_for_it(
    worker_settings: Settings, sessions: sessionmaker[Session], bundle_tgz: Path
) -> None:
    """Cut off from the database past its lease, a worker's build was given to another; when the first one
    reaches the publish (its link back), the fence in the publish's transaction refuses it: no version."""
    store = BundleStore(worker_settings, sessions)
    store.add(store.identify(bundle_tgz))
    with sessions() as session:
        outcome = requests.request_repo(session, worker_settings, requests.RepoRequest(kernel=CURRENT.ga_kernel))
    assert outcome.build_id is not None
    assert lifecycle.claim(sessions, "cut-off", lease_seconds=60) == outcome.build_id
    assert lifecycle.release(sessions, outcome.build_id, "cut-off")  # what the reaper does once the lease expires
    assert lifecycle.claim(sessions, "other-host", lease_seconds=60) == outcome.build_id
    state = Pipeline(worker_settings, sessions, "cut-off").run(outcome.build_id, lambda: None)
    build = state_of(sessions, outcome.build_id)
    assert (state, build.state, build.worker_id) == (BuildState.QUEUED, "running", "other-host")
    with sessions() as session:
        assert session.scalars(select(RepoVersion)).all() == []
    published = worker_settings.data_dir / "repos"
    assert not published.exists() or [path for path in published.rglob("*") if path.name.isdigit()] == []
    log = (worker_settings.data_dir / "builds" / f"{outcome.build_id}.log").read_text()
    assert "this worker lost the build's lease" in log


def publishes_then_dies(
    settings: Settings, build_id: int, worker_id: str, deadline: float, should_stop: object
) -> None:
    """A stand-in build whose version is committed, then its process is killed before recording the end (as
    when its deadline's kill lands while it removes its scratch)."""
    engine = make_engine(settings.resolved_database_url)
    with transaction(session_factory(engine)) as session:
        build = session.get(Build, build_id)
        assert build is not None
        session.add(RepoVersion(repo_id=build.repo_id, number=1, source_digest="d", package_count=1, size_bytes=1,
                                build_id=build_id))  # fmt: skip
    engine.dispose()
    os.kill(os.getpid(), signal.SIGKILL)


def refused_by_the_database(
    settings: Settings, build_id: int, worker_id: str, deadline: float, should_stop: object
) -> None:
    """A stand-in build whose statement the database refuses (not lost: trying again would only repeat it)."""
    recorded_run(settings, build_id)
    raise IntegrityError("INSERT INTO repo_versions ...", {}, Exception("duplicate key value"))


def test_a_build_killed_after_publishing_succeeded(worker_settings: Settings, sessions: sessionmaker[Session]) -> None:
    (build_id,) = enqueue(sessions)
    worker = Worker(worker_settings, concurrency=1, target=publishes_then_dies)
    run_until(worker, lambda: state_of(sessions, build_id).state not in ("queued", "running"))
    build = state_of(sessions, build_id)
    assert (build.state, build.version_number, build.error) == ("succeeded", 1, None)
    log = (worker_settings.data_dir / "builds" / f"{build_id}.log").read_text()
    assert "succeeded: version 1 (published before the build's process ended)" in log


def test_a_statement_the_database_refuses_fails_the_build_once(
    worker_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Only a lost database puts a build back in the queue; a refused statement would be refused every time."""
    (build_id,) = enqueue(sessions)
    worker = Worker(worker_settings, concurrency=1, target=refused_by_the_database)
    run_until(worker, lambda: state_of(sessions, build_id).state == "failed")
    build = state_of(sessions, build_id)
    assert (build.state, build.attempts, runs_of(worker_settings, build_id)) == ("failed", 1, 1)
    assert build.error == "internal error: its process exited with status 1"
