"""What the whole deployment knows, read from the database when Prometheus scrapes ``/metrics``: builds by
state, queue depth, build durations, published versions, live workers, kernel feeds. Any API replica reports the same
numbers; durations are aggregated in SQL (one grouped query, however many builds were ever run), and the
read takes no SQLite write lock."""

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds.requests import live_workers
from ofedrepo.db import read_only
from ofedrepo.models import ENDED_STATES, Build, BuildState, KernelFeed, RepoVersion

#: url, kernels, builds queued, polled at, changed at, error.
FeedRow = tuple[str, list[str], int, datetime | None, datetime | None, str | None]
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
            workers = len(live_workers(session, self.heartbeat_window))
            histogram = _durations_by_state(session)
            feeds: list[FeedRow] = [
                (url, kernels, queued, polled, changed, error)
                for url, kernels, queued, polled, changed, error in session.execute(
                    select(KernelFeed.url, KernelFeed.kernels, KernelFeed.builds_queued, KernelFeed.polled_at,
                           KernelFeed.changed_at, KernelFeed.error)
                )
            ]  # fmt: skip
        builds = GaugeMetricFamily("ofedrepo_builds", "Builds by state", labels=["state"])
        for state in BuildState:
            builds.add_metric([state.value], by_state.get(state, 0))
        yield builds
        yield GaugeMetricFamily(
            "ofedrepo_queue_depth", "Builds waiting for a worker", value=by_state.get(BuildState.QUEUED, 0)
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
        yield from _feed_metrics(feeds)


def _feed_metrics(feeds: list[FeedRow]) -> Iterator[Metric]:
    """Per kernel feed (labelled by its configured URL, a closed set): what it found, when, what it queued."""
    kernels = GaugeMetricFamily("ofedrepo_kernel_feed_kernels", "Kernels the feed's last poll found", labels=["feed"])
    queued = CounterMetricFamily(
        "ofedrepo_kernel_feed_builds_queued", "Builds the feed queued before anyone asked", labels=["feed"]
    )
    polled = GaugeMetricFamily(
        "ofedrepo_kernel_feed_polled_timestamp_seconds", "When the feed was last reached", labels=["feed"]
    )
    changed = GaugeMetricFamily(
        "ofedrepo_kernel_feed_changed_timestamp_seconds", "When the feed last had new metadata", labels=["feed"]
    )
    failing = GaugeMetricFamily("ofedrepo_kernel_feed_failing", "1 when the feed's last poll failed", labels=["feed"])
    for url, found, builds, polled_at, changed_at, error in feeds:
        kernels.add_metric([url], len(found or []))
        queued.add_metric([url], builds)
        polled.add_metric([url], polled_at.timestamp() if polled_at else 0)
        changed.add_metric([url], changed_at.timestamp() if changed_at else 0)
        failing.add_metric([url], 1 if error else 0)
    yield from (kernels, queued, polled, changed, failing)


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
