"""The production runner for real: builds in podman containers (a builder image made here, see
tests/support/builder_image.py) publish repositories a real dnf installs from; a cancelled build and one past
its deadline leave no container behind, and the engine runs with the worker's environment (its
containers.conf) while the script inside gets only what the runner passes.
"""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import lifecycle
from ofedrepo.config import Settings
from ofedrepo.storage import DataDir
from synthetic.bundle import make_kernel_sources
from tests.conftest import RunningServer, start_server, start_worker, stop_server
from tests.integration.test_dnf import dnf
from tests.integration.test_pipeline import ENDED, build_log, module_vermagic, request, upload, wait_for, wait_for_log
from tests.integration.test_queue import enqueue
from tests.support.builder_image import build_containers, podman_settings
from workers.pipeline import remove_orphan_containers

PLAIN = "4.18.0-372.19.1.el8_6.x86_64"
TO_CANCEL = "4.18.0-372.41.1.el8_6.x86_64"
TOO_SLOW = "4.18.0-372.57.1.el8_6.x86_64"
DEADLINE = 30


@pytest.fixture(scope="module")
def podman_service(tmp_path_factory: pytest.TempPathFactory, bundle_tgz: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("podman-service")
    sources = root / "kernels"
    make_kernel_sources(sources, PLAIN)
    for kernel in (TO_CANCEL, TOO_SLOW):
        make_kernel_sources(sources, kernel, build_seconds=3 * DEADLINE)
    environment = {
        **podman_settings(root),
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_BUILD_TIMEOUT": str(DEADLINE),
        "OFEDREPO_WORKER_CONCURRENCY": "2",
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
    }
    server = start_server(root / "var", root / "serve.log", environment, worker=True)
    try:
        assert upload(server, "bundles", bundle_tgz).status_code == 201
        yield server
    finally:
        stop_server(server)


def test_a_build_in_a_container_publishes_what_dnf_installs(podman_service: RunningServer, tmp_path: Path) -> None:
    asked = request(podman_service, kernel=PLAIN)
    assert asked.status_code == 202, asked.text
    build = wait_for(podman_service, asked.json()["build"]["id"], ENDED)
    log = build_log(podman_service, int(build["id"]))  # type: ignore[call-overload]
    assert build["state"] == "succeeded", log
    assert "$ podman run --rm" in log and "--cap-drop=ALL" in log and "--network=none" in log
    latest = httpx.get(f"{podman_service.url}/api/v1/repos/{asked.json()['id']}", timeout=10).json()["latest_url"]
    definition = (
        f"[mlnx_ofed]\nname=MLNX_OFED\nbaseurl={latest}/RPMS\nenabled=1\ngpgcheck=1\n"
        f"gpgkey={latest}/RPM-GPG-KEY-Mellanox\n"
    )
    dnf(tmp_path, definition, "install", "mlnx-ofed-hypervisor")
    modules = sorted((tmp_path / "installroot" / "lib" / "modules").rglob("*.ko"))
    assert modules and {module_vermagic(module) for module in modules} == {PLAIN}
    assert not build_containers(podman_service.environment)


def test_a_cancelled_build_leaves_no_container(podman_service: RunningServer) -> None:
    build_id = request(podman_service, kernel=TO_CANCEL).json()["build"]["id"]
    wait_for_log(podman_service, build_id, "Building")  # the script runs in its container
    assert [name for name in build_containers(podman_service.environment) if f"-{build_id}-" in name]
    cancelled = httpx.post(f"{podman_service.url}/api/v1/builds/{build_id}/cancel", timeout=10)
    assert cancelled.status_code == 202, cancelled.text
    assert wait_for(podman_service, build_id, ENDED, timeout=60)["state"] == "cancelled"
    assert not build_containers(podman_service.environment)


def test_a_build_past_its_deadline_fails_and_leaves_no_container(podman_service: RunningServer) -> None:
    build_id = request(podman_service, kernel=TOO_SLOW).json()["build"]["id"]
    build = wait_for(podman_service, build_id, ENDED, timeout=DEADLINE + 60)
    assert build["state"] == "failed" and f"did not finish within the build's {DEADLINE} s" in str(build["error"]), (
        build
    )
    assert not build_containers(podman_service.environment)


def test_a_killed_worker_leaves_no_container_behind(tmp_path: Path, bundle_tgz: Path) -> None:
    """Its build's process dies with it; its container lived on in the engine: another worker of the host
    removes it once no running attempt owns it (the build itself is retried)."""
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, TO_CANCEL, build_seconds=300)
    environment = {
        **podman_settings(tmp_path),
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_BUILD_LEASE_SECONDS": "3",
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
    }
    server = start_server(tmp_path / "var", tmp_path / "serve.log", environment)
    workers = [start_worker(server, tmp_path / "worker-a.log")]
    try:
        assert upload(server, "bundles", bundle_tgz).status_code == 201
        build_id = request(server, kernel=TO_CANCEL).json()["build"]["id"]
        wait_for_log(server, build_id, "Building")
        (first,) = build_containers(server.environment)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        workers.append(start_worker(server, tmp_path / "worker-b.log"))
        deadline = time.monotonic() + 120
        while first in build_containers(server.environment) and time.monotonic() < deadline:
            time.sleep(1)
        assert first not in build_containers(server.environment)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=60)
        stop_server(server)
    assert not build_containers(server.environment)  # the second attempt's went with its stopping worker


def test_containers_no_running_attempt_owns_are_swept(
    tmp_path: Path, settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """What the sweep of every worker of a container runner removes: a container of an attempt that is not
    running (its worker was killed), never one of an attempt that is."""
    environment = podman_settings(tmp_path)
    engine = {**os.environ, "CONTAINERS_CONF": environment["CONTAINERS_CONF"]}
    (build_id,) = enqueue(sessions)
    assert lifecycle.claim(sessions, "alive", lease_seconds=300) == build_id  # attempt 1 runs
    image = environment["OFEDREPO_BUILD_CONTAINER_IMAGES"].split("=", 1)[1]
    instance = DataDir(settings.data_dir).instance
    names = [
        f"ofedrepo-build-{instance}-{build_id}-a1-{os.getpid():x}",
        f"ofedrepo-build-{instance}-{build_id + 1000}-a1-{os.getpid():x}",
        f"ofedrepo-build-0another0-{build_id + 1000}-a1-{os.getpid():x}",  # another deployment's: never swept
    ]
    for name in names:
        subprocess.run(["podman", "run", "-d", "--name", name, image, "sleep", "300"], env=engine, check=True,
                       capture_output=True)  # fmt: skip
    try:
        configured = settings.model_copy(update={"build_runner": "podman"})
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CONTAINERS_CONF", environment["CONTAINERS_CONF"])
            assert remove_orphan_containers(configured, sessions) == [names[1]]
            left = build_containers(engine, every_deployment=True)
            assert names[1] not in left and names[0] in left and names[2] in left
    finally:
        for name in names:
            subprocess.run(
                ["podman", "rm", "--force", "--time", "0", "--ignore", name], env=engine, capture_output=True
            )
