"""Prometheus metrics, all named ``ofedrepo_*``.

Two kinds. What a process times itself (appliance launches, publishes, HTTP requests) lives here, in that
process's default registry: ``ofedrepo serve`` shows its own and its embedded worker's at ``/metrics``, and
``ofedrepo worker --metrics-port N`` shows a standalone worker's. What the whole deployment knows is read
from the database at scrape time (``ofedrepo.builds.collector``).

``ofedrepo serve --workers N`` runs N web server processes: their own metrics then go to files in one
directory (prometheus_client's multiprocess mode) and any of them reports the sum.
"""

import os
import shutil
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

INSPECTION_SECONDS = Histogram(
    "ofedrepo_inspection_duration_seconds",
    "Appliance inspections of unknown images (one launch may inspect several)",
    buckets=(5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0),
)
PUBLISH_SECONDS = Histogram(
    "ofedrepo_publish_duration_seconds",
    "Publishing one version: reading, signing, metadata, the atomic rename",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
#: prometheus_client's own variable: where the processes of one server write their metrics.
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(directory: Path) -> None:
    """Before starting several web server processes: they will write their metrics to ``directory`` (emptied
    now: counts of a previous run must not be added in). Child processes import prometheus_client afresh and
    see the variable; this one's own metrics (an embedded worker's) stay in its memory."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_VARIABLE] = str(directory)


def process_registry() -> CollectorRegistry:
    """What ``/metrics`` reports as the server's own: every web process's when they share, else this one's."""
    if not os.environ.get(MULTIPROCESS_VARIABLE):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


HTTP_REQUESTS = Counter(
    "ofedrepo_http_requests", "HTTP requests answered, by route template and status", ["method", "route", "status"]
)
