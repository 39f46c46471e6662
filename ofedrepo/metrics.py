"""Prometheus metrics, all named ``ofedrepo_*``.

Two kinds. What a process times itself (appliance launches, publishes, HTTP requests) lives in that
process's default registry: ``ofedrepo serve`` shows its own and its embedded worker's at ``/metrics``, and
``ofedrepo worker --metrics-port N`` shows a standalone worker's. What the whole deployment knows (builds by
state, queue depth, build durations, published versions, live workers) is read from the database at scrape
time by ``DatabaseCollector``, so any API replica reports the same numbers.
"""

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import live_workers
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
            by_state = dict(session.execute(select(Build.state, func.count()).group_by(Build.state)).tuples().all())
            versions = session.scalar(select(func.count()).select_from(RepoVersion)) or 0
            workers = live_workers(session, self.heartbeat_window)
            ended: list[tuple[str, float]] = [
                (kind, (finished - started).total_seconds())
                for kind, started, finished in session.execute(
                    select(Build.state, Build.started_at, Build.finished_at)
                ).tuples()
                if started is not None and finished is not None
            ]
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
            seconds = [duration for kind, duration in ended if kind == ended_state]
            buckets = [(str(bound), sum(1 for value in seconds if value <= bound)) for bound in BUILD_BUCKETS]
            buckets.append(("+Inf", len(seconds)))
            durations.add_metric([ended_state], buckets, sum_value=sum(seconds))
        yield durations
