"""The service's own log, as an operator reads it (or a collector parses it with OFEDREPO_LOG_FORMAT=json): what
happened to each build, not only access lines."""

import json
from pathlib import Path

import httpx

from synthetic.bundle import BundleSpec
from tests.conftest import TARGET_KERNEL, start_server, stop_server
from tests.integration.test_pipeline import ENDED, request, upload, wait_for

MISSING_KERNEL = "4.18.0-372.71.1.el8_6.x86_64"  # no sources anywhere: its build fails


def test_builds_queued_started_succeeded_and_failed_are_logged_as_json_lines(
    tmp_path: Path, bundle_tgz: Path, kernel_sources: Path
) -> None:
    log_file = tmp_path / "serve.log"
    environment = {
        "OFEDREPO_LOG_FORMAT": "json",
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(kernel_sources),
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
    }
    server = start_server(tmp_path / "var", log_file, environment, worker=True)
    try:
        assert upload(server, "bundles", bundle_tgz).status_code == 201
        built = request(server, kernel=TARGET_KERNEL).json()["build"]["id"]
        failed = request(server, kernel=MISSING_KERNEL).json()["build"]["id"]
        for build_id in (built, failed):
            wait_for(server, build_id, ENDED)
    finally:
        stop_server(server)
    lines = [line for line in log_file.read_text().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= set(record) for record in records)
    messages = [record["message"] for record in records]
    name = BundleSpec().name
    expected = [
        f"build {built} queued by a request: {name} for {TARGET_KERNEL}",
        f"runs build {built}",
        f"published {name} for {TARGET_KERNEL} as version 1",
        f"build {built} succeeded: {name} for {TARGET_KERNEL}, version 1",
        f"build {failed} failed: {name} for {MISSING_KERNEL}: no kernel sources for {MISSING_KERNEL}",
    ]
    for text in expected:
        assert any(text in message for message in messages), (text, messages)
    assert any(record["logger"] == "uvicorn.access" and "POST /api/v1/repos" in record["message"] for record in records)


def test_each_web_process_of_several_logs_its_access_lines_as_configured(tmp_path: Path) -> None:
    """`serve --workers N` spawns its web processes afresh: each must log through the service's own format."""
    log_file = tmp_path / "serve.log"
    server = start_server(tmp_path / "var", log_file, {"OFEDREPO_LOG_FORMAT": "json"}, arguments=("--workers", "2"))
    try:
        (tmp_path / "var" / "repos" / "a").mkdir(parents=True)
        (tmp_path / "var" / "repos" / "a" / "repomd.xml").write_text("<repomd/>")
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(8):  # new connections: both processes take some
                assert client.get("/repos/a/repomd.xml", headers={"Connection": "close"}).status_code == 200
                assert client.get("/api/v1/ping", headers={"Connection": "close"}).status_code == 200
    finally:
        stop_server(server)
    records = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    access = [record for record in records if record["logger"] == "uvicorn.access"]
    assert len([record for record in access if "GET /repos/a/repomd.xml" in record["message"]]) == 8
    assert len([record for record in access if "GET /api/v1/ping" in record["message"]]) == 8
    started = [record for record in records if record["message"].startswith("Started server process")]
    assert len(started) == 2
    assert not [line for line in log_file.read_text().splitlines() if line and not line.startswith("{")]
