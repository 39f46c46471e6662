"""Confining the vendor's tool: as whom it runs on the host, and what it may take.

A bundle's script (and DOCA's ``doca-kernel-support``) is code from outside that insists on running as root.
It gets a root of its own: inside a user namespace it is uid 0, so its ``[ $UID -ne 0 ]`` check passes, and
outside it is an unprivileged uid (``OFEDREPO_BUILD_SANDBOX_UID`` when the worker is root, else the worker's
own), with no capability in any namespace, ``no_new_privs`` set and no further user namespaces. It cannot
mount, ptrace what it cannot see (its own pid namespace), or see the host's cgroups (its own cgroup
namespace, no ``/sys``). The files it must copy as root (``cp -a`` of the bundle) are owned by that uid, so
they appear as root's inside.

Limits, each set by a setting: processes and memory for the whole run through a cgroup of its own when the
host gives the worker one (cgroup v2, or v1's ``pids`` and ``memory`` hierarchies: a root worker), and always
per process through rlimits (address space, file size, no core dumps; processes too where no cgroup counts
them); time through the runner's timeout; disk through ``ScratchMeter``, which stops the run when its scratch
directory grows past its cap. At the end everything left in the cgroup is killed, whatever left the process
group.

The command chain is built by pure functions (``confined_argv``): ``sh`` puts itself in the cgroup (before
anything forks), ``prlimit`` sets the rlimits, ``setpriv`` drops to the sandbox uid, then the sandbox itself.
"""

import logging
import os
import signal
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ofedrepo.builds.lifecycle import StopReason
from ofedrepo.config import Settings
from ofedrepo.storage import tree_usage

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: An empty directory of the host over which a root-run worker mounts, in a mount namespace of one run's own,
#: what that run's sandbox mounts (``staged_sources``).
STAGE = Path("/run/ofedrepo-sandbox")
#: The directory under each hierarchy that holds one cgroup per run.
CGROUP_PARENT = "ofedrepo"
#: How much longer than its last walk the scratch meter waits before walking again (bounds its cost).
_METER_COST_FACTOR = 20
_METER_MIN_INTERVAL = 0.2


@dataclass(frozen=True)
class Confinement:
    """What one run of the vendor's tool may take, and as whom it runs on the host."""

    uid: int | None
    """The host uid (and gid) the tool runs as; None when the worker is not root and it runs as the worker."""
    max_processes: int
    max_memory: int
    """Bytes of memory for the whole run (with a cgroup), and of address space for each of its processes."""
    max_scratch: int
    """Bytes its scratch directory may hold; also the largest file it may write."""

    @classmethod
    def of(cls, settings: Settings) -> "Confinement":
        return cls(
            uid=settings.build_sandbox_uid if os.geteuid() == 0 else None,
            max_processes=settings.build_max_processes,
            max_memory=settings.build_max_memory,
            max_scratch=settings.build_max_scratch_bytes,
        )

    @property
    def owner(self) -> int:
        """Who owns what the tool reads and writes as root: the sandbox uid, or the worker itself."""
        return self.uid if self.uid is not None else os.geteuid()


def staged_sources(sources: Sequence[Path]) -> dict[Path, str]:
    """Where each source is shown to ``bwrap`` (``STAGE/<n>``) by a root-run worker. Pure.

    The unprivileged ``bwrap`` must reach what it mounts by a path, and the data directory's path may pass
    through directories only root may enter (a checkout in ``/root``, a 0700 parent). So, in a mount namespace
    of the run's own, root bind-mounts each source at ``STAGE/<n>`` (a fresh tmpfs there) before dropping to the
    sandbox uid; the host's mounts stay as they were."""
    return {source: f"{STAGE}/{index}" for index, source in enumerate(dict.fromkeys(sources))}


#: The shell that runs as root first: it joins the run's cgroups (before anything forks), then stages the
#: sources (``staged_sources``) in its own mount namespace, then execs the rest of the chain.
_PREPARE = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; '
    'stage=$1; shift; [ "$1" = -- ] || mount -t tmpfs -o mode=0755,size=64k ofedrepo-sandbox "$stage" || exit 125; '
    'n=0; while [ "$1" != -- ]; do mkdir "$stage/$n" && mount --bind "$1" "$stage/$n" || exit 125; '
    'n=$((n + 1)); shift; done; shift; exec "$@"'
)


def confined_argv(
    command: list[str], confinement: Confinement, cgroup: "RunCgroup | None", staged: Mapping[Path, str]
) -> list[str]:
    """``command`` started in ``cgroup``, with ``staged`` sources mounted, under rlimits, as the sandbox uid.

    Without a cgroup the process count is an rlimit, which counts every process of the uid: the sandbox uid's
    (shared by concurrent builds on this host) or, for a worker that is not root, the worker's own too."""
    argv: list[str] = []
    procs = [str(path) for path in cgroup.procs] if cgroup else []
    if procs or staged:
        namespace = ["unshare", "--mount", "--propagation", "private", "--"] if staged else []
        argv += [*namespace, "sh", "-c", _PREPARE, "sh", *procs, "--", str(STAGE), *map(str, staged), "--"]
    limits = [f"--as={confinement.max_memory}", f"--fsize={confinement.max_scratch}", "--core=0"]
    if cgroup is None or not cgroup.counts_processes:
        limits.append(f"--nproc={confinement.max_processes + _tasks_of(confinement.owner)}")
    argv += ["prlimit", *limits, "--"]
    if confinement.uid is not None:
        uid = str(confinement.uid)
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
    return [*argv, *command]


def _tasks_of(uid: int) -> int:
    """Tasks (threads) the uid has now: RLIMIT_NPROC counts them all, so its limit sits above what exists."""
    if uid == 0 or uid != os.geteuid():
        return 0  # the sandbox uid runs nothing but sandboxes; root is not limited by it anyway
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(entry / "task"))
            except OSError:
                continue
    return count


def _no_swap(limit_file: Path, value: str) -> None:
    """Memory and swap together no more than memory alone, where the kernel accounts swap (else it is off)."""
    if limit_file.exists():
        limit_file.write_text(value)


@dataclass
class RunCgroup:
    """One run's cgroup: in v2 one directory, in v1 one per hierarchy (``pids``, ``memory``)."""

    directories: list[Path]
    counts_processes: bool

    @property
    def procs(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in self.directories]

    @classmethod
    def create(cls, name: str, confinement: Confinement, root: Path = CGROUP_ROOT) -> "RunCgroup | None":
        """A cgroup with the confinement's limits, or None where this host gives the worker none to make."""
        unique = f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            if (root / "cgroup.controllers").is_file():
                return cls._create_v2(root, unique, confinement)
            if (root / "pids" / "cgroup.procs").is_file():
                return cls._create_v1(root, unique, confinement)
        except OSError as error:
            log.info("no cgroup for %s (%s): its limits are per process", name, error)
        return None

    @classmethod
    def _create_v2(cls, root: Path, name: str, confinement: Confinement) -> "RunCgroup":
        parent = root / CGROUP_PARENT
        parent.mkdir(exist_ok=True)
        for directory in (root, parent):
            enabled = (directory / "cgroup.subtree_control").read_text().split()
            missing = [f"+{controller}" for controller in ("pids", "memory") if controller not in enabled]
            if missing:
                (directory / "cgroup.subtree_control").write_text(" ".join(missing))
        directory = parent / name
        directory.mkdir()
        cgroup = cls([directory], counts_processes=True)
        try:
            (directory / "pids.max").write_text(str(confinement.max_processes))
            (directory / "memory.max").write_text(str(confinement.max_memory))
            _no_swap(directory / "memory.swap.max", "0")
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    @classmethod
    def _create_v1(cls, root: Path, name: str, confinement: Confinement) -> "RunCgroup":
        cgroup = cls([], counts_processes=True)
        try:
            for hierarchy, limit_file, limit in (
                ("pids", "pids.max", confinement.max_processes),
                ("memory", "memory.limit_in_bytes", confinement.max_memory),
            ):
                directory = root / hierarchy / CGROUP_PARENT / name
                directory.mkdir(parents=True)
                cgroup.directories.append(directory)
                (directory / limit_file).write_text(str(limit))
            _no_swap(cgroup.directories[-1] / "memory.memsw.limit_in_bytes", str(confinement.max_memory))
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    @classmethod
    def left_by(cls, prefix: str, root: Path = CGROUP_ROOT) -> list["RunCgroup"]:
        """The cgroups of runs whose names start with ``prefix`` (``build-<id>-``): what a killed build left."""
        parents = [root / CGROUP_PARENT, *(root / hierarchy / CGROUP_PARENT for hierarchy in ("pids", "memory"))]
        by_name: dict[str, list[Path]] = {}
        for parent in parents:
            for directory in sorted(parent.glob(f"{prefix}*")) if parent.is_dir() else []:
                by_name.setdefault(directory.name, []).append(directory)
        return [cls(directories, counts_processes=True) for directories in by_name.values()]

    def _members(self) -> Iterator[int]:
        for procs in self.procs:
            try:
                text = procs.read_text()
            except OSError:
                continue
            yield from (int(line) for line in text.split())

    def kill(self) -> None:
        """SIGKILL everything in the cgroup until it is empty (a fork bomb forks while it is being killed)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            members = set(self._members())
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        log.warning("processes remain in %s after 10 s of SIGKILL", self.directories[0])

    def remove(self) -> None:
        for directory in self.directories:
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last killed processes are reaped
                    time.sleep(0.1)

    def describe(self) -> str:
        return ", ".join(str(directory) for directory in self.directories)


#: What each file or directory of a scratch counts for, besides its blocks: an inode is disk too, and a tool
#: that makes a million empty files fills a filesystem's inodes without a byte of data.
ENTRY_COST = 4096


class ScratchMeter:
    """How much a run's scratch directory holds (``storage.tree_usage``: by descriptors, links not followed), each
    entry counted at least ``ENTRY_COST``; the run is stopped past its cap, when its tree is deeper than is
    walked (no build makes hundreds of levels; a tool that does hides what is below), or when ``filled()`` says
    the filesystem the scratch has to itself is full (``scratch_volume``: there the cap is a hard limit, and the
    meter only ends a run that met it without waiting for the tool to give up).

    A walk costs time on a big build tree, so the meter walks again only after a multiple of the last walk's
    duration (at least every 0.2 s): its cost stays a small fraction of one core."""

    def __init__(self, root: Path, limit: int, filled: Callable[[], bool] = lambda: False) -> None:
        self.root = root
        self.limit = limit
        self.filled = filled
        self.measured = 0
        self._next = 0.0

    def over(self) -> StopReason | None:
        """``SCRATCH_FULL`` once the scratch holds more than the limit (or too deep a tree), else None."""
        now = time.monotonic()
        if now < self._next:
            return None
        if self.filled():
            return StopReason.SCRATCH_FULL
        usage = tree_usage(self.root)
        self.measured = usage.bytes + usage.entries * ENTRY_COST
        spent = time.monotonic() - now
        self._next = now + max(_METER_MIN_INTERVAL, spent * _METER_COST_FACTOR)
        return StopReason.SCRATCH_FULL if self.measured > self.limit or usage.too_deep else None


def hand_over(root: Path, owner: int) -> None:
    """Make ``root``'s tree the tool's own: owned by ``owner`` (uid and gid), its files writable by their owner.

    The tool's root is ``owner`` on the host, without capabilities: what it copies as root (``cp -a`` of the
    bundle) must be its own to keep owners, and its copies must be writable by it (the script appends to the
    copy's ``.supported_kernels``) as they were when root ignored modes. The sandbox mounts bundles read-only
    all the same. Links are changed themselves, never followed. Nothing changes where ``root`` is ``owner``'s
    already: its top is changed last."""
    try:
        if os.lstat(root).st_uid == owner:
            return
    except FileNotFoundError:
        return
    for directory, directories, files in os.walk(root):
        for name in [*directories, *files]:
            path = os.path.join(directory, name)
            os.lchown(path, owner, owner)
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                os.chmod(path, stat.S_IMODE(status.st_mode) | stat.S_IWUSR)
    os.lchown(root, owner, owner)
