"""The service's own log, as an operator reads it (or a collector parses it with OFEDREPO_LOG_FORMAT=json): what
happened to each build, not only access lines."""

import json
from pathlib import Path

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
