"""Faults, made for real: a full disk under the data directory (a small tmpfs the test mounts), and the
database killing every connection of the service while a build runs.

A full disk gets one clear answer (507 over HTTP, one line and a non-zero exit from the CLI), leaves nothing
half-written behind, and the service keeps answering. Lost connections are replaced and the build ends.
"""

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import POSTGRES_URL, VENV_BIN, postgres_available, start_server, start_worker, stop_server
from tests.integration.test_pipeline import (
    ENDED,
    build_log,
    request,
    start_stack,
    stop_workers,
    wait_for,
    wait_for_log,
)
from tests.support.synthetic_bundle import make_kernel_sources

DISK_MB = 24
SLOWISH_KERNEL = "4.18.0-372.46.1.el8_6.x86_64"
ADMIN_URL = POSTGRES_URL.replace("+psycopg", "")
TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB filesystem of its own, for the data directory."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill ``disk`` up to ``leave_bytes`` of free space."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with (disk / "filler").open("wb") as handle:
        handle.write(bytes(max(0, free - leave_bytes)))


def test_an_upload_that_fills_the_disk_gets_507_and_leaves_nothing(tmp_path: Path, small_disk: Path) -> None:
    database = f"sqlite:///{tmp_path / 'ofedrepo.db'}"  # the tree's disk fills, not the database's
    server = start_server(small_disk / "var", tmp_path / "serve.log", {"OFEDREPO_DATABASE_URL": database})
    try:
        big = tmp_path / "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64.tgz"
        big.write_bytes(os.urandom((DISK_MB + 8) * 1024 * 1024))
        with big.open("rb") as stream:
            refused = httpx.post(f"{server.url}/api/v1/bundles", files={"file": (big.name, stream)}, timeout=120)
        assert refused.status_code == 507 and "no space left on the disk" in refused.json()["detail"]
        assert list((small_disk / "var" / "uploads").iterdir()) == []
        assert httpx.get(f"{server.url}/api/v1/health", timeout=10).json()["status"] == "ok"
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        stop_server(server)


def test_a_publish_onto_a_full_disk_says_so_in_one_line_and_leaves_no_version(
    tmp_path: Path, small_disk: Path, ext_tgz: Path
) -> None:
    environment = {
        **os.environ,
        "OFEDREPO_DATA_DIR": str(small_disk / "var"),
        "OFEDREPO_DATABASE_URL": f"sqlite:///{tmp_path / 'ofedrepo.db'}",
    }
    subprocess.run([str(VENV_BIN / "ofedrepo"), "db", "upgrade"], env=environment, check=True, capture_output=True)
    (small_disk / "var").mkdir(exist_ok=True)
    fill(small_disk, leave_bytes=512 * 1024)
    completed = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "publish", str(ext_tgz)], env=environment, capture_output=True, text=True
    )
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().startswith("error: no space left on the disk")
    assert len(completed.stderr.strip().splitlines()) <= 2
    var = small_disk / "var"
    assert not (var / "repos").exists() or list((var / "repos").rglob("RPMS")) == []
    for scratch in ("staging", "work"):
        assert not (var / scratch).exists() or list((var / scratch).iterdir()) == [], scratch
    (small_disk / "filler").unlink()
    retried = subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "publish", str(ext_tgz)], env=environment, capture_output=True
    )
    assert retried.returncode == 0, retried.stderr


@pytest.mark.postgres
def test_a_build_survives_its_database_connections_being_killed(tmp_path: Path, bundle_tgz: Path) -> None:
    """pg_terminate_backend on every connection of the service, several times while a build runs: the build
    still ends (here: succeeds) and nothing stays `running` without a live lease."""
    if reason := postgres_available():
        pytest.skip(reason)
    name = f"ofedrepo_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, SLOWISH_KERNEL, build_seconds=8)
    database = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    server = start_stack(tmp_path, sources, bundle_tgz, {"OFEDREPO_DATABASE_URL": database}, lease_seconds=6)
    worker = start_worker(server, tmp_path / "worker.log")
    try:
        build_id = request(server, kernel=SLOWISH_KERNEL).json()["build"]["id"]
        wait_for_log(server, build_id, "(2/")
        killed = 0
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for _ in range(4):
                rows = admin.execute(TERMINATE, (name,)).fetchall()
                killed += len(rows)
                time.sleep(1.5)
        assert killed >= 2  # the server's and the worker's connections were there to kill
        build = wait_for(server, build_id, ENDED, timeout=120)
        assert build["state"] == "succeeded", build_log(server, build_id)
    finally:
        stop_workers([worker])
        stop_server(server)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
