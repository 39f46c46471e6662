"""`ofedrepo gc` and the workers' automatic retention on a real published tree, SQLite and PostgreSQL."""

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo import kept_sources
from ofedrepo.bundles.names import BundleIdentity
from ofedrepo.config import Settings
from ofedrepo.db import transaction
from ofedrepo.models import Build, RepoVersion, utcnow
from ofedrepo.repos import queries
from ofedrepo.repos.publish import Publisher
from ofedrepo.repos.retention import Policy, collect_garbage
from ofedrepo.storage import DataDir
from synthetic.bundle import BundleSpec
from tests.conftest import TARGET_KERNEL, VENV_BIN, variant

DAY = 86400


def publish_four(publisher: Publisher, sessions: sessionmaker[Session], unpacked_ext: Path, tmp_path: Path) -> Path:
    """Versions 1-4, published 4, 3 and 2 hours and 30 minutes ago (as the database records it)."""
    for index in range(4):
        publisher.publish(variant(unpacked_ext, tmp_path, index))
    ages = {1: timedelta(hours=4), 2: timedelta(hours=3), 3: timedelta(hours=2), 4: timedelta(minutes=30)}
    with transaction(sessions) as session:
        for number, age in ages.items():
            session.execute(update(RepoVersion).where(RepoVersion.number == number).values(created_at=utcnow() - age))
    return DataDir(publisher.settings.data_dir).repo_dir(BundleSpec().name, TARGET_KERNEL)


def numbers(repo_dir: Path) -> list[str]:
    return sorted(entry.name for entry in repo_dir.iterdir())


def gc_cli(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "OFEDREPO_DATA_DIR": str(settings.data_dir),
        "OFEDREPO_DATABASE_URL": settings.resolved_database_url,
        "COLUMNS": "250",
    }
    return subprocess.run(
        [str(VENV_BIN / "ofedrepo"), "gc", *arguments], env=environment, capture_output=True, text=True, timeout=120
    )


def test_gc_keeps_latest_and_young_versions(
    tmp_path: Path, publisher: Publisher, sessions: sessionmaker[Session], settings: Settings, unpacked_ext: Path
) -> None:
    repo_dir = publish_four(publisher, sessions, unpacked_ext, tmp_path)
    dry = gc_cli(settings, "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "version 1" in dry.stdout and "version 2" in dry.stdout and "version 3" not in dry.stdout
    assert "would free" in dry.stdout and numbers(repo_dir) == ["1", "2", "3", "4", "latest"]

    done = gc_cli(settings, "--keep", "1")
    assert done.returncode == 0, done.stderr
    assert "freed" in done.stdout
    # 3 stopped being latest 30 minutes ago: inside the default one-hour grace.
    assert numbers(repo_dir) == ["3", "4", "latest"] and os.readlink(repo_dir / "latest") == "4"
    with sessions() as session:
        assert sorted(version.number for version in session.query(RepoVersion)) == [3, 4]
    assert gc_cli(settings, "--older-than", "30d").stdout.startswith("freed 0 B in 0 item(s)")


def test_orphaned_bundle_trees_and_stale_scratch_go(
    tmp_path: Path, publisher: Publisher, sessions: sessionmaker[Session], settings: Settings
) -> None:
    data = DataDir(settings.data_dir).ensure()
    orphan = data.bundles / ("ab" * 32)
    (orphan / "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64").mkdir(parents=True)
    (orphan / "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64" / ".mlnx").write_text("5.8-3.0.7.0\n")
    stale = data.work / "build-7-0123"
    stale.mkdir(parents=True)
    (stale / "output.log").write_bytes(b"x" * 4096)
    fresh = data.work / "build-8-4567"
    fresh.mkdir()
    half_unpacked = data.kernel_sources / ".partial-0123"  # a worker killed while unpacking kernel-devel
    (half_unpacked / "usr" / "src").mkdir(parents=True)
    cached = data.kernel_sources / "4.18.0-372.9.1.el8.x86_64"
    cached.mkdir()
    old = time.time() - 10 * DAY
    for path in (orphan, stale, half_unpacked, cached):
        os.utime(path, (old, old))
    report = collect_garbage(settings, sessions, Policy(keep=5), dry_run=False)
    assert {item.path for item in report.freed} == {orphan, stale, half_unpacked} and report.total >= 4096
    assert not orphan.exists() and not stale.exists() and not half_unpacked.exists()
    assert fresh.exists() and cached.exists()


def kept_tree(data: DataDir, kernel: str, last_used: float) -> Path:
    """Sources kept as a download leaves them: the tree with its Makefile and the record beside it."""
    partial = data.kernel_sources / f".partial-{kernel}"
    (partial / "usr" / "src" / "kernels" / kernel).mkdir(parents=True)
    (partial / "usr" / "src" / "kernels" / kernel / "Makefile").write_bytes(b"x" * 4096)
    kept_sources.record(partial, kernel, f"kernel-devel-{kernel}.rpm", "http://mirror/Packages/", 4096)
    os.rename(partial, data.kernel_sources / kernel)
    os.utime(data.kernel_sources / kernel, (last_used, last_used))
    return data.kernel_sources / kernel


def test_kept_kernel_sources_beyond_the_bound_go_the_least_recently_used_first_never_one_in_use(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    data = DataDir(settings.data_dir).ensure()
    now = time.time()
    kernels = [f"4.18.0-372.{number}.1.el8_6.x86_64" for number in (9, 19, 26, 32)]
    trees = {kernel: kept_tree(data, kernel, now - age * DAY) for age, kernel in enumerate(kernels)}
    listed = kept_sources.list_kept(data)
    assert [kept.kernel for kept in listed] == kernels  # the most recently used first
    assert listed[0].package == f"kernel-devel-{kernels[0]}.rpm" and listed[0].size == 4096
    bounded = settings.model_copy(update={"kernel_sources_keep": 2})
    with kept_sources.in_use(data, kernels[3]) as held:  # a build is reading the oldest
        assert held == trees[kernels[3]] / "usr" / "src" / "kernels" / kernels[3]
        assert kept_sources.list_kept(data)[0].kernel == kernels[3]  # its use is recorded
        os.utime(trees[kernels[3]], (now - 9 * DAY, now - 9 * DAY))  # as if another build had used it long ago
        report = collect_garbage(bounded, sessions, None, dry_run=False)
        assert {item.path for item in report.freed} == {trees[kernels[2]]}
        assert trees[kernels[3]].exists() and not trees[kernels[2]].exists()
    report = collect_garbage(bounded, sessions, None, dry_run=False)  # no longer held: it goes
    assert {item.path for item in report.freed} == {trees[kernels[3]]}
    assert [kept.kernel for kept in kept_sources.list_kept(data)] == kernels[:2]


def test_gc_without_a_policy_says_what_it_needs(settings: Settings) -> None:
    refused = gc_cli(settings)
    assert refused.returncode != 0 and "--keep N and/or --older-than" in refused.stderr
    assert "is not an age" in gc_cli(settings, "--older-than", "soon").stderr


def test_workers_apply_the_configured_policy(
    tmp_path: Path, publisher: Publisher, sessions: sessionmaker[Session], settings: Settings, unpacked_ext: Path
) -> None:
    from workers.worker import Worker

    repo_dir = publish_four(publisher, sessions, unpacked_ext, tmp_path)
    automatic = settings.model_copy(update={"gc_keep_versions": 2, "gc_interval": 0.2, "queue_poll_interval": 0.2})
    worker = Worker(automatic)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while numbers(repo_dir) != ["3", "4", "latest"] and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.stop()
    assert numbers(repo_dir) == ["3", "4", "latest"]


def test_logs_of_builds_that_ended_long_ago_go_with_retention_and_others_stay(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Nothing removed build logs before: every build's log stayed for ever (one build wrote 300 MB)."""
    data = DataDir(settings.data_dir).ensure()
    now = utcnow()
    with transaction(sessions) as session:
        repo = queries.get_or_create_repo(session, BundleIdentity("5.8-3.0.7.0", "rhel8.6", "x86_64"), TARGET_KERNEL)
        ended = {
            "old": Build(repo_id=repo.id, kernel=TARGET_KERNEL, fingerprint="a", state="failed",
                         finished_at=now - timedelta(days=100)),
            "recent": Build(repo_id=repo.id, kernel=TARGET_KERNEL, fingerprint="b", state="succeeded",
                            finished_at=now - timedelta(days=1)),
            "running": Build(repo_id=repo.id, kernel=TARGET_KERNEL, fingerprint="c", state="running"),
        }  # fmt: skip
        session.add_all(ended.values())
        session.flush()
        ids = {name: build.id for name, build in ended.items()}
    for build_id in [*ids.values(), 9999]:
        data.build_log(build_id).write_text("log\n")
    old = time.time() - 100 * DAY
    os.utime(data.build_log(9999), (old, old))  # a log no build names any more
    report = collect_garbage(settings, sessions, None, dry_run=False)  # no version policy: housekeeping alone
    assert {item.path for item in report.freed} == {data.build_log(ids["old"]), data.build_log(9999)}
    assert data.build_log(ids["recent"]).exists() and data.build_log(ids["running"]).exists()
