"""Each build in a process of its own, through the running service: a build process that dies takes nothing
with it, a cancel takes effect in a phase that never looks whether to stop (a stalled download), and the
API process runs no build code (the embedded worker is a process of its own, which ends with the service).
"""

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from synthetic.bundle import make_kernel_devel_repo, make_kernel_sources
from tests.conftest import RunningServer, free_port, start_server, stop_server
from tests.integration.test_pipeline import ENDED, build_log, request, upload, wait_for, wait_for_log

SLOW = "4.18.0-372.13.1.el8_6.x86_64"  # its script runs for a minute
STALLED = "4.18.0-372.90.1.el8_6.x86_64"  # its kernel-devel download never ends
QUICK = "4.18.0-372.19.1.el8_6.x86_64"


class Stalling(SimpleHTTPRequestHandler):
    """A mirror whose metadata comes at once and whose packages start, then stop coming (until ``released``)."""

    released = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self.path.endswith(".rpm"):
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(10 * 1024 * 1024))
        self.end_headers()
        self.wfile.write(b"\xed\xab\xee\xdb" + bytes(1020))
        self.wfile.flush()
        self.released.wait(120)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def stalling_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = make_kernel_devel_repo(tmp_path_factory.mktemp("stalling") / "AppStream", STALLED)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), partial(Stalling, directory=str(repo)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    Stalling.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, stalling_mirror: str, bundle_tgz: Path
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("build-process")
    sources = root / "kernels"
    make_kernel_sources(sources, QUICK)
    make_kernel_sources(sources, SLOW, build_seconds=60)
    environment = {
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_KERNEL_DEVEL_REPOS": f"{stalling_mirror} gpgcheck=0",
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        "OFEDREPO_WORKER_CONCURRENCY": "2",
    }
    server = start_server(root / "var", root / "serve.log", environment, worker=True)
    try:
        assert upload(server, "bundles", bundle_tgz).status_code == 201
        yield server
    finally:
        stop_server(server)


def build_process(server: RunningServer, build_id: int) -> int:
    """The pid of the process running the build, from its log's first line ("..., process <pid>")."""
    line = wait_for_log(server, build_id, ", process ")
    return int(line.split(", process ", 1)[1].split()[0].rstrip(","))


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_the_api_process_runs_no_build_code(service: RunningServer) -> None:
    build_id = request(service, kernel=QUICK).json()["build"]["id"]
    assert wait_for(service, build_id, ENDED)["state"] == "succeeded", build_log(service, build_id)
    pid = build_process(service, build_id)
    assert pid != service.process.pid and pid not in children_of(service.process.pid)
    (worker,) = children_of(service.process.pid)  # the embedded worker, a process of its own
    assert b"worker" in Path(f"/proc/{worker}/cmdline").read_bytes()


def test_a_build_process_killed_by_a_signal_fails_its_build_and_nothing_else(service: RunningServer) -> None:
    build_id = request(service, kernel=SLOW).json()["build"]["id"]
    wait_for_log(service, build_id, "Building")  # the vendor's script runs
    os.kill(build_process(service, build_id), signal.SIGKILL)
    build = wait_for(service, build_id, ENDED, timeout=60)
    assert build["state"] == "failed" and build["error"] == "its process was killed by signal 9 (SIGKILL)", build
    assert httpx.get(f"{service.url}/api/v1/health", timeout=10).json()["status"] == "ok"
    forced = request(service, kernel=QUICK, force=True).json()["build"]["id"]  # the worker goes on
    assert wait_for(service, forced, ENDED)["state"] == "succeeded"
    assert not [line for line in Path("/proc/self/mounts").read_text().splitlines() if "ofedrepo-sandbox" in line]
    assert left_by_attempt(service, build_id) == []  # its scratch and the filesystem it had went with it


def test_a_cancel_takes_effect_during_a_download_that_never_ends(service: RunningServer) -> None:
    """The download never looks whether to stop: the build's process is killed a few seconds after the cancel."""
    build_id = request(service, kernel=STALLED).json()["build"]["id"]
    wait_for_log(service, build_id, "kernel sources: downloading")
    cancelled = httpx.post(f"{service.url}/api/v1/builds/{build_id}/cancel", timeout=10)
    assert cancelled.status_code == 202, cancelled.text
    build = wait_for(service, build_id, ENDED, timeout=60)  # not the download's own two-hour deadline
    assert build["state"] == "cancelled", build
    assert "cancelled by request" in build_log(service, build_id)
    assert left_by_attempt(service, build_id) == []  # the half-done download, at once rather than at retention


def left_by_attempt(service: RunningServer, build_id: int) -> list[str]:
    """What the build's first attempt left in the data directory's scratch places (named after the attempt)."""
    data = service.settings.data_dir
    places = [data / "work", data / "staging", data / "kernel-sources"]
    found = [entry.name for place in places if place.is_dir() for entry in place.iterdir()]
    mounted = [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(data) in line]
    return [name for name in found if f"-{build_id}-a1-" in name] + mounted


def test_a_cancel_after_the_build_published_is_a_409(service: RunningServer) -> None:
    build_id = request(service, kernel=QUICK, force=True).json()["build"]["id"]
    assert wait_for(service, build_id, ENDED)["state"] == "succeeded"
    late = httpx.post(f"{service.url}/api/v1/builds/{build_id}/cancel", timeout=10)
    assert late.status_code == 409 and "succeeded" in late.json()["detail"]


def test_a_killed_embedded_worker_is_started_again_and_builds_go_on(service: RunningServer) -> None:
    """The OOM killer takes the embedded worker: serve starts another, which builds what is asked next."""
    (worker,) = children_of(service.process.pid)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not (replacements := [pid for pid in children_of(service.process.pid) if pid != worker]):
        assert time.monotonic() < deadline, "no worker was started again"
        time.sleep(0.2)
    assert b"worker" in Path(f"/proc/{replacements[0]}/cmdline").read_bytes()
    build_id = request(service, kernel=QUICK, force=True).json()["build"]["id"]
    assert wait_for(service, build_id, ENDED)["state"] == "succeeded", build_log(service, build_id)
    assert (
        "the embedded worker ended (exit status -9): starting another"
        in (service.settings.data_dir.parent / "serve.log").read_text()
    )
    # Ctrl-C while that worker (started by serve's watcher thread, with which it would die) builds: the build
    # goes back to the queue, its scratch unmounted, as a stopping worker's builds do. (Last: serve ends here.)
    slow = request(service, kernel=SLOW, force=True).json()["build"]["id"]
    wait_for_log(service, slow, "Building")
    service.process.send_signal(signal.SIGINT)
    assert service.process.wait(timeout=90) is not None
    with sqlite3.connect(service.settings.data_dir / "ofedrepo.db") as database:
        (state,) = database.execute("SELECT state FROM builds WHERE id = ?", (slow,)).fetchone()
    assert state == "queued", build_log_file(service, slow)
    assert str(service.settings.data_dir) not in Path("/proc/self/mounts").read_text()


def build_log_file(service: RunningServer, build_id: int) -> str:
    return (service.settings.data_dir / "builds" / f"{build_id}.log").read_text()
