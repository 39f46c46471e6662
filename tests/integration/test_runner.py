"""The runner with real processes: output streamed as it comes, the whole process group killed on stop."""

import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ofedrepo.process import clean_environment
from workers.runner import container_argv, run_streaming

BUILDER_IMAGE = "localhost/ofedrepo-builder:el8"
#: A script that forks a grandchild (as rpmbuild forks gcc) and reports its pid, then keeps printing.
FORKING_SCRIPT = "sleep 300 & echo child $!; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done"


def into(log: io.BytesIO) -> Callable[[str, bytes], None]:
    """What run_streaming writes to, collected in memory."""
    return lambda _, data: log.write(data) and None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    return status != "Z"


def child_pid(log: io.BytesIO) -> int:
    line = next(line for line in log.getvalue().decode().splitlines() if line.startswith("child "))
    return int(line.split()[1])


def test_a_stop_kills_the_whole_group_and_the_output_was_streamed(tmp_path: Path) -> None:
    log = io.BytesIO()
    stop_after = time.monotonic() + 1.5
    outcome = run_streaming(
        ["sh", "-c", FORKING_SCRIPT], env=clean_environment(tmp_path), cwd=tmp_path, write=into(log), timeout=60,
        should_stop=lambda: "cancelled" if time.monotonic() > stop_after else None,
    )  # fmt: skip
    assert outcome.stopped == "cancelled" and outcome.returncode != 0
    assert b"line 3" in log.getvalue()
    deadline = time.monotonic() + 5
    while alive(child_pid(log)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child_pid(log))


def test_a_timeout_kills_the_group(tmp_path: Path) -> None:
    log = io.BytesIO()
    started = time.monotonic()
    outcome = run_streaming(
        ["sh", "-c", FORKING_SCRIPT], env=clean_environment(tmp_path), cwd=tmp_path, write=into(log), timeout=1,
        should_stop=lambda: None,
    )  # fmt: skip
    assert outcome.stopped == "timed out" and time.monotonic() - started < 10


def test_the_environment_is_clean(tmp_path: Path) -> None:
    log = io.BytesIO()
    os.environ["OFEDREPO_TEST_LEAK"] = "leaked"
    try:
        outcome = run_streaming(
            ["sh", "-c", "env"], env=clean_environment(tmp_path / "home"), cwd=tmp_path, write=into(log), timeout=30,
            should_stop=lambda: None,
        )  # fmt: skip
    finally:
        del os.environ["OFEDREPO_TEST_LEAK"]
    assert outcome.returncode == 0 and outcome.stopped is None
    assert f"HOME={tmp_path / 'home'}" in log.getvalue().decode() and b"leaked" not in log.getvalue()


def working_engine() -> str | None:
    """A container engine that answers and has the rhel8 builder image locally (no network here)."""
    for engine in ("podman", "docker"):
        if shutil.which(engine) is None:
            continue
        probe = subprocess.run([engine, "image", "inspect", BUILDER_IMAGE], capture_output=True)
        if probe.returncode == 0:
            return engine
    return None


@pytest.mark.skipif(
    working_engine() is None, reason=f"no working podman/docker with {BUILDER_IMAGE} (make builder-images)"
)
def test_the_container_command_runs_for_real(tmp_path: Path) -> None:
    engine = working_engine()
    assert engine is not None
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "hello").write_text("from the host\n")
    argv = container_argv(
        engine, BUILDER_IMAGE, f"ofedrepo-test-{os.getpid()}",
        ["sh", "-c", f"cat {inputs}/hello && touch {inputs}/written || echo read-only"],
        [inputs], tmp_path, tmp_path / "home",
    )  # fmt: skip
    log = io.BytesIO()
    outcome = run_streaming(
        argv,
        env=clean_environment(tmp_path),
        cwd=tmp_path,
        write=into(log),
        timeout=120,
        should_stop=lambda: None,
    )
    assert outcome.returncode == 0 and b"from the host" in log.getvalue() and b"read-only" in log.getvalue()
