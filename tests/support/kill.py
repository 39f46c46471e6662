"""Killing a process at a step it is observed to reach, never after a guessed delay."""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def kill_when(
    process: subprocess.Popen[bytes],
    happened: Callable[[], bool],
    timeout: float = 120,
    *,
    whole_tree: bool = False,
) -> None:
    """SIGKILL ``process`` the moment ``happened()`` (polled every millisecond or so).

    With ``whole_tree``, every descendant dies with it as on a lost host: all are stopped first, so that none
    sees another die and acts on it (a worker that saw its build process killed would record the build failed
    before its own turn came), then all are killed."""
    deadline = time.monotonic() + timeout
    while not happened():
        assert process.poll() is None, "the process ended before the step it was to be killed at"
        assert time.monotonic() < deadline, "the step never came"
        time.sleep(0.001)
    if whole_tree:
        frozen = freeze_tree(process.pid)
        for pid in frozen:
            _signal(pid, signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def freeze_tree(root: int) -> list[int]:
    """SIGSTOP ``root`` and its descendants, parents before children, until no new child appears; their pids."""
    frozen: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in frozen:
            continue
        _signal(pid, signal.SIGSTOP)
        frozen.append(pid)
        pending.extend(_children(pid))
    # A child forked between a parent's listing and its stop is found by listing everyone once more.
    late = [child for pid in frozen for child in _children(pid) if child not in frozen]
    return frozen + [pid for found in late for pid in freeze_tree(found)]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, from their `/proc/<pid>/stat` (this kernel has no `children` file)."""
    children: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _signal(pid: int, number: signal.Signals) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass
