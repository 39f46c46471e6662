"""Killing a process at a step it is observed to reach, never after a guessed delay."""

import os
import signal
import subprocess
import time
from collections.abc import Callable


def kill_when(
    process: subprocess.Popen[bytes],
    happened: Callable[[], bool],
    timeout: float = 120,
    also: Callable[[], int | None] = lambda: None,
) -> None:
    """SIGKILL ``process`` (and the process ``also`` names, first) the moment ``happened()`` (polled every
    millisecond or so)."""
    deadline = time.monotonic() + timeout
    while not happened():
        assert process.poll() is None, "the process ended before the step it was to be killed at"
        assert time.monotonic() < deadline, "the step never came"
        time.sleep(0.001)
    other = also()
    if other is not None:
        os.kill(other, signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
