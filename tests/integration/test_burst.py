"""A burst of clients never wedges the service: 50 at once on a repo and then on health, bounded to a few seconds.

Measured before the fix: the same burst left health unanswered for about two minutes (each health request held
one database connection and waited for a second one from a pool of 15; the 30 s pool timeout then gave 500s).
Now every request holds at most one connection, taken in the thread that runs it, the pool has more
connections than there are such threads, and a request that still finds none is told 503 with Retry-After.
"""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server

CLIENTS = 50
SECONDS_PER_PHASE = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "var", tmp_path / "serve.log")  # the defaults: SQLite in the data dir
    try:
        yield running
    finally:
        stop_server(running)


def burst(url: str) -> Counter[str]:
    """``CLIENTS`` clients asking ``url`` over and over for ``SECONDS_PER_PHASE``; what they got, by status."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + SECONDS_PER_PHASE

    def client() -> None:
        with httpx.Client(timeout=20) as session:
            while time.monotonic() < end:
                try:
                    outcome = str(session.get(url).status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_a_burst_of_clients_gets_answers_and_health_answers_right_after(server: RunningServer) -> None:
    repos = burst(f"{server.url}/api/v1/repos/1")
    health = burst(f"{server.url}/api/v1/health")
    assert set(repos) == {"404"} and sum(repos.values()) > CLIENTS, repos  # no repo yet: 404, never a 5xx
    assert set(health) == {"200"} and sum(health.values()) > CLIENTS, health
    answer = httpx.get(f"{server.url}/api/v1/health", timeout=10).json()
    assert answer["status"] == "ok" and answer["database"] == "ok", answer
    assert "Traceback" not in (server.settings.data_dir.parent / "serve.log").read_text()
