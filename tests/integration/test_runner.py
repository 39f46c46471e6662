"""The runner with real processes: output streamed as it comes, the whole process group killed on stop."""

import io
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ofedrepo.builds.lifecycle import StopReason
from ofedrepo.process import clean_environment
from tests.support.builder_image import builder_image, containers_conf, podman_problem
from workers.runner import container_argv, run_streaming
from workers.sandbox import Confinement

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
        should_stop=lambda: StopReason.CANCELLED if time.monotonic() > stop_after else None,
    )  # fmt: skip
    assert outcome.stopped == "cancelled" and outcome.returncode != 0
    assert b"line 3" in log.getvalue()
    deadline = time.monotonic() + 30
    while alive(child_pid(log)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child_pid(log))


def test_a_timeout_kills_the_group(tmp_path: Path) -> None:
    """The script runs for ever: returning at all is the timeout's doing; its background child dies too."""
    log = io.BytesIO()
    outcome = run_streaming(
        ["sh", "-c", FORKING_SCRIPT], env=clean_environment(tmp_path), cwd=tmp_path, write=into(log), timeout=1,
        should_stop=lambda: None,
    )  # fmt: skip
    assert outcome.stopped == "timed out" and outcome.returncode != 0
    deadline = time.monotonic() + 30
    while alive(child_pid(log)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child_pid(log))


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


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """The test builder image and podman's environment, or a skip saying why there is none."""
    root = tmp_path_factory.mktemp("podman")
    engine = {**os.environ, "CONTAINERS_CONF": str(containers_conf(root))}
    problem = podman_problem(engine)
    if problem:
        pytest.skip(problem)
    try:
        return builder_image(root / "image", engine), engine
    except subprocess.CalledProcessError as error:
        pytest.skip(f"no builder image: debootstrap could not reach Debian's mirror ({error.stderr[-200:]!r})")


def test_the_container_command_runs_for_real(tmp_path: Path, podman: tuple[str, dict[str, str]]) -> None:
    image, engine = podman
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "hello").write_text("from the host\n")
    confinement = Confinement(uid=None, max_processes=64, max_memory=512 * 1024**2, max_scratch=64 * 1024**2)
    argv = container_argv(
        "podman", image, f"ofedrepo-test-{os.getpid()}",
        ["sh", "-c", f"cat {inputs}/hello && (touch {inputs}/written || echo read-only) && (touch /x || echo usr-ro)"],
        [inputs], tmp_path, tmp_path / "home", confinement,
    )  # fmt: skip
    log = io.BytesIO()
    outcome = run_streaming(argv, env=engine, cwd=tmp_path, write=into(log), timeout=120, should_stop=lambda: None)
    assert outcome.returncode == 0, log.getvalue()
    assert b"from the host" in log.getvalue() and b"read-only" in log.getvalue() and b"usr-ro" in log.getvalue()
    assert not (inputs / "written").exists()
