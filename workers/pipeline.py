"""One build, start to end: kernel sources, the vendor script, verification, publishing.

    bundle already holds K's modules? ──yes──> publish its own packages for K (no compile)
        │no
    local runner: can this host run NVIDIA's script? (preflight) ─> kernel sources ─> the script, its output
    and its own log files streamed into the build log ─> exit 30 ("already supported")? publish the bundle's
    own packages ─> failed? keep the scratch, name the compiler's error ─> the -ext tgz: choose K's package
    set, regenerate the metadata packages, verify the modules, publish

Every step writes a line into the build log (``<data_dir>/builds/<id>.log``), which clients read while it
grows. Whatever fails ends the build ``failed`` with one line that says why. The scratch directory of the
attempt is removed, except when the script failed: then it is set aside (``work/failed-build-<id>-*``) for
``OFEDREPO_BUILD_KEEP_FAILED_SECONDS``. A version appears only through the publisher, which makes it
visible whole or not at all, so a worker killed at any point leaves no partial version behind.
"""

import logging
import os
import re
import shlex
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import lifecycle
from ofedrepo.builds.kernel_sources import KernelSources
from ofedrepo.builds.lifecycle import StopReason
from ofedrepo.builds.requests import container_image
from ofedrepo.bundles.store import BundleStore
from ofedrepo.bundles.vendor import StoredBundle, ToolEnded, ToolRun
from ofedrepo.bundles.vendors import vendor_of
from ofedrepo.config import CONFIG_FILE_VARIABLE, Settings
from ofedrepo.db import unreachable_database
from ofedrepo.errors import BuildFailed, OfedrepoError, ToolFailed, disk_full, disk_full_message
from ofedrepo.models import Build, BuildState
from ofedrepo.process import clean_environment, run
from ofedrepo.repos import queries
from ofedrepo.repos.publish import Fence, Publisher, PublishResult
from ofedrepo.storage import MAX_TREE_DEPTH, DataDir, owned_by, remove_tree
from workers.preflight import local_runner_problem, read_host_facts
from workers.runner import (
    LogFollower,
    Write,
    container_argv,
    container_kill_argv,
    container_names_argv,
    first_error,
    host_layout,
    run_streaming,
    sandbox_argv,
)
from workers.sandbox import (
    ENTRY_COST,
    STAGE,
    Confinement,
    RunCgroup,
    ScratchMeter,
    confined_argv,
    hand_over,
    staged_sources,
)
from workers.scratch_volume import ScratchVolume, detach, image_of, mounted_under

log = logging.getLogger(__name__)

#: Seconds a build's container may outlive the build's deadline (its worker kills it at the deadline; this is
#: for a worker that was killed itself).
CONTAINER_GRACE = 60
#: Build containers are named ``<prefix><build id>-<random>``: what a killed build left can be found by name.
CONTAINER_PREFIX = "ofedrepo-build-"

StopCheck = Callable[[], StopReason | None]


@dataclass(frozen=True)
class BuildJob:
    """What a build needs, read from the database once at its start."""

    id: int
    repo_id: int
    kernel: str
    bundle: StoredBundle
    attempts: int
    rebuild: bool
    deadline: float
    """When the whole build must be over (epoch seconds): the vendor's tool gets what is left of it."""

    @property
    def bundle_name(self) -> str:
        return self.bundle.name

    @property
    def distro(self) -> str:
        return self.bundle.identity.distro


class BuildLog:
    """The build's log file: timestamped notes from ofedrepo, the script's output, its log files' growth.

    What the tool writes stops at ``limit`` bytes of log (``OFEDREPO_BUILD_LOG_MAX_BYTES``), with one line that
    says so; ofedrepo's own notes, a few lines per build, are always written, so the end of a build is in its
    log whatever its tool printed. A full disk loses the lines that do not fit, never the build: how it ended
    is recorded in the database all the same (the service's log says the build log is incomplete)."""

    def __init__(self, stream: IO[bytes], limit: int | None = None) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.source = ""
        self.limit = limit
        self.cut = False
        self.lost = False
        """Whether a full disk refused a line: nothing more is written."""
        self.tool = "the tool"
        """Whose output the log is receiving (its rebuild tool's name, set when it starts)."""

    @classmethod
    @contextmanager
    def appending(cls, path: Path, limit: int | None = None) -> Iterator["BuildLog"]:
        """The log at ``path``, appended to without a buffer: each line is on disk (or lost to a full disk) when
        written, and nothing is left to flush, and fail, at the end."""
        with path.open("ab", buffering=0) as stream:
            yield cls(stream, limit)

    def _put(self, data: bytes) -> None:
        if self.lost:
            return
        try:
            self.stream.write(data)
            self.stream.flush()
        except OSError as error:
            if not disk_full(error):
                raise
            self.lost = True
            log.warning("a build log is incomplete: %s", disk_full_message(error))

    def note(self, text: str) -> None:
        with self.lock:
            self._put(f"[ofedrepo {time.strftime('%H:%M:%S')}] {text}\n".encode("utf-8", "backslashreplace"))
            self.source = ""

    def full(self) -> bool:
        """Whether the tool's output may no longer be added."""
        return self.cut

    def write(self, source: str, data: bytes) -> None:
        """Output of the tool (``source`` "") or of one of its log files, headed like ``tail -f`` does."""
        with self.lock:
            if self.cut:
                return
            if self.limit is not None and self.stream.tell() + len(data) > self.limit:
                self.cut = True
                self._put(
                    f"\n[ofedrepo {time.strftime('%H:%M:%S')}] the build log reached its cap of {self.limit} bytes "
                    "(OFEDREPO_BUILD_LOG_MAX_BYTES): the rest of the tool's output is cut\n".encode()
                )
                self.source = ""
                return
            if source != self.source:
                self._put(f"==> {source or self.tool + ' output'} <==\n".encode("utf-8", "backslashreplace"))
                self.source = source
            self._put(data)

    # The publisher reports progress through step/advance/note; its steps are worth a line each.
    def step(self, description: str, total: int | None = None) -> None:
        self.note(description)

    def advance(self, amount: int = 1) -> None:
        pass


class ScriptFailed(BuildFailed):
    """The vendor script failed; its scratch directory is worth keeping."""


class Pipeline:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], worker_id: str) -> None:
        self.settings = settings
        self.sessions = sessions
        self.worker_id = worker_id
        self.data = DataDir(settings.data_dir).ensure()
        self.bundles = BundleStore(settings, sessions)
        self.workspace = self.bundles.workspace
        self.publisher = Publisher(settings, sessions)

    def note(self, build_id: int, text: str) -> None:
        """A line in a build's log from outside its run (the reaper's)."""
        with BuildLog.appending(self.data.build_log(build_id)) as build_log:
            build_log.note(text)

    def job(self, build_id: int, deadline: float | None = None) -> BuildJob:
        with self.sessions() as session:
            build = session.get(Build, build_id)
            assert build is not None and build.bundle is not None
            return BuildJob(
                id=build.id,
                repo_id=build.repo_id,
                kernel=build.kernel,
                bundle=self.bundles.stored(build.bundle),
                attempts=build.attempts,
                rebuild=build.rebuild,
                deadline=deadline if deadline is not None else time.time() + self.settings.build_timeout,
            )

    def run(self, build_id: int, should_stop: StopCheck, deadline: float | None = None) -> BuildState:
        """Run the build this worker has claimed and record how it ended (by ``deadline``, epoch seconds)."""
        job = self.job(build_id, deadline)
        owned_by(attempt_name(self.data.instance, job.id, job.attempts))
        scratch = self.data.new_scratch(self.data.work, "tool")
        volume = ScratchVolume(scratch, self.settings.build_max_scratch_bytes, self.settings.build_scratch_filesystem)
        with BuildLog.appending(self.data.build_log(job.id), self.settings.build_log_max_bytes) as build_log:
            build_log.note(
                f"build {job.id}: {job.bundle_name} for {job.kernel}, attempt {job.attempts} of "
                f"{self.settings.build_max_attempts}, worker {self.worker_id}, process {os.getpid()}"
            )
            # How it ended is recorded only after its scratch (and the filesystem it had) is gone: a build no
            # longer running is what lets the orphan sweep take a scratch filesystem for a killed worker's.
            version: int | None = None
            stopped: StopReason | None = None
            failure: str | None = None
            try:
                version = self._build(job, volume, build_log, should_stop)
            except Stopped as stop:
                stopped = stop.reason
            except OfedrepoError as error:
                keep = isinstance(error, ScriptFailed) and self.settings.build_keep_failed_seconds > 0
                if keep and scratch.exists():
                    self._keep_failed(job, volume, build_log)
                failure = str(error)
                build_log.note(f"FAILED: {failure}")
            except Exception as error:  # a bug of ours: keep the worker alive, keep the evidence in the log
                if unreachable_database(error):  # the database, not the build, failed: the supervisor requeues it
                    build_log.note(f"the database could not be reached ({error!r}); the build is not failed for it")
                    raise
                if disk_full(error):
                    failure = disk_full_message(error)
                    build_log.note(f"FAILED: {failure}")
                else:
                    build_log.note(f"FAILED: internal error: {error!r}\n{traceback.format_exc()}")
                    log.exception("build %d failed with an internal error", job.id)
                    failure = f"internal error: {error!r}"
            finally:
                volume.release()
                remove_tree(scratch)
                remove_tree(_private(scratch))
                for expired in self.data.expired_failed_builds(self.settings.build_keep_failed_seconds):
                    remove_tree(expired)
            if stopped is not None:
                return self._stopped(job.id, build_log, stopped)
            if failure is not None:
                lifecycle.finish(self.sessions, job.id, self.worker_id, BuildState.FAILED, error=failure)
                return BuildState.FAILED
            recorded = lifecycle.finish(self.sessions, job.id, self.worker_id, BuildState.SUCCEEDED, version=version)
            if recorded is None:
                build_log.note("this worker's lease expired meanwhile; another worker owns the build now")
                return BuildState.RUNNING
            if recorded == BuildState.CANCELLED:
                build_log.note(f"cancelled by request (version {version}, already published, is not this build's)")
                return recorded
            build_log.note(f"succeeded: version {version}")
            return BuildState.SUCCEEDED

    def record_published(self, build_id: int) -> bool:
        """When the build has published its version (its process then died, or was killed, before recording
        the end), record it as succeeded with that version; whether it had."""
        with self.sessions() as session:
            published = queries.version_of_build(session, build_id)
            number = None if published is None else published.number
        if number is None:
            return False
        if lifecycle.finish(self.sessions, build_id, self.worker_id, BuildState.SUCCEEDED, version=number):
            self.note(build_id, f"succeeded: version {number} (published before the build's process ended)")
        return True

    def _keep_failed(self, job: BuildJob, volume: ScratchVolume, build_log: BuildLog) -> None:
        """Set the failed script's scratch aside for a while, within the total budget for kept scratch: its
        directory, or the image of its filesystem (``scratch_volume``)."""
        scratch = volume.scratch
        size = volume.kept_size()
        if not self.data.room_for_failed_build(size, self.settings.build_keep_failed_max_bytes):
            build_log.note(
                f"the script's scratch ({size} bytes) is not kept: larger than OFEDREPO_BUILD_KEEP_FAILED_MAX_BYTES "
                f"({self.settings.build_keep_failed_max_bytes})"
            )
            return
        hours = self.settings.build_keep_failed_seconds / 3600
        if volume.mounted:
            image = self.data.failed_build_name(job.id, ".img")
            if volume.keep_as(image):
                build_log.note(
                    f"the script's work and log directories are kept in {image} for {hours:g} h (an ext4 image: "
                    f"mount -o loop,ro,nosuid,nodev,noexec {image} /mnt)"
                )
                return
        else:
            kept = self.data.keep_failed_build(scratch, job.id)
            if kept is not None:
                build_log.note(f"the script's work and log directories are kept in {kept} for {hours:g} h")
                return
        build_log.note("the script's scratch is not kept: its tree is deeper than can be walked")

    def stopped(self, build_id: int, reason: StopReason) -> BuildState:
        """Record a build stopped for ``reason`` from outside its run (its worker killed the build's process)."""
        with BuildLog.appending(self.data.build_log(build_id)) as build_log:
            return self._stopped(build_id, build_log, reason)

    def _stopped(self, build_id: int, build_log: BuildLog, reason: StopReason) -> BuildState:
        """What a stop means for the build (``lifecycle.StopReason``), recorded with a line in its log."""
        if reason == StopReason.LEASE_LOST:
            build_log.note("this worker lost the build's lease (it could not renew it in time): stopped here")
            return BuildState.QUEUED
        if reason == StopReason.CANCELLED:
            build_log.note("cancelled by request; the build's processes were stopped")
            lifecycle.finish(
                self.sessions, build_id, self.worker_id, BuildState.CANCELLED, error="cancelled while running"
            )
            return BuildState.CANCELLED
        if reason in (StopReason.TIMED_OUT, StopReason.SCRATCH_FULL):
            error = (
                f"the build did not finish within {self.settings.build_timeout} s (OFEDREPO_BUILD_TIMEOUT)"
                if reason == StopReason.TIMED_OUT
                else "its scratch directory grew past OFEDREPO_BUILD_MAX_SCRATCH_BYTES"
            )
            build_log.note(f"FAILED: {error}")
            lifecycle.finish(self.sessions, build_id, self.worker_id, BuildState.FAILED, error=error)
            return BuildState.FAILED
        if reason == StopReason.PREEMPTED:
            build_log.note(
                "stopped: a person's request is waiting for a slot, and a kernel feed queued this build; it goes "
                "back to the queue and starts again afterwards"
            )
            lifecycle.release(self.sessions, build_id, self.worker_id, attempt_counts=False)
            return BuildState.QUEUED
        build_log.note(f"stopped ({reason}); the build goes back to the queue")
        lifecycle.release(self.sessions, build_id, self.worker_id)
        return BuildState.QUEUED

    @property
    def _module_certificate(self) -> Path | None:
        return self.settings.module_sign_pub_key

    def _build(self, job: BuildJob, volume: ScratchVolume, build_log: BuildLog, should_stop: StopCheck) -> int:
        self.publisher.recover(job.repo_id, job.bundle_name, job.kernel)
        with self.sessions() as session:
            published = queries.version_of_build(session, job.id)
        if published is not None:
            # An earlier attempt published it, then its worker died before recording the end.
            number = published.number
            build_log.note(f"version {number} was published by an earlier attempt: recording it, nothing to redo")
            return number
        if not job.rebuild:
            build_log.note(
                f"{job.bundle_name} already holds kernel modules for {job.kernel} (its GA kernel): publishing its "
                "own packages, no rebuild"
            )
            return self._publish_own_packages(job, build_log)
        self._preflight(job, build_log)
        volume.create(build_log.note)
        scratch = volume.scratch
        home = scratch / "home"
        home.mkdir()
        vendor = vendor_of(job.bundle.identity.kind)
        with KernelSources(self.settings, self.data, build_log.note).held(job.kernel) as sources:
            run = vendor.tool_run(job.bundle, job.kernel, sources, scratch, self.workspace)
            ended = self._run_tool(job, run, volume, home, build_log, should_stop)
        # What the worker makes of the tool's output goes to a directory of its own beside the scratch, never
        # into the scratch the tool could write: a link it planted there (`collected`, `rebuilt`) would have
        # taken the worker's files anywhere on the host.
        private = _private(scratch)
        private.mkdir(mode=0o700)
        with vendor.collect(job.bundle, job.kernel, run, ended, private, self.workspace, build_log.note) as rebuilt:
            if rebuilt is None:
                lifecycle.mark_no_rebuild(self.sessions, job.id, self.worker_id)
                return self._publish_own_packages(job, build_log)
            stop = should_stop()
            if stop:
                raise Stopped(stop)
            result = self.publisher.publish_opened(
                rebuilt, job.kernel, job.id, build_log, self._module_certificate, self._still_mine(job)
            )
        return self._published(result, build_log)

    def _still_mine(self, job: BuildJob) -> Fence:
        """The publish's fence: a worker whose lease expired (cut off from the database, say) never publishes."""

        def check(session: Session) -> None:
            reason = lifecycle.hold(session, job.id, self.worker_id, self.settings.build_lease_seconds)
            if reason is not None:
                raise Stopped(reason)

        return check

    def _publish_own_packages(self, job: BuildJob, build_log: BuildLog) -> int:
        vendor = vendor_of(job.bundle.identity.kind)
        with vendor.open_stored(job.bundle, self.workspace, build_log.note) as bundle:
            result = self.publisher.publish_opened(bundle, job.kernel, job.id, build_log, fence=self._still_mine(job))
        return self._published(result, build_log, " from the bundle's own packages")

    @staticmethod
    def _published(result: PublishResult, build_log: BuildLog, how: str = "") -> int:
        build_log.note(
            f"published {result.bundle_name}/{result.kernel} version {result.version}{how}"
            + ("" if result.created else " (identical to the latest version)")
        )
        return result.version

    def _preflight(self, job: BuildJob, build_log: BuildLog) -> None:
        for setting, path in (
            ("OFEDREPO_MODULE_SIGN_PRIV_KEY", self.settings.module_sign_priv_key),
            ("OFEDREPO_MODULE_SIGN_PUB_KEY", self.settings.module_sign_pub_key),
        ):
            if path is not None and not path.is_file():
                raise BuildFailed(f"{setting} names {path}, which is not a readable file")
        if self.settings.build_runner != "local":
            return
        if not self.settings.build_local_preflight:
            build_log.note("local runner: host checks are off (OFEDREPO_BUILD_LOCAL_PREFLIGHT=false)")
            return
        problem = local_runner_problem(read_host_facts(), job.distro)
        if problem:
            raise BuildFailed(f"cannot build on this host: {problem}")

    def _signing_environment(self, scratch: Path) -> dict[str, str]:
        """``MODULE_SIGN_*`` naming copies of the keys in the scratch (removed after the run): the script runs as
        an id of its own, which the operator's key files need not be readable by."""
        priv, pub = self.settings.module_sign_priv_key, self.settings.module_sign_pub_key
        if priv is None or pub is None:
            return {}
        keys = scratch / "module-signing"
        keys.mkdir(mode=0o700)
        environment = {}
        for variable, path in (("MODULE_SIGN_PRIV_KEY", priv), ("MODULE_SIGN_PUB_KEY", pub)):
            copy = keys / path.name
            shutil.copyfile(path, copy)
            copy.chmod(0o400)
            environment[variable] = str(copy)
        return environment

    def _owner(self, confinement: Confinement) -> int:
        """Who the tool's root is on the host: what it copies as root must belong to that id. Docker maps no
        ids per container, so there the tool's root is the host's."""
        return 0 if self.settings.build_runner == "docker" else confinement.owner

    def _run_tool(
        self,
        job: BuildJob,
        tool: ToolRun,
        volume: ScratchVolume,
        home: Path,
        build_log: BuildLog,
        should_stop: StopCheck,
    ) -> ToolEnded:
        """Run the vendor's tool in the sandbox or a builder container, confined (``workers.sandbox``), its output
        and the log files it writes under ``tool.logs`` streamed into the build log; how it ended, when it ended
        with one of ``tool.ok``."""
        confinement = Confinement.of(self.settings)
        scratch = volume.scratch
        command = tool.command
        signing = self._signing_environment(scratch)
        if signing:
            signing.update(tool.signing_switch)
        environment = clean_environment(home, signing)
        owner = self._owner(confinement)
        try:
            hand_over(job.bundle.root.parent, owner)
            hand_over(scratch, owner)
        except PermissionError as error:
            raise BuildFailed(
                f"cannot hand {error.filename} to uid {owner}, which the tool runs as: the bundle store and the "
                "work directory must belong to the worker's user, or the worker must run as root"
            ) from None
        on_kill = None
        cgroup = None
        if self.settings.build_runner == "local":
            if shutil.which("bwrap") is None:
                raise BuildFailed("the local runner sandboxes the script with bubblewrap: install it (bwrap)")
            config = os.environ.get(CONFIG_FILE_VARIABLE)
            layout = host_layout([Path(config).resolve()] if config else [])
            mounted = [*tool.inputs, scratch, *(source for source, _ in tool.placed), *([tool.tmp] if tool.tmp else [])]
            staged = staged_sources(mounted) if confinement.uid is not None else {}
            if staged:
                STAGE.mkdir(mode=0o755, exist_ok=True)
            command = sandbox_argv(
                command, layout, tool.inputs, [scratch], scratch, tool.placed, tool.tmp, staged,
                tmpfs_bytes=confinement.max_memory // 4,
            )  # fmt: skip
            cgroup = RunCgroup.create(attempt_name(self.data.instance, job.id, job.attempts), confinement)
            command = confined_argv(command, confinement, cgroup, staged)
            environment["TMPDIR"] = "/tmp"  # the sandbox's own /tmp
        else:
            engine = self.settings.build_runner
            name = f"{attempt_container_prefix(self.data.instance, job.id, job.attempts)}{uuid.uuid4().hex[:8]}"
            image = container_image(self.settings, job.distro)
            command = container_argv(
                engine, image, name, command, tool.inputs, scratch, home, confinement, signing, tool.placed, tool.tmp,
                max_seconds=max(1, round(job.deadline - time.time())) + CONTAINER_GRACE,
            )  # fmt: skip
            # The engine is the operator's: it needs the worker's environment (rootless podman's XDG_RUNTIME_DIR,
            # CONTAINERS_CONF, DOCKER_HOST), less ofedrepo's own settings; the tool inside gets only what -e gives.
            environment = engine_environment()

            def on_kill() -> None:
                try:
                    run(container_kill_argv(engine, name), env=engine_environment(), timeout=60)
                except ToolFailed as error:
                    build_log.note(f"could not remove container {name}: {error}")

        build_log.note(
            f"confined: root in a namespace of its own, uid {owner} outside, no capabilities; at most "
            f"{confinement.max_processes} processes, {confinement.max_memory} bytes of memory"
            + (f" (cgroup {cgroup.describe()})" if cgroup else " (per process: no cgroup here)")
            + f", {confinement.max_scratch} bytes of scratch, {self.settings.build_timeout} s"
        )
        if signing:
            build_log.note("module signing: MODULE_SIGN_PRIV_KEY and MODULE_SIGN_PUB_KEY are passed to the script")
        build_log.note("$ " + shlex.join(command))
        build_log.tool = tool.name
        meter = ScratchMeter(scratch, confinement.max_scratch, volume.full)
        seen: list[str] = []
        try:
            with LogFollower(tool.logs, build_log.write, build_log.full) as follower:
                outcome = run_streaming(
                    command,
                    env=environment,
                    cwd=scratch,
                    write=watching(tool.watch, seen, build_log.write),
                    timeout=max(1.0, job.deadline - time.time()),
                    should_stop=lambda: should_stop() or meter.over(),
                    on_kill=on_kill,
                )
        finally:
            if cgroup is not None:
                cgroup.kill()
                cgroup.remove()
            shutil.rmtree(scratch / "module-signing", ignore_errors=True)
        if outcome.stopped == StopReason.TIMED_OUT:
            raise ScriptFailed(
                f"{tool.name} did not finish within the build's {self.settings.build_timeout} s "
                "(OFEDREPO_BUILD_TIMEOUT)"
            )
        if outcome.stopped == StopReason.SCRATCH_FULL or (not outcome.stopped and volume.full()):
            raise ScriptFailed(
                f"{tool.name} was stopped: its scratch directory grew past {confinement.max_scratch} bytes "
                f"(OFEDREPO_BUILD_MAX_SCRATCH_BYTES; each file counts at least {ENTRY_COST} bytes, and no tree may "
                f"be deeper than {MAX_TREE_DEPTH} levels)"
            )
        if outcome.stopped:
            raise Stopped(outcome.stopped)
        if outcome.returncode not in tool.ok:
            cause = first_error(follower.error_lines)
            raise ScriptFailed(
                f"{tool.name} exited with status {outcome.returncode}"
                + (f": {cause}" if cause else " (its output and logs are in the build log)")
            )
        return ToolEnded(outcome.returncode, seen)


def attempt_name(instance: str, build_id: int, attempt: int) -> str:
    """What an attempt's cgroups (``<name>-<hex>``) and scratch (``<purpose>-<name>-<hex>``: ``storage.owned_by``)
    are named after: its leftovers are found by it and by nothing of another attempt of the same build (another
    worker may have taken the build over), nor of another deployment on this host (``DataDir.instance``: cgroups
    are host-wide)."""
    return f"build-{instance}-{build_id}-a{attempt}"


def attempt_container_prefix(instance: str, build_id: int, attempt: int) -> str:
    """What the names of an attempt's containers start with (``_CONTAINER_NAME`` reads them back; within
    ``CONTAINER_PREFIX``); the engine is host-wide, so the deployment's id is in them too."""
    return f"ofedrepo-{attempt_name(instance, build_id, attempt)}-"


#: ``attempt_name`` read back: what each kind of an attempt's leftovers is named after.
_ATTEMPT = r"build-(?P<instance>[0-9A-Za-z]+)-(?P<build>[0-9]+)-a(?P<attempt>[0-9]+)"
_CONTAINER_NAME = re.compile(rf"ofedrepo-{_ATTEMPT}-[0-9a-f]+")
_CGROUP_NAME = re.compile(rf"{_ATTEMPT}-[0-9a-f]{{8}}")
_SCRATCH_NAME = re.compile(rf"tool-{_ATTEMPT}-[0-9a-f]{{32}}")


def _orphaned(sessions: sessionmaker[Session], instance: str, named: re.Match[str] | None) -> bool:
    """Whether a leftover named after an attempt (``named``: one of the patterns above) is this deployment's
    (``instance``) and its attempt is not running: its worker was killed, and nothing else would remove it."""
    if named is None or named["instance"] != instance:
        return False
    with sessions() as session:
        return not lifecycle.attempt_is_running(session, int(named["build"]), int(named["attempt"]))


def remove_leftovers(settings: Settings, data: DataDir, build_id: int, attempt: int) -> None:
    """Remove what an attempt whose process was killed (or died) left behind: the processes of its cgroups,
    its containers, and its scratch of every kind (the tool's, unpacked bundles, a publish's staging, a
    kernel-devel download, half-unpacked kernel sources), which would otherwise wait for retention. The vendor's
    sandbox ends with the build process (``bwrap --die-with-parent``); a container lives on in its engine until
    it is removed."""
    name = attempt_name(data.instance, build_id, attempt)
    for cgroup in RunCgroup.left_by(f"{name}-"):
        cgroup.kill()
        cgroup.remove()
    if settings.build_runner != "local":
        engine = settings.build_runner
        prefix = attempt_container_prefix(data.instance, build_id, attempt)
        try:
            names = run(container_names_argv(engine, prefix), env=engine_environment(), timeout=60).split()
            for name in names:
                if name.startswith(prefix):
                    run(container_kill_argv(engine, name), env=engine_environment(), timeout=60)
        except ToolFailed as error:
            log.warning("build %d: its containers could not be removed: %s", build_id, error)
    for left in data.left_by(name):
        if left.is_mount():
            detach(left)
        remove_tree(left)


def remove_orphan_scratch_volumes(data: DataDir, sessions: sessionmaker[Session]) -> list[Path]:
    """Detach and remove this deployment's scratch filesystems (``scratch_volume``) that no running attempt
    owns: their worker was killed with its build, and nothing else would unmount them. Another worker on this
    host may share the data directory: only attempts that are not running are touched (an attempt releases its
    scratch before it records its end: ``Pipeline.run``)."""
    removed = []
    for mount_point in mounted_under(data.work):
        if not _orphaned(sessions, data.instance, _SCRATCH_NAME.fullmatch(mount_point.name)):
            continue
        detach(mount_point)
        remove_tree(mount_point)
        remove_tree(image_of(mount_point))
        removed.append(mount_point)
    return removed


def remove_orphan_cgroups(data: DataDir, sessions: sessionmaker[Session]) -> list[str]:
    """Kill and remove this deployment's build cgroups that no running attempt owns (their worker was killed
    with its build: nothing else would remove them, and what a tool left running in one would run on)."""
    removed = []
    for cgroup in RunCgroup.left_by(f"build-{data.instance}-"):
        name = cgroup.directories[0].name
        if not _orphaned(sessions, data.instance, _CGROUP_NAME.fullmatch(name)):
            continue
        cgroup.kill()
        cgroup.remove()
        removed.append(name)
    return removed


def remove_orphan_containers(settings: Settings, sessions: sessionmaker[Session]) -> list[str]:
    """Remove this deployment's build containers on this host that no running attempt owns any more (their
    worker was killed, or its build process was, and the container lived on in its engine); the names removed.
    Another deployment's containers (another data dir, on the same engine) are never this one's to judge."""
    if settings.build_runner == "local":
        return []
    engine = settings.build_runner
    instance = DataDir(settings.data_dir).instance
    try:
        listed = run(container_names_argv(engine, CONTAINER_PREFIX), env=engine_environment(), timeout=60).split()
    except ToolFailed as error:
        log.warning("could not list build containers: %s", error)
        return []
    removed = []
    for name in listed:
        if not _orphaned(sessions, instance, _CONTAINER_NAME.fullmatch(name)):
            continue
        try:
            run(container_kill_argv(engine, name), env=engine_environment(), timeout=60)
            removed.append(name)
        except ToolFailed as error:
            log.warning("could not remove the orphan container %s: %s", name, error)
    return removed


def engine_environment() -> dict[str, str]:
    """The worker's environment without ofedrepo's settings (API tokens, the database's URL and password)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("OFEDREPO_")}


def watching(watch: re.Pattern[bytes] | None, seen: list[str], write: Write) -> Write:
    """``write``, remembering in ``seen`` the first group of the last line of the tool's own output that ``watch``
    matches (``ToolRun.watch``: what says where its results are). The last only: a tool that prints the line
    without end would otherwise grow this process's memory without bound (2 GB in 25 s), the log's cap
    notwithstanding."""
    if watch is None:
        return write

    def both(source: str, data: bytes) -> None:
        if not source:
            match = watch.search(data)
            if match:
                seen[:] = [match.group(1).decode("utf-8", "replace")]
        write(source, data)

    return both


class Stopped(Exception):
    """The run was stopped before publishing: cancelled by a client, or the worker is shutting down."""

    def __init__(self, reason: StopReason) -> None:
        self.reason = reason
        super().__init__(reason.value)


def _private(scratch: Path) -> Path:
    """The worker's own directory for a run (in ``work/``, which only root writes; made after the tool ended, by
    an exclusive mkdir), named after the scratch so that what removes an attempt's leftovers finds it."""
    return scratch.with_name(scratch.name + "-worker")
