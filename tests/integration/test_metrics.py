"""The deployment's metrics, aggregated by the database itself, on SQLite and PostgreSQL."""

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds.collector import DatabaseCollector
from ofedrepo.bundles.names import BundleIdentity
from ofedrepo.db import transaction
from ofedrepo.models import Build, utcnow
from ofedrepo.repos import queries


def test_build_durations_are_bucketed_in_sql(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    with transaction(sessions) as session:
        repo = queries.get_or_create_repo(
            session, BundleIdentity("5.8-3.0.7.0", "rhel8.6", "x86_64"), "4.18.0-1.el8.x86_64"
        )
        for index, (state, seconds) in enumerate(
            [("succeeded", 3), ("succeeded", 70), ("failed", 4000), ("succeeded", 20000)]
        ):
            session.add(Build(repo_id=repo.id, kernel="4.18.0-1.el8.x86_64", fingerprint=f"f{index}", state=state,
                              started_at=now - timedelta(seconds=seconds), finished_at=now))  # fmt: skip
        session.add(Build(repo_id=repo.id, kernel="4.18.0-1.el8.x86_64", fingerprint="queued"))
    families = {family.name: family for family in DatabaseCollector(sessions, 60).collect()}
    samples = {
        (sample.name, sample.labels.get("state"), sample.labels.get("le")): sample.value
        for sample in families["ofedrepo_build_duration_seconds"].samples
    }
    assert samples[("ofedrepo_build_duration_seconds_count", "succeeded", None)] == 3
    assert samples[("ofedrepo_build_duration_seconds_bucket", "succeeded", "5.0")] == 1
    assert samples[("ofedrepo_build_duration_seconds_bucket", "succeeded", "120.0")] == 2
    assert samples[("ofedrepo_build_duration_seconds_bucket", "succeeded", "7200.0")] == 2
    assert samples[("ofedrepo_build_duration_seconds_bucket", "succeeded", "+Inf")] == 3
    assert abs(samples[("ofedrepo_build_duration_seconds_sum", "succeeded", None)] - 20073) < 1
    assert samples[("ofedrepo_build_duration_seconds_bucket", "failed", "3600.0")] == 0
    assert samples[("ofedrepo_build_duration_seconds_count", "cancelled", None)] == 0
    assert families["ofedrepo_queue_depth"].samples[0].value == 1
