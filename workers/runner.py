"""Running the vendor's rebuild tool (MLNX_OFED's add-kernel-support script, DOCA's doca-kernel-support): on
the worker host or in a container.

The command lines are built by pure functions (unit-tested); ``run_streaming`` is the one small runner.
The script runs in its own process group so that a cancel or a timeout kills it with everything it
started (rpmbuild, make, gcc), with a clean environment whose ``HOME`` is an empty directory of the build
(a user's ``~/.rpmmacros`` would change the names of the packages rpmbuild writes), and with its output
appended to the build log line by line, so that the log grows while it runs.

The ``local`` runner runs the script in a ``bwrap`` sandbox (``sandbox_argv``), the container runners in
their container: a bundle's script is code from outside and never sees the data directory, the service's
processes or the network.

NVIDIA's script says little on its own output while it builds (``Building ... Please wait...``): the
compiler's progress and errors go to its log directory (``<t>/mlnx_iso.<pid>_logs/``, 4.x: ``<t>/*.log``)
and install.pl's per-package logs inside it, which it deletes on success. ``LogFollower`` copies those
files into the build log as they grow, ``tail -f`` style, so a long compile is visible and a failure's
evidence is kept.
"""

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ofedrepo.builds.lifecycle import StopReason
from ofedrepo.errors import BuildFailed
from ofedrepo.untrusted import ScratchDir, UntrustedFile, shown
from workers.sandbox import Confinement

KILL_GRACE_SECONDS = 5.0
FOLLOW_INTERVAL = 0.5
#: What one poll reads of one log file: a log that grows fast is followed in turns with the others.
FOLLOW_CHUNK = 4 * 1024 * 1024
#: Log files followed at most: a script that makes thousands of them gets the first ones followed.
MAX_FOLLOWED = 256
#: Terminal escape sequences: CSI (colours, cursor moves, clearing), OSC (window titles, the clipboard) and the
#: other ESC sequences, ended by BEL or ST where they take a string.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[ -~]?)")
#: Control characters but newline and tab, C1 controls (8-bit CSI, OSC...) included, and Unicode's
#: bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), which make a line read otherwise than it is.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: The script's work copy of the bundle (``mlnx_iso.<pid>/``): the bundle's own files, not build logs.
_WORK_COPY = re.compile(r"mlnx_iso\.[0-9]+")
_COMPILER_ERROR = re.compile(r"(?:^|\s|:)(?:error|Error|ERROR):\s")
#: The script's and rpmbuild's own summaries of a failure, which name no cause.
_NOT_A_CAUSE = ("Failed executing", "ERROR: See", "Bad exit status", "RPM build errors")

#: Receives output as (source, bytes): source "" is the script's stdout, else a log file under its tmpdir.
Write = Callable[[str, bytes], None]


@dataclass(frozen=True)
class RunOutcome:
    returncode: int
    stopped: StopReason | None
    """Why the run was killed, None when it ended by itself."""


def _mountable(path: Path | str) -> None:
    if ":" in str(path) or "," in str(path):
        raise BuildFailed(f"cannot mount {path} into a container: ':' and ',' are not allowed in its path")


#: How many uids (and gids) of the host a root-run podman maps into a container, from the sandbox uid: the
#: builder image's files belong to several users, and every one of them must map.
CONTAINER_ID_RANGE = 65536


def container_argv(
    engine: str,
    image: str,
    name: str,
    command: list[str],
    read_only: list[Path],
    writable: Path,
    home: Path,
    confinement: Confinement,
    environment: dict[str, str] | None = None,
    placed: Sequence[tuple[Path, str]] = (),
    tmp: Path | None = None,
    max_seconds: int | None = None,
) -> list[str]:
    """``podman``/``docker run`` of ``command`` with the same paths inside: inputs read-only, no network, no
    capability, ``no-new-privileges``, the image's root read-only, the confinement's process and memory limits,
    and (podman) ``max_seconds`` of life of its own: a container outlives a killed worker, and nothing else would
    stop it until a worker's orphan sweep comes round. No ``--ulimit``: one given here replaces the engine's
    configured defaults (podman then asks for its own open-files default, which a host's hard limit may refuse);
    the scratch's own filesystem bounds what the tool writes.

    A root-run podman maps the container's root to the sandbox uid (``--uidmap``): root inside, unprivileged
    outside, as in the local runner's sandbox (a rootless engine does that mapping itself; docker cannot, per
    container). ``placed`` are more read-only inputs, each mounted at a path of its own (DOCA's tools at
    ``/opt/mellanox/doca``); ``tmp``, when given, is the container's ``/tmp``, kept after the run (DOCA's tool
    builds under ``/tmp/DOCA.*``). SELinux labels are left alone (``label=disable``) rather than relabelling
    the bundle store on every build.
    """
    for path in [*read_only, writable, *(source for source, _ in placed)]:
        _mountable(path)
    for _, target in placed:
        _mountable(target)
    mounts = [argument for path in read_only for argument in ("-v", f"{path}:{path}:ro")]
    mounts += [argument for source, target in placed for argument in ("-v", f"{source}:{target}:ro")]
    if tmp is not None:
        _mountable(tmp)
        mounts += ["-v", f"{tmp}:/tmp:rw"]
    variables = [argument for item in sorted((environment or {}).items()) for argument in ("-e", "=".join(item))]
    identities = []
    if engine == "podman" and confinement.uid is not None:
        mapping = f"0:{confinement.uid}:{CONTAINER_ID_RANGE}"
        identities = ["--uidmap", mapping, "--gidmap", mapping]
    return [
        engine, "run", "--rm", "--name", name, "--network=none", "--security-opt", "label=disable",
        "--cap-drop=ALL", "--security-opt", "no-new-privileges", "--read-only", "--cgroupns=private", *identities,
        f"--pids-limit={confinement.max_processes}", f"--memory={confinement.max_memory}",
        f"--memory-swap={confinement.max_memory}",
        *([f"--timeout={max_seconds}"] if engine == "podman" and max_seconds else []), *mounts,
        "-v", f"{writable}:{writable}:rw", "-w", str(writable),
        "-e", f"HOME={home}", "-e", "LANG=C.UTF-8", *variables, image, *command,
    ]  # fmt: skip


def container_names_argv(engine: str, prefix: str) -> list[str]:
    """The names of the containers (running or not) whose names start with ``prefix``, one per line."""
    return [engine, "ps", "--all", "--filter", f"name=^{prefix}", "--format", "{{.Names}}"]


def container_kill_argv(engine: str, name: str) -> list[str]:
    """Remove the container at once: its processes get SIGKILL (podman's ``rm --force`` would first wait the
    container's stop timeout, ten seconds in which a disk filler goes on writing)."""
    return [engine, "rm", "--force", *(["--time", "0", "--ignore"] if engine == "podman" else []), name]


@dataclass(frozen=True)
class HostLayout:
    """What of this host a sandbox shows: its top-level directories and links, and the secrets to mask."""

    top_links: dict[str, str]
    """``/bin`` → ``usr/bin`` and the like (merged ``/usr``)."""
    top_dirs: list[str]
    """``/bin``, ``/lib``... where they are real directories."""
    masked: list[str]
    """Files under ``/etc`` or ``/usr`` the script must not read (``/etc/shadow``, ofedrepo's config file)."""


def sandbox_argv(
    command: list[str],
    layout: HostLayout,
    read_only: list[Path],
    writable: list[Path],
    cwd: Path,
    placed: Sequence[tuple[Path, str]] = (),
    tmp: Path | None = None,
    staged: Mapping[Path, str] | None = None,
    tmpfs_bytes: int = 512 * 1024**2,
) -> list[str]:
    """``bwrap`` running ``command`` with only what a build needs: the toolchain (``/usr``, ``/etc``, the rpm
    database), the bundle and the kernel sources read-only, its scratch directory writable, fresh ``/tmp``,
    ``/dev`` and ``/proc`` (its own processes only), no network. The data directory (the site key, the tree,
    other builds), other processes' environments (tokens) and the host's secrets stay out of sight.

    Every tmpfs it may write (``/tmp`` unless a scratch directory is given, ``/var/tmp``, ``/run``,
    ``/dev/shm``) holds at most ``tmpfs_bytes`` (a tmpfs is the host's memory, counted against no process), and
    the rest of its root, ``/dev`` included, is read-only. Its root is the root of a user namespace of its own
    (uid 0 inside, the unprivileged uid ``bwrap`` is started as outside: ``sandbox.confined_argv``), with every
    capability dropped, no further user namespace (so none in which it would gain some back) and a cgroup
    namespace of its own.

    ``placed`` and ``tmp`` as for ``container_argv``: read-only inputs at paths of their own, and a directory
    of the build's scratch as ``/tmp`` instead of a fresh one. ``staged`` says where ``bwrap`` finds a source
    that it could not reach by its own path (``sandbox.staged_sources``); it is mounted at its own path all
    the same."""
    found = staged or {}

    def bind(kind: str, source: Path, target: str) -> list[str]:
        return [f"--{kind}", found.get(source, str(source)), target]

    argv = [
        "bwrap", "--die-with-parent", "--unshare-user", "--uid", "0", "--gid", "0", "--disable-userns",
        "--cap-drop", "ALL", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try",
        "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--ro-bind-try", "/var/lib/rpm", "/var/lib/rpm",
    ]  # fmt: skip
    for name, target in sorted(layout.top_links.items()):
        argv += ["--symlink", target, f"/{name}"]
    for name in layout.top_dirs:
        argv += ["--ro-bind", f"/{name}", f"/{name}"]
    for secret in layout.masked:
        argv += ["--ro-bind", "/dev/null", secret]
    size = ["--size", str(tmpfs_bytes)]
    argv += ["--dev", "/dev", *size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev", "--proc", "/proc"]
    argv += bind("bind", tmp, "/tmp") if tmp else [*size, "--tmpfs", "/tmp"]
    argv += [*size, "--tmpfs", "/var/tmp", *size, "--tmpfs", "/run"]
    argv += [argument for path in read_only for argument in bind("ro-bind", path, str(path))]
    argv += [argument for source, target in placed for argument in bind("ro-bind", source, target)]
    argv += [argument for path in writable for argument in bind("bind", path, str(path))]
    # bwrap's own root is a tmpfs of the host's memory: read-only once every mount point is made
    return [*argv, "--remount-ro", "/", "--chdir", str(cwd), "--", *command]


#: Top-level directories a toolchain may live in besides /usr.
_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers")


def host_layout(also_masked: list[Path]) -> HostLayout:
    links, dirs = {}, []
    for name in _TOP_LEVEL:
        path = Path("/") / name
        if path.is_symlink():
            links[name] = os.readlink(path)
        elif path.is_dir():
            dirs.append(name)
    candidates = [*_SECRETS, *(str(path) for path in also_masked)]
    visible = [path for path in candidates if path.startswith(("/etc/", "/usr/"))]
    return HostLayout(top_links=links, top_dirs=dirs, masked=[path for path in visible if Path(path).is_file()])


def first_error(lines: list[str]) -> str | None:
    """The first line that reads like a compiler's (``...: error: ...``): what a user needs to see."""
    for line in lines:
        if _COMPILER_ERROR.search(line) and not any(summary in line for summary in _NOT_A_CAUSE):
            return line.strip()[:400]
    return None


class LogFollower:
    """Copies the script's log files under ``tmpdir`` into the build log while they grow.

    The script is running and hostile: every file is opened through ``ScratchDir`` (no link followed, a
    regular file of the scratch's own), and what it adds stops at the build log's cap (``full``)."""

    def __init__(self, tmpdir: Path, write: Write, full: Callable[[], bool]) -> None:
        self.scratch = ScratchDir(tmpdir)
        self.write = write
        self.full = full
        self.offsets: dict[str, int] = {}
        self.error_lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-follower", daemon=True)

    def __enter__(self) -> "LogFollower":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # what was written between the last poll and the script's end
        self.scratch.close()

    def _run(self) -> None:
        while not self._stop.wait(FOLLOW_INTERVAL):
            self.poll()

    def _logs(self) -> Iterator[str]:
        for relative in self.scratch.walk(enter=lambda name: not _WORK_COPY.fullmatch(name)):
            if relative.endswith(".log") and len(self.offsets) < MAX_FOLLOWED or relative in self.offsets:
                yield relative

    def poll(self) -> None:
        for relative in self._logs():
            if self.full():
                return
            try:
                with self.scratch.open(relative) as reader:
                    reader.seek(self.offsets.get(relative, 0))
                    chunk = reader.read(FOLLOW_CHUNK)
                    self.offsets[relative] = reader.tell()
            except (OSError, UntrustedFile):
                continue
            if chunk:
                text = plain_text(chunk)
                if len(self.error_lines) < 50:
                    lines = text.decode().splitlines()
                    self.error_lines += [line for line in lines if _COMPILER_ERROR.search(line)]
                self.write(shown(relative), text if text.endswith(b"\n") else text + b"\n")


#: The longest line of the script's output taken whole; a longer one arrives in pieces of this size.
MAX_LINE = 64 * 1024


def plain_text(data: bytes) -> bytes:
    """What a tool wrote, fit for a log that terminals and browsers show: UTF-8, escape sequences and control
    characters removed (a hostile script's OSC 52 would write a reader's clipboard, a clear-screen hide what came
    before), carriage returns made newlines."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text)).encode()


def _pump(stream: IO[bytes], write: Write) -> None:
    for line in iter(lambda: stream.readline(MAX_LINE), b""):
        write("", plain_text(line))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=KILL_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def run_streaming(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    write: Write,
    timeout: float,
    should_stop: Callable[[], StopReason | None],
    on_kill: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run ``argv`` in a new process group, its output to ``write``; kill the group when told or too late."""
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    except OSError as error:
        raise BuildFailed(f"cannot run {argv[0]}: {error.strerror}") from None
    assert process.stdout is not None
    pump = threading.Thread(target=_pump, args=(process.stdout, write), daemon=True)
    pump.start()
    deadline = time.monotonic() + timeout
    stopped = None
    while process.poll() is None:
        stopped = should_stop() or (StopReason.TIMED_OUT if time.monotonic() > deadline else None)
        if stopped:
            if on_kill:  # first: a container lives on in its engine after the client is killed
                on_kill()
            _kill_group(process)
            if on_kill:  # and again: a client killed while it was creating its container leaves one behind
                on_kill()
            break
        try:
            process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    returncode = process.wait()
    pump.join(timeout=KILL_GRACE_SECONDS)
    if not pump.is_alive():  # else a survivor outside the group still holds the pipe: leave it to the pump
        process.stdout.close()
    return RunOutcome(returncode=returncode, stopped=stopped)
