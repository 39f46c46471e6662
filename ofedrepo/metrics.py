"""Prometheus metrics, all named ``ofedrepo_*``.

Two kinds. What a process times itself (appliance launches, publishes, HTTP requests) lives in that
process's default registry: ``ofedrepo serve`` shows its own and its embedded worker's at ``/metrics``, and
``ofedrepo worker --metrics-port N`` shows a standalone worker's. What the whole deployment knows (builds by
state, queue depth, build durations, published versions, live workers) is read from the database at scrape
time by ``DatabaseCollector``, so any API replica reports the same numbers; it aggregates in SQL (one
grouped query for the duration histogram) and reads without taking SQLite's write lock.

``ofedrepo serve --workers N`` runs N web server processes: their own metrics then go to files in one
directory (prometheus_client's multiprocess mode) and any of them reports the sum.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import live_workers
from ofedrepo.db import read_only
from ofedrepo.models import ENDED_STATES, Build, BuildState, RepoVersion

#: add-kernel-support runs take minutes to an hour; the buckets span that.
BUILD_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)

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


class DatabaseCollector(Collector):
    """Builds, queue, versions and workers as the database has them when Prometheus scrapes."""

    def __init__(self, sessions: sessionmaker[Session], heartbeat_window: float) -> None:
        self.sessions = sessions
        self.heartbeat_window = heartbeat_window

    def describe(self) -> list[Metric]:
        return []  # collected lazily: registering must not query the database

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            read_only(session)
            by_state = dict(session.execute(select(Build.state, func.count()).group_by(Build.state)).all())
            versions = session.scalar(select(func.count()).select_from(RepoVersion)) or 0
            workers = live_workers(session, self.heartbeat_window)
            histogram = _durations_by_state(session)
        builds = GaugeMetricFamily("ofedrepo_builds", "Builds by state", labels=["state"])
        for state in BuildState:
            builds.add_metric([state.value], by_state.get(state.value, 0))
        yield builds
        yield GaugeMetricFamily(
            "ofedrepo_queue_depth", "Builds waiting for a worker", value=by_state.get(BuildState.QUEUED.value, 0)
        )
        yield GaugeMetricFamily("ofedrepo_published_versions", "Repo versions published", value=versions)
        yield GaugeMetricFamily("ofedrepo_workers", "Workers that heartbeated recently", value=workers)
        durations = HistogramMetricFamily(
            "ofedrepo_build_duration_seconds", "Ended builds, from claim to end, by how they ended", labels=["state"]
        )
        for ended_state in ENDED_STATES:
            count, total, cumulative = histogram.get(ended_state, (0, 0.0, [0] * len(BUILD_BUCKETS)))
            buckets = [(str(bound), below) for bound, below in zip(BUILD_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", count))
            durations.add_metric([ended_state], buckets, sum_value=total)
        yield durations


def _durations_by_state(session: Session) -> dict[str, tuple[int, float, list[int]]]:
    """(count, sum, cumulative bucket counts) of build durations per ended state, aggregated by the database:
    a scrape costs one grouped query however many builds were ever run."""
    if session.get_bind().dialect.name == "sqlite":
        seconds = (func.julianday(Build.finished_at) - func.julianday(Build.started_at)) * 86400.0
    else:
        seconds = func.extract("epoch", Build.finished_at - Build.started_at)
    query = (
        select(
            Build.state,
            func.count(),
            func.coalesce(func.sum(seconds), 0.0),
            *(func.sum(case((seconds <= bound, 1), else_=0)) for bound in BUILD_BUCKETS),
        )
        .where(Build.state.in_(ENDED_STATES), Build.started_at.is_not(None), Build.finished_at.is_not(None))
        .group_by(Build.state)
    )
    return {
        state: (int(count), float(total), [int(value or 0) for value in below])
        for state, count, total, *below in session.execute(query)
    }
