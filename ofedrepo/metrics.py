"""Prometheus metrics, all named ``ofedrepo_*``.

Two kinds. What a process times itself (appliance launches, publishes, HTTP requests) lives here. Builds run
in processes of their own and ``ofedrepo serve`` may run several web processes, so these go to files in one
directory (prometheus_client's multiprocess mode) and are reported summed: ``ofedrepo serve`` shows its web
processes', its embedded worker's and their builds' at ``/metrics``, and ``ofedrepo worker --metrics-port N``
a standalone worker's and its builds'. What the whole deployment knows is read from the database at scrape
time (``ofedrepo.builds.collector``).
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from ofedrepo.metrics_sharing import MULTIPROCESS_VARIABLE

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
