"""The compose deployment's structure: the services the design names, wired the way it describes.

`docker compose config` validates the file where the compose plugin exists (not on the development
machine: its docker client has no compose plugin, so that part is skipped, saying so).
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = "/srv/ofedrepo"
#: The data directory on the host, mounted at the same path: the worker's builder containers see it there too.
HOST_DATA = "${OFEDREPO_DATA_ON_HOST:-/srv/ofedrepo}"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def command_of(service: dict[str, Any]) -> str:
    return " ".join(service["command"])


def test_the_services(compose: dict[str, Any]) -> None:
    assert {"postgres", "migrate", "api", "worker", "nginx"} <= set(compose["services"])


def test_the_api_runs_no_embedded_worker_and_workers_work(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert command_of(services["api"]).startswith("ofedrepo serve") and "--no-worker" in command_of(services["api"])
    assert command_of(services["worker"]).startswith("ofedrepo worker")
    assert services["worker"]["build"]["target"] == "worker"


def test_migrations_run_once_before_api_and_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert command_of(services["migrate"]) == "ofedrepo db upgrade"
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_one_database_and_one_shared_data_directory(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("migrate", "api", "worker"):
        environment = services[name]["environment"]
        assert environment["OFEDREPO_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["OFEDREPO_DATA_DIR"] == HOST_DATA
        assert f"{HOST_DATA}:{HOST_DATA}" in services[name]["volumes"]
    assert f"{HOST_DATA}:{DATA}:ro" in services["nginx"]["volumes"]  # nginx only reads the tree


def test_workers_build_in_builder_containers_through_the_hosts_engine(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["environment"]["OFEDREPO_BUILD_RUNNER"] == "docker"
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    assert "/usr/src/kernels:/usr/src/kernels:ro" in worker["volumes"]
    worker_stage = (ROOT / "Dockerfile").read_text().split("AS worker", 1)[1]
    assert "docker.io" in worker_stage and "OFEDREPO_BUILD_RUNNER=docker" in worker_stage


def test_nginx_serves_the_tree_and_proxies_the_rest(compose: dict[str, Any]) -> None:
    mount = next(volume for volume in compose["services"]["nginx"]["volumes"] if "nginx.conf" in volume)
    config = (ROOT / mount.split(":")[0]).read_text()
    assert re.search(rf"location /repos/ \{{\s*root {DATA};", config)
    assert "proxy_pass http://api:8000;" in config
    assert 'add_header Cache-Control "no-cache"' in config and "gzip off;" in config


def test_the_dockerfile_has_the_targets_compose_builds(compose: dict[str, Any]) -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    targets = {service["build"]["target"] for service in compose["services"].values() if "build" in service}
    assert targets <= set(stages)


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not compose_plugin(), reason="no `docker compose` plugin on this machine")
def test_docker_compose_accepts_the_file() -> None:
    subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], check=True)
