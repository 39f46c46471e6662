"""One build in a process of its own, supervised by its worker (pulpcore's supervisor model).

A build runs code that can crash or hang: librpm and createrepo_c on hostile packages, downloads from slow
mirrors, the vendor's tool. In a thread of the worker, a crash in a C extension took every slot, the heartbeat
and (with the embedded worker) the API with it, and a hung Python step kept its lease for ever. So each build
runs in a child process, and the worker's slot thread only supervises it:

- the child is forked from a forkserver that preloaded the pipeline (a fresh, single-threaded process: no
  lock of the worker's threads is inherited, and a build starts in milliseconds) and starts a session of its
  own (so its process group can be killed whole). It ends with its worker: it holds the reading end of a pipe
  whose only writer is the worker, and kills its process group when that pipe says the worker is gone (the
  forkserver, its parent, lives on while any of its children does, so a parent-death signal would not);
- why it must stop (a cancel, a lost lease, preemption, the worker stopping, the whole-build deadline) is
  written into shared memory, which the pipeline reads at each checkpoint and every 0.2 s while the vendor's
  tool runs; it then stops the tool and records the outcome itself;
- a child that has not ended ``STOP_GRACE`` seconds after being asked (stuck in a download, in librpm, in a
  publish) is killed with its process group, and the worker records the outcome and removes what the build
  left (its cgroups, its container, its scratch);
- a child that dies by a signal nobody sent (SIGSEGV in a C extension, the OOM killer) fails its build with
  "killed by signal N"; the worker and its other slots go on.
"""

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Protocol

from ofedrepo import logs
from ofedrepo.builds.lifecycle import StopReason
from ofedrepo.config import Settings
from ofedrepo.db import unreachable_database

log = logging.getLogger(__name__)

#: Seconds a build has, once asked to stop, to stop itself before it is killed.
STOP_GRACE = 5.0
#: The exit status of a build process whose database was lost under it (down, unreachable; not a statement it
#: refused): not the build's fault, it is retried.
DATABASE_FAILED = 75
_REASONS = list(StopReason)


class Target(Protocol):
    """What a build process runs: the pipeline (``run_pipeline``), or a stand-in a test supplies."""

    def __call__(
        self, settings: Settings, build_id: int, worker_id: str, deadline: float, should_stop: Callable[[], Any]
    ) -> None: ...


def run_pipeline(
    settings: Settings, build_id: int, worker_id: str, deadline: float, should_stop: Callable[[], Any]
) -> None:
    """The build, start to end (``workers.pipeline``), with a database engine of the process's own."""
    from ofedrepo.db import make_engine, session_factory
    from workers.pipeline import Pipeline

    engine = make_engine(settings.resolved_database_url)
    try:
        Pipeline(settings, session_factory(engine), worker_id).run(build_id, should_stop, deadline)
    finally:
        engine.dispose()


def process_context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["workers.pipeline"])
    return context


def _end_with_worker(worker: Connection) -> None:
    """Kill this build's whole process group once its worker is gone (the pipe's only writer closed)."""
    try:
        worker.recv_bytes()
    except (EOFError, OSError):
        pass
    os.killpg(0, signal.SIGKILL)


def _child(
    target: Target,
    settings: Settings,
    build_id: int,
    worker_id: str,
    deadline: float,
    stop_code: "Synchronized[int]",
    log_level: int,
    worker: Connection,
) -> None:
    os.setsid()
    threading.Thread(target=_end_with_worker, args=(worker,), name="worker-watch", daemon=True).start()
    logs.configure(settings.log_format, log_level)

    def should_stop() -> StopReason | None:
        code = stop_code.value
        if code:
            return _REASONS[code - 1]
        return StopReason.TIMED_OUT if time.time() > deadline else None

    try:
        target(settings, build_id, worker_id, deadline, should_stop)
    except BaseException as error:
        if unreachable_database(error):
            log.warning("build %d: the database failed under it (%r)", build_id, error)
            os._exit(DATABASE_FAILED)
        log.exception("build %d broke out of its pipeline", build_id)
        os._exit(1)
    os._exit(0)


@dataclass
class BuildProcess:
    """The worker's handle on one build's process."""

    build_id: int
    process: BaseProcess
    stop_code: "Synchronized[int]"
    lifeline: Connection
    """The writing end of the pipe the build watches: closed when the build is over, or the worker is gone."""
    asked: StopReason | None = None
    asked_at: float = 0.0
    killed: bool = False

    @classmethod
    def start(
        cls, settings: Settings, build_id: int, worker_id: str, deadline: float, target: Target = run_pipeline
    ) -> "BuildProcess":
        context = process_context()
        stop_code: Synchronized[int] = context.Value("i", 0, lock=False)
        watched, lifeline = context.Pipe(duplex=False)
        process = context.Process(
            target=_child,
            args=(target, settings, build_id, worker_id, deadline, stop_code, logging.getLogger().level, watched),
            name=f"build-{build_id}",
        )
        process.start()
        watched.close()  # the child's copy is the only reading end left
        return cls(build_id, process, stop_code, lifeline)

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def wait(self, seconds: float) -> None:
        self.process.join(seconds)
        if self.process.exitcode is not None:
            self.lifeline.close()

    def ask_to_stop(self, reason: StopReason) -> None:
        """Tell the build why it must stop (once: the first reason is the one that counts)."""
        if self.asked is None:
            self.asked, self.asked_at = reason, time.monotonic()
            self.stop_code.value = _REASONS.index(reason) + 1

    @property
    def overdue(self) -> bool:
        """Asked to stop more than ``STOP_GRACE`` seconds ago, and still running."""
        return self.asked is not None and time.monotonic() - self.asked_at > STOP_GRACE and self.alive

    def kill(self) -> None:
        """SIGKILL the build's whole process group (it leads a session of its own)."""
        self.killed = True
        self.lifeline.close()
        pid = self.process.pid
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.join(10)
