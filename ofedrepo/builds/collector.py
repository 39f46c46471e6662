"""What the whole deployment knows, read from the database when Prometheus scrapes ``/metrics``: builds by
state, queue depth, build durations, published versions, live workers. Any API replica reports the same
numbers; durations are aggregated in SQL (one grouped query, however many builds were ever run), and the
read takes no SQLite write lock."""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds.requests import live_workers
from ofedrepo.db import read_only
from ofedrepo.models import ENDED_STATES, Build, BuildState, RepoVersion

#: add-kernel-support runs take minutes to an hour; the buckets span that.
BUILD_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


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
