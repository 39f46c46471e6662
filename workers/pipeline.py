"""One build, start to end: kernel sources, the vendor script, verification, publishing.

Every step writes a line into the build log (``<data_dir>/builds/<id>.log``), which clients read while it
grows; the script's own output goes there too. Whatever fails ends the build ``failed`` with one line that
says why; the scratch directory of the attempt is removed in every case. A version appears only through
the publisher, which makes it visible whole or not at all, so a worker killed at any point leaves no
partial version behind.
"""

import logging
import shlex
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import container_image
from ofedrepo.bundles import BundleStore
from ofedrepo.config import Settings
from ofedrepo.errors import BuildFailed, OfedrepoError, ToolFailed
from ofedrepo.kernel_sources import KernelSources
from ofedrepo.models import Build, BuildState
from ofedrepo.process import clean_environment, run
from ofedrepo.publish import Publisher
from ofedrepo.storage import DataDir
from ofedrepo.unpack import open_bundle
from ofedrepo.verify import verify_kernel_packages
from workers import queue
from workers.runner import add_kernel_support_argv, container_argv, container_kill_argv, run_streaming

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildJob:
    """What a build needs, read from the database once at its start."""

    id: int
    kernel: str
    bundle_name: str
    bundle_root: Path
    distro: str
    attempts: int


class BuildLog:
    """The build's log file: timestamped notes from ofedrepo, raw output from the script."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def note(self, text: str) -> None:
        with self.lock:
            self.stream.write(f"[ofedrepo {time.strftime('%H:%M:%S')}] {text}\n".encode())
            self.stream.flush()

    # The publisher reports progress through step/advance; its steps are worth a line each.
    def step(self, description: str, total: int | None = None) -> None:
        self.note(description)

    def advance(self, amount: int = 1) -> None:
        pass


class Pipeline:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], worker_id: str) -> None:
        self.settings = settings
        self.sessions = sessions
        self.worker_id = worker_id
        self.data = DataDir(settings.data_dir).ensure()
        self.bundles = BundleStore(settings, sessions)
        self.publisher = Publisher(settings, sessions)

    def note(self, build_id: int, text: str) -> None:
        """A line in a build's log from outside its run (the reaper's)."""
        with self.data.build_log(build_id).open("ab") as stream:
            BuildLog(stream).note(text)

    def job(self, build_id: int) -> BuildJob:
        with self.sessions() as session:
            build = session.get(Build, build_id)
            assert build is not None and build.bundle is not None
            return BuildJob(
                id=build.id,
                kernel=build.kernel,
                bundle_name=build.bundle.name,
                bundle_root=self.bundles.root(build.bundle),
                distro=build.bundle.distro,
                attempts=build.attempts,
            )

    def run(self, build_id: int, should_stop: Callable[[], str | None]) -> BuildState:
        """Run the build this worker has claimed and record how it ended."""
        job = self.job(build_id)
        scratch = self.data.new_scratch(self.data.work, f"build-{job.id}")
        with self.data.build_log(job.id).open("ab") as stream:
            build_log = BuildLog(stream)
            build_log.note(
                f"build {job.id}: {job.bundle_name} for {job.kernel}, attempt {job.attempts} of "
                f"{self.settings.build_max_attempts}, worker {self.worker_id}"
            )
            try:
                version = self._build(job, scratch, build_log, should_stop)
            except Stopped as stop:
                return self._stopped(job, build_log, stop.reason)
            except OfedrepoError as error:
                build_log.note(f"FAILED: {error}")
                queue.finish(self.sessions, job.id, self.worker_id, BuildState.FAILED, error=str(error))
                return BuildState.FAILED
            except Exception as error:  # a bug of ours: keep the worker alive, keep the evidence in the log
                build_log.note(f"FAILED: internal error: {error!r}\n{traceback.format_exc()}")
                log.exception("build %d failed with an internal error", job.id)
                message = f"internal error: {error!r}"
                queue.finish(self.sessions, job.id, self.worker_id, BuildState.FAILED, error=message)
                return BuildState.FAILED
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if not queue.finish(self.sessions, job.id, self.worker_id, BuildState.SUCCEEDED, version=version):
                build_log.note("this worker's lease expired meanwhile; another worker owns the build now")
                return BuildState.RUNNING
            build_log.note(f"succeeded: version {version}")
            return BuildState.SUCCEEDED

    def _stopped(self, job: BuildJob, build_log: BuildLog, reason: str) -> BuildState:
        if reason == "cancelled":
            build_log.note("cancelled by request; the script's process group was killed")
            queue.finish(self.sessions, job.id, self.worker_id, BuildState.CANCELLED, error="cancelled while running")
            return BuildState.CANCELLED
        build_log.note(f"stopped ({reason}); the build goes back to the queue")
        queue.release(self.sessions, job.id, self.worker_id)
        return BuildState.QUEUED

    def _build(self, job: BuildJob, scratch: Path, build_log: BuildLog, should_stop: Callable[[], str | None]) -> int:
        sources = KernelSources(self.settings, self.data, build_log.note).find(job.kernel)
        output = scratch / "output"
        home = scratch / "home"
        output.mkdir(parents=True)
        home.mkdir()
        command = add_kernel_support_argv(job.bundle_root, job.kernel, sources, output, job.distro)
        on_kill = None
        if self.settings.build_runner != "local":
            engine = self.settings.build_runner
            name = f"ofedrepo-build-{job.id}-{uuid.uuid4().hex[:8]}"
            image = container_image(self.settings, job.distro)
            command = container_argv(engine, image, name, command, [job.bundle_root, sources], scratch, home)

            def on_kill() -> None:
                try:
                    run(container_kill_argv(engine, name), env=clean_environment(home), timeout=60)
                except ToolFailed as error:
                    build_log.note(f"could not remove container {name}: {error}")

        build_log.note("$ " + shlex.join(command))
        outcome = run_streaming(
            command,
            env=clean_environment(home),
            cwd=scratch,
            log=build_log.stream,
            timeout=self.settings.build_timeout,
            should_stop=should_stop,
            on_kill=on_kill,
        )
        if outcome.stopped == "timed out":
            raise BuildFailed(f"mlnx_add_kernel_support.sh did not finish within {self.settings.build_timeout} s")
        if outcome.stopped:
            raise Stopped(outcome.stopped)
        if outcome.returncode != 0:
            raise BuildFailed(f"mlnx_add_kernel_support.sh exited with status {outcome.returncode} (see the log)")
        produced = sorted(output.glob("*-ext.tgz"))
        if len(produced) != 1:
            found = ", ".join(path.name for path in output.iterdir()) or "nothing"
            raise BuildFailed(f"expected one MLNX_OFED_LINUX-...-ext.tgz from the script, found {found}")
        build_log.note(f"script produced {produced[0].name}")
        with open_bundle(produced[0], self.data, self.publisher.limits) as rebuilt:
            if rebuilt.identity.name != job.bundle_name:
                raise BuildFailed(f"the script produced {rebuilt.identity.name}, not a rebuild of {job.bundle_name}")
            verified = verify_kernel_packages(rebuilt.rpms, rebuilt.packages, job.kernel)
            build_log.note(
                f"verified: {verified.modules} kernel modules in {verified.packages} packages are under "
                f"/lib/modules/{job.kernel}/ with vermagic {job.kernel}"
            )
            stop = should_stop()
            if stop:
                raise Stopped(stop)
            result = self.publisher.publish_opened(rebuilt, job.kernel, job.id, build_log)
        build_log.note(
            f"published {result.bundle_name}/{result.kernel} version {result.version}"
            + ("" if result.created else " (identical to the latest version)")
        )
        return result.version


class Stopped(Exception):
    """The run was stopped before publishing: cancelled by a client, or the worker is shutting down."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
