"""The one place that runs external programs: argument lists only, a clean environment, a timeout.

Command lines are built by pure functions next to the code that needs them (``signing.rpmsign_argv``);
this module only runs them and turns a failure into ``ToolFailed`` carrying the program's output.
"""

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ofedrepo.errors import ToolFailed

_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def clean_environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: our own ``HOME`` so no user's ``~/.rpmmacros`` or ``~/.gnupg`` leaks in."""
    environment = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(home)}
    if "TMPDIR" in os.environ:
        environment["TMPDIR"] = os.environ["TMPDIR"]
    environment.update(extra or {})
    return environment


def run(
    argv: list[str],
    *,
    env: Mapping[str, str],
    timeout: float = 600,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> str:
    """Run ``argv`` and return its combined output; raise ``ToolFailed`` on a non-zero exit or timeout."""
    try:
        completed = subprocess.run(
            argv,
            env=dict(env),
            cwd=cwd,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ToolFailed(argv, 127, f"{argv[0]} is not installed (run `make setup`)") from None
    except subprocess.TimeoutExpired as expired:
        output = expired.output if isinstance(expired.output, str) else ""
        raise ToolFailed(argv, -1, f"timed out after {timeout:.0f} s\n{output}") from None
    if completed.returncode != 0:
        raise ToolFailed(argv, completed.returncode, completed.stdout)
    return completed.stdout


_PR_SET_PDEATHSIG = 1


def die_with_parent(signal_number: signal.Signals = signal.SIGKILL) -> None:
    """Have the kernel send ``signal_number`` to this process when its parent ends (Linux's
    ``PR_SET_PDEATHSIG``): a build process or an embedded worker never outlives what started it."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal_number), 0, 0, 0)
    if os.getppid() == 1:  # the parent ended before the request took effect
        os.kill(os.getpid(), signal_number)
