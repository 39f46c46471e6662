"""Retention: which published versions, bundle trees and scratch directories may go, and removing them.

Two rules are absolute. The version ``latest`` points to stays. A version that stopped being the latest
less than the grace period ago stays too: a client that resolved ``latest`` to it a moment before may still
be downloading from it (``OFEDREPO_GC_GRACE_SECONDS``). Within those rules a policy keeps the newest
``keep`` versions of each repo and/or everything younger than ``older_than``.

Downloaded kernel sources are kept up to ``OFEDREPO_KERNEL_SOURCES_KEEP`` kernels (``ofedrepo.kept_sources``).

``plan_versions`` is pure; ``collect_garbage`` looks at the database and the data dir and, unless it is a
dry run, removes what the plan names: a version's row and directory together, under the repo's publish lock
(the directory is renamed away first, so a reader never sees half a version).
"""

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo import kept_sources
from ofedrepo.config import Settings
from ofedrepo.db import transaction
from ofedrepo.errors import InvalidInput
from ofedrepo.models import Build, Bundle, Repo, RepoVersion, utcnow
from ofedrepo.storage import DataDir, disk_usage, exclusive_lock, fsync_directory, latest_number, remove_tree

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``30d``, ``2w`` (a bare number is days)."""
    value = text.strip().lower()
    unit = value[-1] if value and value[-1] in _UNITS else "d"
    number = value[:-1] if value and value[-1] in _UNITS else value
    if not number.isdigit() or len(number) > 6:
        raise InvalidInput(f"{text!r} is not an age: use a number with s, m, h, d or w (e.g. 30d)")
    return timedelta(seconds=int(number) * _UNITS[unit])


@dataclass(frozen=True)
class Policy:
    keep: int | None = None
    """Keep the newest this many versions of each repo."""
    older_than: timedelta | None = None
    """Remove only versions older than this."""
    grace: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.keep is None and self.older_than is None:
            raise InvalidInput("say what to remove: --keep N and/or --older-than AGE")
        if self.keep is not None and self.keep < 1:
            raise InvalidInput("--keep must be at least 1")


def policy_from(settings: Settings, keep: int | None = None, older_than: str | None = None) -> Policy:
    """The command line's policy, completed from the settings."""
    keep = keep if keep is not None else settings.gc_keep_versions
    age_text = older_than if older_than is not None else settings.gc_older_than
    return Policy(
        keep=keep,
        older_than=parse_age(age_text) if age_text else None,
        grace=timedelta(seconds=settings.gc_grace_seconds),
    )


def automatic_policy(settings: Settings) -> Policy | None:
    """The policy workers apply on their own, None when none is configured."""
    if settings.gc_keep_versions is None and not settings.gc_older_than:
        return None
    return policy_from(settings)


@dataclass(frozen=True)
class VersionFacts:
    number: int
    created_at: datetime


def plan_versions(versions: Sequence[VersionFacts], latest: int | None, policy: Policy, now: datetime) -> list[int]:
    """The numbers of one repo's versions that ``policy`` removes, ascending."""
    ordered = sorted(versions, key=lambda version: version.number)
    kept_by_count = {version.number for version in ordered[-policy.keep :]} if policy.keep else set()
    removable = []
    for index, version in enumerate(ordered):
        if version.number == latest or version.number in kept_by_count:
            continue
        if policy.older_than is not None and now - version.created_at < policy.older_than:
            continue
        # It stopped being the latest when the next one was published: that moment must be past the grace.
        successor = ordered[index + 1] if index + 1 < len(ordered) else None
        if successor is None or now - successor.created_at < policy.grace:
            continue
        removable.append(version.number)
    return removable


@dataclass(frozen=True)
class Freed:
    what: str
    path: Path
    size: int


@dataclass
class Report:
    freed: list[Freed] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(item.size for item in self.freed)


def collect_garbage(
    settings: Settings, sessions: sessionmaker[Session], policy: Policy | None, dry_run: bool
) -> Report:
    """Apply ``policy`` (if any) to every repo, then drop orphaned bundle trees, stale scratch and old build logs;
    say what went."""
    data = DataDir(settings.data_dir)
    report = Report()
    now = utcnow()
    if policy is not None:
        _apply_policy(data, sessions, policy, now, report, dry_run)
    for orphan in _orphaned_bundle_trees(data, sessions, now - timedelta(seconds=settings.gc_grace_seconds)):
        report.freed.append(Freed("unreferenced bundle tree", orphan, disk_usage(orphan)))
        if not dry_run:
            _remove_tree(data, orphan)
    leftovers = [("stale scratch", path) for path in data.stale_scratch(settings.scratch_lifetime)]
    leftovers += [("failed build kept for debugging", path) for path in data.expired_failed_builds(
        settings.build_keep_failed_seconds)]  # fmt: skip
    leftovers += [("build log", path) for path in _expired_build_logs(data, sessions, settings.build_log_keep_seconds)]
    for what, leftover in leftovers:
        report.freed.append(Freed(what, leftover, disk_usage(leftover)))
        if not dry_run:
            _remove_tree(data, leftover)
    for kept in kept_sources.beyond(data, settings.kernel_sources_keep):
        freed = Freed(f"kernel sources of {kept.kernel}", data.kernel_sources / kept.kernel, kept.size)
        if dry_run or kept_sources.remove(data, kept.kernel, partial(_remove_tree, data)):
            report.freed.append(freed)
    return report


def _apply_policy(
    data: DataDir, sessions: sessionmaker[Session], policy: Policy, now: datetime, report: Report, dry_run: bool
) -> None:
    with sessions() as session:
        repos = [(repo.id, repo.bundle_name, repo.kernel) for repo in session.scalars(select(Repo))]
    for repo_id, bundle_name, kernel in repos:
        repo_dir = data.repo_dir(bundle_name, kernel)
        with exclusive_lock(data.repo_lock(bundle_name, kernel)):
            with sessions() as session:
                versions = [
                    VersionFacts(version.number, version.created_at)
                    for version in session.scalars(select(RepoVersion).where(RepoVersion.repo_id == repo_id))
                ]
            for number in plan_versions(versions, latest_number(repo_dir), policy, now):
                report.freed.append(Freed(f"{bundle_name} {kernel} version {number}", repo_dir / str(number),
                                          disk_usage(repo_dir / str(number))))  # fmt: skip
                if not dry_run:
                    _remove_version(sessions, data, repo_id, repo_dir, number)


def _remove_version(sessions: sessionmaker[Session], data: DataDir, repo_id: int, repo_dir: Path, number: int) -> None:
    """The row first (the API stops listing it), then the directory, renamed away in one step."""
    with transaction(sessions) as session:
        session.execute(delete(RepoVersion).where(RepoVersion.repo_id == repo_id, RepoVersion.number == number))
    version_dir = repo_dir / str(number)
    if version_dir.exists():
        _remove_tree(data, version_dir)
        fsync_directory(repo_dir)
    log.info("removed %s version %d", repo_dir, number)


def _remove_tree(data: DataDir, path: Path) -> None:
    """Rename into ``staging/`` (atomic: out of the served tree at once), then delete; an interrupted delete
    leaves stale staging, which the next start or gc removes."""
    data.staging.mkdir(parents=True, exist_ok=True)
    hidden = data.new_scratch(data.staging, "removing")
    try:
        os.rename(path, hidden)
    except FileNotFoundError:  # another worker's gc took it first
        return
    remove_tree(hidden)


def _expired_build_logs(data: DataDir, sessions: sessionmaker[Session], keep_seconds: float) -> Iterator[Path]:
    """Logs of builds that ended more than ``keep_seconds`` ago, and old logs no build row names any more: a
    build's log is bounded in size (``OFEDREPO_BUILD_LOG_MAX_BYTES``), their number by this."""
    if not data.build_logs.is_dir():
        return
    before = utcnow() - timedelta(seconds=keep_seconds)
    logs = {int(entry.stem): entry for entry in data.build_logs.iterdir() if entry.stem.isdigit()}
    ids = sorted(logs)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        with sessions() as session:
            found = session.execute(select(Build.id, Build.finished_at).where(Build.id.in_(chunk)))
            rows = {build_id: finished for build_id, finished in found}
        for build_id in chunk:
            if build_id in rows:
                finished = rows[build_id]
                if finished is not None and finished < before:
                    yield logs[build_id]
            elif datetime.fromtimestamp(logs[build_id].lstat().st_mtime, tz=before.tzinfo) < before:
                yield logs[build_id]


def _orphaned_bundle_trees(data: DataDir, sessions: sessionmaker[Session], before: datetime) -> Iterator[Path]:
    """``bundles/<sha256>`` directories no bundle row names (a crashed or abandoned add)."""
    if not data.bundles.is_dir():
        return
    with sessions() as session:
        known = set(session.scalars(select(Bundle.sha256)))
    for entry in data.bundles.iterdir():
        if entry.name in known or entry.name.startswith("."):
            continue
        if datetime.fromtimestamp(entry.lstat().st_mtime, tz=before.tzinfo) < before:
            yield entry
