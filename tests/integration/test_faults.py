"""Faults, made for real: a full disk under the data directory (a small tmpfs the test mounts), the
database killing every connection of the service while a build runs, and a worker on another "host" (a
network namespace) whose link to the database goes down mid-build.

A full disk gets one clear answer (507 over HTTP, one line and a non-zero exit from the CLI), leaves nothing
half-written behind, and the service keeps answering. Lost connections are replaced and the build ends.
"""

import contextlib
import errno
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from ofedrepo.builds.kernel_sources import KernelSources
from ofedrepo.db import LOCK_WAIT_SECONDS
from ofedrepo.storage import DataDir
from synthetic.bundle import BundleSpec, make_kernel_devel_repo, make_kernel_sources
from tests.conftest import (
    POSTGRES_URL,
    TARGET_KERNEL,
    VENV_BIN,
    make_settings,
    postgres_available,
    service_environment,
    start_server,
    start_worker,
    stop_server,
)
from tests.integration.test_pipeline import (
    ENDED,
    build_log,
    request,
    start_stack,
    stop_workers,
    upload,
    wait_for,
    wait_for_log,
)
from tests.integration.test_publish import assert_complete
from tests.support.kill import kill_when
from workers.pipeline import BuildLog

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


def test_kernel_sources_unpacked_onto_a_full_disk_leave_no_half_tree(tmp_path: Path, small_disk: Path) -> None:
    """The kernel-devel download succeeded, the disk fills while its tree is written: nothing is cached
    (a later build must not find a half tree), and no ``.partial-*`` stays behind."""
    kernel = "4.18.0-372.9.1.el8.x86_64"
    repo = make_kernel_devel_repo(tmp_path / "mirror" / "BaseOS", kernel)
    package = next((repo / "Packages").glob("*.rpm"))
    settings = make_settings(small_disk / "var", f"sqlite:///{tmp_path / 'ofedrepo.db'}")
    data = DataDir(settings.data_dir).ensure()
    data.kernel_sources.mkdir(parents=True, exist_ok=True)
    fill(small_disk, leave_bytes=0)
    with pytest.raises(OSError, match="No space left") as raised:
        KernelSources(settings, data, lambda _: None)._unpack(package, kernel, package.name, "http://mirror/")
    assert raised.value.errno == errno.ENOSPC
    assert list(data.kernel_sources.iterdir()) == []


def test_a_build_log_on_a_full_disk_loses_lines_not_the_build(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A build's log cannot be written once the disk is full: the lines that do not fit are lost, the build
    goes on (its end is recorded in the database), and the service's log says so once. Before, the write raised
    from the build's own failure handler, and the build ended as an internal error."""
    log_file = small_disk / "1.log"
    with BuildLog.appending(log_file, limit=1 << 20) as build_log:
        build_log.note("started")
        fill(small_disk, leave_bytes=0)
        build_log.write("", b"x" * 65536)
        build_log.note("FAILED: no space left on the disk")
        build_log.write("tool.log", b"more")
    assert build_log.lost
    assert log_file.read_bytes().startswith(b"[ofedrepo ")
    assert [record.getMessage() for record in caplog.records if "incomplete" in record.getMessage()] == [
        "a build log is incomplete: no space left on the disk; free some (ofedrepo gc) and try again"
    ]


class ForwardToPostgres:
    """A TCP forwarder from ``address`` to the local PostgreSQL, standing in for the database host's end of a
    network link. Its sockets keep alive and time out unacknowledged data as a server configured with
    ``tcp_keepalives_*`` and ``tcp_user_timeout`` does, so a client lost with its link has its session ended
    (and its locks released) instead of holding them for the kernel's 15 minutes."""

    def __init__(self, address: str) -> None:
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            for option, value in ((socket.TCP_KEEPIDLE, 2), (socket.TCP_KEEPINTVL, 1), (socket.TCP_KEEPCNT, 3),
                                  (socket.TCP_USER_TIMEOUT, 5000)):  # fmt: skip
                client.setsockopt(socket.IPPROTO_TCP, option, value)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            upstream = socket.create_connection(("127.0.0.1", 5432))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):  # wakes the other direction's thread, which then finds both closed
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


class RemoteHost:
    """A network namespace on a veth link to this one: a worker started in it is on another host, as far
    as the network goes, and ``cut()`` takes its link down."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.namespace, self.host_end, self.far_end = f"ofr-{tag}", f"ofrh{tag}", f"ofrf{tag}"
        subnet = f"10.213.{int(tag[:2], 16)}"
        self.address = f"{subnet}.1"
        for argv in (
            ["ip", "netns", "add", self.namespace],
            ["ip", "link", "add", self.host_end, "type", "veth", "peer", "name", self.far_end],
            ["ip", "link", "set", self.far_end, "netns", self.namespace],
            ["ip", "addr", "add", f"{self.address}/30", "dev", self.host_end],
            ["ip", "link", "set", self.host_end, "up"],
            ["ip", "-n", self.namespace, "addr", "add", f"{subnet}.2/30", "dev", self.far_end],
            ["ip", "-n", self.namespace, "link", "set", self.far_end, "up"],
            ["ip", "-n", self.namespace, "link", "set", "lo", "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)

    def cut(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_end, "down"], check=True)

    def restore(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_end, "up"], check=True)

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.namespace], check=False)
        subprocess.run(["ip", "link", "delete", self.host_end], check=False, capture_output=True)


@pytest.mark.postgres
def test_a_worker_whose_link_goes_down_loses_its_build_to_another_host(tmp_path: Path, bundle_tgz: Path) -> None:
    """Worker A, in its own network namespace, reaches PostgreSQL over a veth link; the link goes down while
    A's script runs. A's lease expires, worker B on another "host" takes the build and publishes it, A stops
    its build; once A's link is back, A publishes nothing over B's version and nothing stays running."""
    if reason := postgres_available():
        pytest.skip(reason)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    name = f"ofedrepo_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    host = RemoteHost()
    forwarder = ForwardToPostgres(host.address)
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, SLOWISH_KERNEL, build_seconds=12)
    database = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    server = start_stack(tmp_path, sources, bundle_tgz, {"OFEDREPO_DATABASE_URL": database}, lease_seconds=6)
    far_database = database.replace("127.0.0.1:5432", f"{host.address}:{forwarder.port}")
    with (tmp_path / "worker-a.log").open("wb") as output:
        worker_a = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, str(VENV_BIN / "ofedrepo"), "worker"],
            env={**server.environment, "OFEDREPO_DATABASE_URL": far_database},
            stdout=output,
            stderr=output,
        )
    workers = [worker_a]
    try:
        build_id = request(server, kernel=SLOWISH_KERNEL).json()["build"]["id"]
        wait_for_log(server, build_id, "(2/")
        process_a = build_process_of(server.settings.data_dir / "builds" / f"{build_id}.log")
        assert process_a is not None, "A's build process names itself in the log's first line"
        host.cut()
        workers.append(start_worker(server, tmp_path / "worker-b.log"))
        build = wait_for(server, build_id, ENDED, timeout=150)
        log = build_log(server, build_id)
        assert build["state"] == "succeeded" and build["attempts"] == 2, log
        assert build["version_number"] == 1
        host.restore()
        deadline = time.monotonic() + 60  # A notices, once it can reach the database again
        while "stopping it" not in (tmp_path / "worker-a.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "stopping it" in (tmp_path / "worker-a.log").read_text()
        deadline = time.monotonic() + 60  # A's build process ends: only a living one could publish
        while Path(f"/proc/{process_a}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{process_a}").exists(), "A's build process outlived its stop"
        repo = httpx.get(f"{server.url}/api/v1/repos/{build['repo_id']}", timeout=10).json()
        assert [version["number"] for version in repo["versions"]] == [1]
        published = server.settings.data_dir / "repos" / BundleSpec().name / SLOWISH_KERNEL
        assert sorted(path.name for path in published.iterdir()) == ["1", "latest"]
        listed = httpx.get(f"{server.url}/api/v1/builds", timeout=10).json()
        assert [listed_build["state"] for listed_build in listed] == ["succeeded"]
    finally:
        stop_workers(workers)
        stop_server(server)
        forwarder.close()
        host.remove()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_process_of(build_log_file: Path) -> int | None:
    """The pid of the process running a build, from its log's first line ("..., process <pid>")."""
    found = re.search(r", process ([0-9]+)", build_log_file.read_text(errors="replace"))
    return int(found.group(1)) if found else None


def log_says(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.is_file() and text in log.read_text(errors="replace")


def assert_one_complete_version(repo_dir: Path) -> None:
    """Version 1, complete (its repodata lists every package it holds), is all there is, and is `latest`."""
    assert sorted(path.name for path in repo_dir.iterdir()) == ["1", "latest"]
    assert os.readlink(repo_dir / "latest") == "1"
    assert_complete(repo_dir / "1")


@pytest.mark.parametrize("step", ["script running", "staging the version", "published, not recorded"])
def test_a_service_killed_at_each_step_of_a_build_finishes_it_after_a_restart(
    tmp_path: Path, bundle_tgz: Path, step: str
) -> None:
    """`ofedrepo serve` with its embedded worker, SIGKILLed mid-build, then started again: the build ends
    (succeeded, by a second attempt), exactly one complete version exists, and `latest` points at it."""
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, SLOWISH_KERNEL, build_seconds=3)
    environment = {
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        "OFEDREPO_BUILD_LEASE_SECONDS": "3",
    }
    server = start_server(tmp_path / "var", tmp_path / "serve.log", environment, worker=True)
    try:
        assert upload(server, "bundles", bundle_tgz).status_code == 201
        build_id = request(server, kernel=SLOWISH_KERNEL).json()["build"]["id"]
        build_file = server.settings.data_dir / "builds" / f"{build_id}.log"
        repo_dir = server.settings.data_dir / "repos" / BundleSpec().name / SLOWISH_KERNEL
        happened = {
            "script running": log_says(build_file, "(2/"),
            "staging the version": log_says(build_file, "Staging packages"),
            "published, not recorded": lambda: (repo_dir / "1").is_dir(),
        }[step]
        # The build runs in a process of its own: all of them die at that step, as on a lost host.
        kill_when(server.process, happened, whole_tree=True)
    finally:
        stop_server(server)
    restarted = start_server(tmp_path / "var", tmp_path / "serve-again.log", environment, worker=True)
    try:
        build = wait_for(restarted, build_id, ENDED, timeout=120)
        log = build_log(restarted, build_id)
        assert (build["state"], build["attempts"], build["version_number"]) == ("succeeded", 2, 1), log
        if step == "published, not recorded":
            assert "version 1 was published by an earlier attempt: recording it, nothing to redo" in log
        assert_one_complete_version(repo_dir)
        assert "Traceback" not in (tmp_path / "serve-again.log").read_text()
    finally:
        stop_server(restarted)


@pytest.mark.parametrize("step", ["staging", "renamed, latest not switched"])
def test_a_publish_killed_at_each_step_leaves_no_partial_version(tmp_path: Path, ext_tgz: Path, step: str) -> None:
    """`ofedrepo publish` SIGKILLed while it stages, or between the rename of the version and the switch of
    `latest`: nothing partial is visible, and publishing again completes (or repairs) the version."""
    environment = service_environment(tmp_path / "var", "http://127.0.0.1:8000", None)
    data = tmp_path / "var"
    repo_dir = data / "repos" / BundleSpec().name / TARGET_KERNEL
    publish = [str(VENV_BIN / "ofedrepo"), "publish", str(ext_tgz)]
    with (tmp_path / "publish.log").open("wb") as output:
        process = subprocess.Popen(publish, env=environment, stdout=output, stderr=output)
    happened = {
        "staging": lambda: any((data / "staging").glob("publish-*/RPMS/repodata")),
        "renamed, latest not switched": lambda: (repo_dir / "1").is_dir(),
    }[step]
    kill_when(process, happened)
    assert not (repo_dir / "latest").exists() or os.readlink(repo_dir / "latest") == "1"
    # Hidden names (a link being made for `latest`, had the kill landed inside the switch) are never served.
    listed = [path.name for path in repo_dir.iterdir() if not path.name.startswith(".")] if repo_dir.is_dir() else []
    assert [name for name in listed if name != "latest"] == (["1"] if step.startswith("renamed") else [])
    again = subprocess.run(publish, env=environment, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert_one_complete_version(repo_dir)


def test_a_build_survives_the_sqlite_database_being_locked_past_its_busy_timeout(
    tmp_path: Path, bundle_tgz: Path
) -> None:
    """Another process holds SQLite's write lock longer than the service waits for it (30 s) while a build
    runs: heartbeats fail with "database is locked" and the worker stops trusting its lease; once the lock is
    gone the build succeeds (its publish's fence renews the lease when no one else took the build, or
    another attempt runs), and nothing stays `running`."""
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, SLOWISH_KERNEL, build_seconds=8)
    server = start_stack(tmp_path, sources, bundle_tgz, {}, lease_seconds=6)
    worker = start_worker(server, tmp_path / "worker.log")
    try:
        build_id = request(server, kernel=SLOWISH_KERNEL).json()["build"]["id"]
        wait_for_log(server, build_id, "(2/")
        holder = sqlite3.connect(server.settings.data_dir / "ofedrepo.db", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            released = time.monotonic() + LOCK_WAIT_SECONDS + 5
            # A client meanwhile is told to come back (503, Retry-After) once the API's shorter wait is over,
            # and reads still answer (WAL: readers never wait for the writer).
            asked = request(server, kernel=TARGET_KERNEL)
            assert asked.status_code == 503 and asked.headers["Retry-After"] == "1", asked.text
            assert httpx.get(f"{server.url}/api/v1/builds/{build_id}", timeout=10).status_code == 200
            time.sleep(max(0.0, released - time.monotonic()))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        build = wait_for(server, build_id, ENDED, timeout=120)
        assert build["state"] == "succeeded", build_log(server, build_id)
        listed = httpx.get(f"{server.url}/api/v1/builds", timeout=10).json()
        assert [listed_build["state"] for listed_build in listed] == ["succeeded"]
        assert "database is locked" in (tmp_path / "worker.log").read_text()
    finally:
        stop_workers([worker])
        stop_server(server)
