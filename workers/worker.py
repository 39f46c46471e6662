"""The worker: claims queued builds and runs them, several at once, while heartbeating its leases.

One thread per slot (``concurrency``) claims and runs builds; one more thread heartbeats: it renews the
leases of the running builds, tells a slot when a client cancelled its build, and reaps builds whose worker
died. With kernel feeds configured, one more polls them (``ofedrepo.builds.feeds``) and queues builds for
the new kernels they bring. ``ofedrepo worker`` runs this in the foreground; ``ofedrepo serve`` runs it next
to the web server. Idle slots look for work every ``queue_poll_interval`` seconds, which bounds the pickup latency.
"""

import logging
import platform
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from sqlalchemy.exc import DBAPIError

from ofedrepo import logs
from ofedrepo.builds import lifecycle, requests
from ofedrepo.builds.feeds import keep_sources, poll_due_feeds
from ofedrepo.builds.lifecycle import StopReason
from ofedrepo.config import Settings
from ofedrepo.db import make_engine, session_factory, upgrade
from ofedrepo.models import BuildState
from ofedrepo.repos.retention import Policy, automatic_policy, collect_garbage
from workers.build_process import DATABASE_FAILED, STOP_GRACE, BuildProcess, Target, process_context, run_pipeline
from workers.pipeline import (
    Pipeline,
    remove_leftovers,
    remove_orphan_cgroups,
    remove_orphan_containers,
    remove_orphan_scratch_volumes,
)

log = logging.getLogger(__name__)

#: Heartbeats come at least this often, so that a cancel takes effect within about this long.
MAX_HEARTBEAT_INTERVAL = 2.0
#: A person's request waits at least this long for an idle slot before it preempts a kernel feed's build.
MIN_PREEMPT_WAIT = 2.0
#: How often a worker looks whether a kernel feed is due (the feed's own interval decides whether it is).
MAX_FEED_CHECK_INTERVAL = 10.0
#: How often a worker removes the build containers and scratch filesystems no running build owns.
ORPHAN_SWEEP_INTERVAL = 30.0


class Worker:
    def __init__(self, settings: Settings, concurrency: int | None = None, target: Target = run_pipeline) -> None:
        self.settings = settings
        self.concurrency = concurrency or settings.worker_concurrency
        self.engine = make_engine(settings.resolved_database_url)
        self.sessions = session_factory(self.engine)
        self.id = lifecycle.new_worker_id()
        self.pipeline = Pipeline(settings, self.sessions, self.id)
        self.target = target
        """What each build process runs: the pipeline (a test may give a stand-in, run the same way)."""
        self.stopping = threading.Event()
        self.running: set[int] = set()
        self.cancelled: set[int] = set()
        self.lost: set[int] = set()
        self.preempted: set[int] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    @property
    def preempt_after(self) -> float:
        """A request still queued this long found no idle slot (idle slots look every ``queue_poll_interval``)."""
        return max(MIN_PREEMPT_WAIT, 4 * self.settings.queue_poll_interval)

    @property
    def heartbeat_interval(self) -> float:
        return min(self.settings.build_lease_seconds / 4, MAX_HEARTBEAT_INTERVAL)

    def start(self) -> None:
        lifecycle.register(self.sessions, self.id, self.concurrency, self.settings.worker_arches)
        log.info("worker %s builds for %s", self.id, ", ".join(self.settings.worker_arches))
        foreign = [arch for arch in self.settings.worker_arches if arch != platform.machine()]
        if foreign and self.settings.build_runner == "local":
            log.warning(
                "worker %s declares %s (OFEDREPO_WORKER_ARCHES) but runs the vendor's tool on this %s host, which "
                "makes %s modules: those builds will fail",
                self.id, ", ".join(foreign), platform.machine(), platform.machine(),
            )  # fmt: skip
        self.threads = [
            threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True),
            threading.Thread(target=self._sweep_orphans, name="orphan-sweep", daemon=True),
        ]
        self.threads += [
            threading.Thread(target=self._slot, name=f"slot-{index}", daemon=True) for index in range(self.concurrency)
        ]
        policy = automatic_policy(self.settings)  # None: housekeeping only (scratch, kept failures, old logs)
        self.threads.append(threading.Thread(target=self._retention, args=(policy,), name="gc", daemon=True))
        if self.settings.kernel_feeds:
            self.threads.append(threading.Thread(target=self._kernel_feeds, name="feeds", daemon=True))
        for thread in self.threads:
            thread.start()
        log.info("worker %s started with %d slot(s)", self.id, self.concurrency)

    def stop(self, timeout: float = 30) -> None:
        """Stop claiming; running builds are killed and go back to the queue for another worker."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=timeout)
        lifecycle.unregister(self.sessions, self.id)
        self.engine.dispose()
        log.info("worker %s stopped", self.id)

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT (``ofedrepo worker``)."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start()
        self.stopping.wait()
        self.stop()

    def _should_stop(self, build_id: int) -> StopReason | None:
        with self.lock:
            if build_id in self.lost:
                return StopReason.LEASE_LOST
            if build_id in self.cancelled:
                return StopReason.CANCELLED
            if build_id in self.preempted:
                return StopReason.PREEMPTED
        return StopReason.WORKER_STOPPING if self.stopping.is_set() else None

    def _slot(self) -> None:
        while not self.stopping.is_set():
            try:
                build_id = lifecycle.claim(
                    self.sessions, self.id, self.settings.build_lease_seconds, self.settings.worker_arches
                )
            except Exception:
                log.exception("claiming a build failed; retrying")
                self.stopping.wait(self.settings.queue_poll_interval * 4)
                continue
            if build_id is None:
                self.stopping.wait(self.settings.queue_poll_interval)
                continue
            log.info("worker %s runs build %d", self.id, build_id)
            with self.lock:
                self.running.add(build_id)
            try:
                self._supervised(build_id)
            except Exception:
                # Supervising failed (no process could be started, the leftovers not removed): the slot lives on,
                # and the build is left to its lease, which no longer renews: another worker takes it.
                log.exception("build %d: supervising it failed; its lease is left to expire", build_id)
                self.stopping.wait(self.settings.queue_poll_interval * 4)
            finally:
                with self.lock:
                    self.running.discard(build_id)
                    self.cancelled.discard(build_id)
                    self.lost.discard(build_id)
                    self.preempted.discard(build_id)

    def _supervised(self, build_id: int) -> None:
        """Run one build in a process of its own (``workers.build_process``) so that, whatever goes wrong, it
        ends with a reason or goes back to the queue, and this worker goes on.

        The build process ends its build itself, stopping when told why (a cancel, a lost lease, preemption,
        this worker stopping, the whole-build deadline); one that does not within ``STOP_GRACE`` is killed
        and its outcome recorded here. A process that died on its own fails its build with the reason; one
        whose database failed under it puts the build back in the queue (not the build's fault); when even that
        cannot be written, the build stays ``running`` with a lease that is no longer renewed: it expires, and
        another worker retries the build.
        """
        deadline = time.time() + self.settings.build_timeout
        with self.sessions() as session:
            attempt = lifecycle.attempt(session, build_id)
        child = BuildProcess.start(self.settings, build_id, self.id, deadline, self.target)
        while child.alive:
            reason = self._should_stop(build_id) or (StopReason.TIMED_OUT if time.time() > deadline else None)
            if reason is not None and child.asked is None:
                log.info("build %d: stopping it (%s)", build_id, reason)
                child.ask_to_stop(reason)
            if child.overdue:
                log.warning("build %d did not stop within %.0f s: killing its processes", build_id, STOP_GRACE)
                child.kill()
                break
            child.wait(0.2)
        if child.exitcode == 0 and not child.killed:
            self._log_outcome(build_id)
            return
        remove_leftovers(self.settings, self.pipeline.data, build_id, attempt)
        self._recorded(build_id, lambda: self._end_abnormally(build_id, child))

    def _log_outcome(self, build_id: int) -> None:
        """The line an operator reads in the service's log: how the build its process recorded ended."""
        with self.sessions() as session:
            build = requests.get_build(session, build_id)
            state, error, number, name, kernel = (
                build.state,
                build.error,
                build.version_number,
                build.repo.bundle_name,
                build.kernel,
            )
        if state == BuildState.SUCCEEDED:
            log.info("build %d succeeded: %s for %s, version %s", build_id, name, kernel, number)
        elif state == BuildState.FAILED:
            log.warning("build %d failed: %s for %s: %s", build_id, name, kernel, error)
        else:
            log.info("build %d ended %s: %s for %s", build_id, state.value, name, kernel)

    def _end_abnormally(self, build_id: int, child: BuildProcess) -> None:
        """Record how a build whose process was killed, or ended without recording it, ended.

        A version it published stands, whatever came after (the process died cleaning up): the build
        succeeded. One it was asked to stop ends for that reason, whichever way its process then went (killed,
        or dying of the signal a service manager sends a whole cgroup). Otherwise its process failed.
        """
        if self.pipeline.record_published(build_id):
            return
        if child.asked is not None:
            self.pipeline.stopped(build_id, child.asked)
            return
        failure: str | None
        if child.exitcode == DATABASE_FAILED:
            log.warning("build %d: the database failed under it: back to the queue", build_id)
            failure = None  # not the build's fault: it is retried
        elif child.exitcode is not None and child.exitcode < 0:
            failure = f"its process was killed by signal {-child.exitcode} ({signal.Signals(-child.exitcode).name})"
            log.error("build %d: %s", build_id, failure)
        else:
            failure = f"internal error: its process exited with status {child.exitcode}"
            log.error("build %d: %s", build_id, failure)
        if failure is None:
            if lifecycle.release(self.sessions, build_id, self.id):
                self.pipeline.note(build_id, "the database failed under this build: back in the queue")
        else:
            recorded = lifecycle.finish(self.sessions, build_id, self.id, BuildState.FAILED, error=failure)
            if recorded == BuildState.CANCELLED:
                self.pipeline.note(build_id, f"cancelled by request ({failure} before it could stop)")
            elif recorded:
                self.pipeline.note(build_id, f"FAILED: {failure}")

    def _recorded(self, build_id: int, record: Callable[[], object]) -> None:
        """``record`` how the build ended, retried while the database fails (once only when this worker stops);
        else its lease is left to expire."""
        for delay in (0.0, 1.0, 4.0):
            if delay and self.stopping.wait(delay):
                break
            try:
                record()
                return
            except Exception:
                log.exception("recording how build %d ended did not work", build_id)
        log.error("build %d: its lease is left to expire; another worker will take it", build_id)

    def _heartbeat(self) -> None:
        renewed_at = time.monotonic()
        while not self.stopping.wait(self.heartbeat_interval):
            try:
                with self.lock:
                    running = set(self.running)
                beat = lifecycle.heartbeat(
                    self.sessions,
                    self.id,
                    self.settings.build_lease_seconds,
                    running,
                    self.preempt_after,
                    self.concurrency,
                    self.settings.worker_arches,
                )
                renewed_at = time.monotonic()
                with self.lock:
                    # Only of builds still running here: one whose slot ended since the beat's snapshot would keep
                    # its flag, and stop at once were this worker to claim it again.
                    lost, cancelled, preempted = (
                        found & self.running for found in (beat.lost, beat.cancelled, beat.preempted)
                    )
                    self.cancelled |= cancelled
                    self.lost |= lost
                    self.preempted |= preempted
                for build_id in preempted:
                    log.info("build %d, queued by a kernel feed, makes way for a person's request", build_id)
                for build_id in lost:
                    log.warning(
                        "build %d is no longer this worker's (its lease was not renewed): stopping it", build_id
                    )
                reaped = lifecycle.reap(
                    self.sessions,
                    self.settings.build_max_attempts,
                    worker_timeout=self.settings.build_lease_seconds * 3,
                )
                for build_id in reaped.requeued:
                    log.warning("build %d lost its worker (lease expired): back in the queue", build_id)
                    self.pipeline.note(build_id, "the worker running this build stopped answering: back in the queue")
                for build_id in reaped.failed:
                    log.warning("build %d lost its worker too often: failed", build_id)
                    self.pipeline.note(build_id, "FAILED: its workers stopped answering too often")
                for build_id in reaped.cancelled:
                    log.info("build %d, cancelled, lost its worker: cancelled", build_id)
                    self.pipeline.note(build_id, "cancelled; the worker running this build stopped answering")
            except Exception as error:
                if isinstance(error, DBAPIError):  # one line, not a traceback every beat while it is away
                    log.warning("heartbeat: the database cannot be reached (%s); retrying", str(error.orig).strip())
                else:
                    log.exception("heartbeat failed; retrying")
                self._give_up_expired_leases(time.monotonic() - renewed_at)

    def _sweep_orphans(self) -> None:
        """Remove this host's build containers, scratch filesystems and cgroups that no running attempt owns, at
        once (a killed worker's) and every ``ORPHAN_SWEEP_INTERVAL``; in a thread of its own, as the engine may wait
        minutes on its storage lock (another build pulling an image) and the heartbeat must not."""
        while True:
            try:
                for name in remove_orphan_containers(self.settings, self.sessions):
                    log.warning("removed the container %s: no running build owns it", name)
                for mount_point in remove_orphan_scratch_volumes(self.pipeline.data, self.sessions):
                    log.warning("removed the scratch filesystem %s: no running build owns it", mount_point)
                for cgroup in remove_orphan_cgroups(self.pipeline.data, self.sessions):
                    log.warning("removed the cgroup %s: no running build owns it", cgroup)
            except DBAPIError as error:
                log.warning("orphan sweep: the database cannot be reached (%s)", str(error.orig).strip())
            except Exception:
                log.exception("orphan sweep failed; trying again later")
            if self.stopping.wait(ORPHAN_SWEEP_INTERVAL):
                return

    def _give_up_expired_leases(self, unrenewed_for: float) -> None:
        """Cut off from the database past the lease: another worker may own these builds now, so stop them
        (their script is killed; their publish would be refused by its fence anyway)."""
        if unrenewed_for < self.settings.build_lease_seconds:
            return
        with self.lock:
            expired = self.running - self.lost
            self.lost |= expired
        for build_id in sorted(expired):
            log.warning(
                "build %d: its lease could not be renewed for %.0f s and has expired: stopping it",
                build_id,
                unrenewed_for,
            )

    def _retention(self, policy: Policy | None) -> None:
        """The configured retention policy (or none: housekeeping alone), every ``gc_interval`` seconds (several
        workers may run it at once)."""
        while not self.stopping.is_set():
            try:
                report = collect_garbage(self.settings, self.sessions, policy, dry_run=False)
                for item in report.freed:
                    log.info("retention removed %s (%s, %d bytes)", item.what, item.path, item.size)
            except Exception:
                log.exception("retention failed; trying again later")
            self.stopping.wait(self.settings.gc_interval)

    def _kernel_feeds(self) -> None:
        """Poll the kernel feeds whose turn it is (another worker may have polled them already)."""
        check_every = min(self.settings.kernel_feed_interval, MAX_FEED_CHECK_INTERVAL)
        while not self.stopping.is_set():
            try:
                poll_due_feeds(self.sessions, self.settings, self.pipeline.data.work, keep_sources_apart)
            except DBAPIError as error:
                log.warning("kernel feeds: the database cannot be reached (%s); retrying", str(error.orig).strip())
            except Exception:
                log.exception("kernel feeds: polling failed; trying again later")
            self.stopping.wait(check_every)


def keep_sources_apart(settings: Settings, url: str, kernels: list[str]) -> None:
    """``feeds.keep_sources`` in a process of its own, as a build runs: it downloads mirror packages and reads
    them with librpm and the unpacker, and a crash there (a C library on a hostile package) or a hang must end
    that process only, never the worker's heartbeat and slots. Bounded by ``OFEDREPO_BUILD_TIMEOUT``; what
    it could not keep is tried again at the next poll (``kept_sources.want``)."""
    process = process_context().Process(
        target=_keep_sources_child, args=(settings, url, kernels, logging.getLogger().level), name="keep-sources"
    )
    process.start()
    process.join(settings.build_timeout)
    if process.is_alive():
        process.kill()
        process.join()
        log.warning("kernel feed %s: keeping sources took longer than %g s: stopped", url, settings.build_timeout)
    elif process.exitcode:
        log.warning("kernel feed %s: keeping sources ended with status %s", url, process.exitcode)


def _keep_sources_child(settings: Settings, url: str, kernels: list[str], log_level: int) -> None:
    logs.configure(settings.log_format, log_level)
    keep_sources(settings, url, kernels)


def main(settings: Settings, concurrency: int | None = None) -> None:
    """``ofedrepo worker``: migrate, then work until stopped."""
    upgrade(make_engine(settings.resolved_database_url))
    Worker(settings, concurrency).run_forever()
