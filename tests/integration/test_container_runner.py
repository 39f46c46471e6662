"""The production runner for real: builds in podman containers (a builder image made here, see
tests/support/builder_image.py) publish repositories a real dnf installs from; a cancelled build and one past
its deadline leave no container behind, and the engine runs with the worker's environment (its
containers.conf) while the script inside gets only what the runner passes.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.integration.test_dnf import dnf
from tests.integration.test_pipeline import ENDED, build_log, module_vermagic, request, upload, wait_for, wait_for_log
from tests.support.builder_image import build_containers, podman_settings
from tests.support.synthetic_bundle import make_kernel_sources

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
