"""Running the vendor's add-kernel-support script: on the worker host or in a container.

The command lines are built by pure functions (unit-tested); ``run_streaming`` is the one small runner.
The script runs in its own process group so that a cancel or a timeout kills it with everything it
started (rpmbuild, make, gcc), with a clean environment whose ``HOME`` is an empty directory of the build
(a user's ``~/.rpmmacros`` would change the names of the packages rpmbuild writes), and with its output
appended to the build log line by line, so that the log grows while it runs.
"""

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ofedrepo.bundles import SCRIPT
from ofedrepo.errors import BuildFailed

KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class RunOutcome:
    returncode: int
    stopped: str | None
    """Why the run was killed ("cancelled", "timed out", "worker stopping"), None when it ended by itself."""


def add_kernel_support_argv(bundle: Path, kernel: str, sources: Path, tmpdir: Path, distro: str) -> list[str]:
    """NVIDIA's documented invocation: rebuild the bundle's kernel packages for ``kernel`` into a tgz."""
    return [
        "bash", str(bundle / SCRIPT),
        "-m", str(bundle), "-k", kernel, "-s", str(sources),
        "--make-tgz", "-t", str(tmpdir), "-y", "--skip-repo", "--distro", distro,
    ]  # fmt: skip


def container_argv(
    engine: str, image: str, name: str, command: list[str], read_only: list[Path], writable: Path, home: Path
) -> list[str]:
    """``podman``/``docker run`` of ``command`` with the same paths inside: inputs read-only, no network."""
    for path in (*read_only, writable):
        if ":" in str(path) or "," in str(path):
            raise BuildFailed(f"cannot mount {path} into a container: ':' and ',' are not allowed in its path")
    mounts = [argument for path in read_only for argument in ("-v", f"{path}:{path}:ro")]
    return [
        engine, "run", "--rm", "--name", name, "--network=none", *mounts,
        "-v", f"{writable}:{writable}:rw", "-w", str(writable),
        "-e", f"HOME={home}", "-e", "LANG=C.UTF-8", image, *command,
    ]  # fmt: skip


def container_kill_argv(engine: str, name: str) -> list[str]:
    return [engine, "rm", "--force", name]


def _pump(stream: IO[bytes], log: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        log.write(line)
        log.flush()


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
    log: IO[bytes],
    timeout: float,
    should_stop: Callable[[], str | None],
    on_kill: Callable[[], None] | None = None,
) -> RunOutcome:
    """Run ``argv`` in a new process group, its output into ``log``; kill the group when told or too late."""
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    except OSError as error:
        raise BuildFailed(f"cannot run {argv[0]}: {error.strerror}") from None
    assert process.stdout is not None
    pump = threading.Thread(target=_pump, args=(process.stdout, log), daemon=True)
    pump.start()
    deadline = time.monotonic() + timeout
    stopped = None
    while process.poll() is None:
        stopped = should_stop() or ("timed out" if time.monotonic() > deadline else None)
        if stopped:
            _kill_group(process)
            if on_kill:
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
