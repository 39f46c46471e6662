"""Kernel feeds: yum repositories where new kernels appear, so that builds start before anyone asks.

Workers poll each feed of ``OFEDREPO_KERNEL_FEEDS`` every ``kernel_feed_interval`` seconds; of several
workers exactly one polls a feed per interval (the poll is claimed by a conditional UPDATE of its
``next_poll_at``). A poll is a conditional GET of ``repodata/repomd.xml`` (its ETag; its Last-Modified only
when that is at least two seconds older than the answer's Date, since a file changed within the second it
was served may change again unseen), and a repomd.xml naming the same primary metadata (checksum) is no
change either. When the metadata changed, the primary metadata is downloaded (checksum-verified, capped as
downloaded and again as decompressed: a few KB of gzip can claim gigabytes), parsed with createrepo_c, and
its ``kernel-devel`` releases, each validated by the kernel grammar and bounded to the newest
``kernel_feed_keep`` of each minor release, are requested for every registered bundle they fit (distro tag,
arch) at ``Priority.FEED``: a person's request is always claimed first, lifts a feed's queued build when it
asks for the same one, and preempts a running one when no slot is free (``ofedrepo.builds.lifecycle``). A kernel already
built or building costs nothing (the request is answered as any other would be).

Feeds are isolated from each other. A poll (repomd.xml, primary metadata, parsing) ends by
``kernel_feed_poll_timeout`` however slowly the mirror answers; redirects stay on the feed's own scheme, host
and port (or ``mirror_redirect_hosts``); whatever a hostile or broken feed makes its reading raise (not
metadata, wrong checksums, metadata past the caps, a mirror that is down, slow or malformed) is refused
with a stable reason kept in the feed's ``error`` (``mirrors`` lists them; the details are in the log), and
the next feed of the round is polled all the same. Only a database that cannot be reached stops the round.
The sources of the kernels within the bound are downloaded and kept as soon as a poll finds them
(``ofedrepo.kept_sources``): the mirror may drop them before a build asks.
What a feed sends is stored only when its column holds it whole: an ETag or Last-Modified longer than its
column is not kept as a validator (the feed is then read unconditionally), and kernel strings pass the
grammar (at most 128 characters) first. Kernel strings that fail the grammar are skipped one by one.
"""

import email.utils
import logging
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo import kept_sources
from ofedrepo.builds import mirrors, requests
from ofedrepo.builds.kernel_sources import KernelSources
from ofedrepo.config import Settings
from ofedrepo.db import read_only, transaction, unreachable_database
from ofedrepo.distro import ofed_distro_for_kernel
from ofedrepo.errors import BuildFailed, InvalidKernelRelease, OfedrepoError
from ofedrepo.kernel import FLAVOR_PACKAGES, UEK_64K_PACKAGE, KernelRelease, parse_kernel_release
from ofedrepo.models import Build, BuildState, Bundle, KernelFeed, Priority, utcnow
from ofedrepo.storage import DataDir

log = logging.getLogger(__name__)

#: The packages whose presence in a feed means "a kernel you can build for": they carry its sources. Debug
#: kernels (``kernel-debug-devel`` and kin) are left out: no overcloud image boots one, and in rpm order they
#: would take the places of the kernels that are booted (a request may still ask for one).
DEVEL_PACKAGES = frozenset(
    {
        "kernel-devel",
        "kernel-uek-devel",
        f"{UEK_64K_PACKAGE}-devel",
        *(f"{FLAVOR_PACKAGES[name]}-devel" for name in ("rt", "64k")),
    }
)
GIVEN_UP_STATES = (BuildState.FAILED, BuildState.CANCELLED)

#: A feed's error when its reading failed in a way ``mirrors`` has no kind for (a bug, the local disk).
UNREADABLE = "the feed could not be read (the worker's log says why)"
#: A feed's error when the database refused a value that came from it.
DATABASE_REFUSED = "the database refused what the feed sent (the worker's log says why)"
#: Longest error text kept: the kinds are short, this only bounds what a future one could add.
MAX_ERROR = 1000
#: A validator is sent back in a request header: printable ASCII only (no folded lines, no control bytes).
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")


def _length(column: str) -> int:
    kind = KernelFeed.__table__.c[column].type
    assert isinstance(kind, String) and kind.length is not None
    return kind.length


#: What the feed's row can hold (``models.KernelFeed``): a value from a feed is never stored past it.
MAX_ETAG, MAX_LAST_MODIFIED, MAX_CHECKSUM = _length("etag"), _length("last_modified"), _length("primary_checksum")


@dataclass(frozen=True)
class Snapshot:
    """What one read of a feed found: nothing new (``changed`` false), or its kernels."""

    changed: bool
    etag: str | None = None
    last_modified: str | None = None
    primary_checksum: str | None = None
    kernels: list[str] = field(default_factory=list)
    """Releases of the ``kernel-devel`` packages it holds, as found (not yet validated)."""


@dataclass
class PollReport:
    """One poll of one feed, for the log, the metrics and the tests."""

    url: str
    changed: bool = False
    kernels: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Kernel strings the grammar refused, each with the reason."""
    queued: list[int] = field(default_factory=list)
    """Builds queued by this poll."""
    error: str | None = None
    new_kernels: list[str] = field(default_factory=list)
    """Kernels this poll found anew, whose sources are kept once every due feed has been polled."""


#: Kernels one feed offers at most, the newest kept: a feed naming a thousand minor releases would otherwise be
#: stored whole and queue as many builds (a distro has a few dozen minor releases in all).
MAX_FEED_KERNELS = 200
#: Refused strings told (logged) per poll; the rest are counted.
MAX_REFUSALS_TOLD = 20


def newest_per_minor(releases: Iterable[str], keep: int) -> tuple[list[KernelRelease], list[str]]:
    """The newest ``keep`` kernels of each (minor release, arch, kernel line: ``KernelRelease.line``), oldest
    first, and the refused strings with their reason (not a kernel release, or no RHEL minor release to fit a
    bundle to). Pure."""
    groups: dict[tuple[str, str | None, tuple[str, str | None, bool]], set[KernelRelease]] = defaultdict(set)
    refused = []
    for text in releases:
        try:
            kernel = parse_kernel_release(text)
        except InvalidKernelRelease as error:
            refused.append(f"{text[:200]!r}: {error}")
            continue
        distro = ofed_distro_for_kernel(kernel)
        if distro is None:
            refused.append(f"{text}: no RHEL minor release can be told from it")
            continue
        groups[(distro.tag, kernel.arch, kernel.line)].add(kernel)
    chosen = sorted(kernel for group in groups.values() for kernel in sorted(group)[-keep:])
    if len(chosen) > MAX_FEED_KERNELS:
        refused.append(f"{len(chosen) - MAX_FEED_KERNELS} older kernels: a feed offers {MAX_FEED_KERNELS} at most")
        chosen = chosen[-MAX_FEED_KERNELS:]
    if len(refused) > MAX_REFUSALS_TOLD:
        refused = [*refused[:MAX_REFUSALS_TOLD], f"and {len(refused) - MAX_REFUSALS_TOLD} more"]
    return chosen, refused


@dataclass(frozen=True)
class Validators:
    """What tells that a feed's metadata did not change since the last good poll."""

    etag: str | None = None
    last_modified: str | None = None
    primary_checksum: str | None = None


def kept(value: str | None, max_length: int) -> str | None:
    """``value`` when a column of ``max_length`` holds it whole and a request header can carry it back, else
    None: a cut validator would never match again, so a value too long for its column is not kept. Pure."""
    if value is None or len(value) > max_length or not _HEADER_VALUE.fullmatch(value):
        return None
    return value


def strong_last_modified(last_modified: str | None, date: str | None) -> str | None:
    """``last_modified`` when it can tell changes apart: a file changed in the second it was served may change
    again within that second unseen (RFC 9110 8.8.2.2: such a date is weak), so it is not kept. Pure."""
    if not last_modified:
        return None
    try:
        modified = email.utils.parsedate_to_datetime(last_modified)
        served = email.utils.parsedate_to_datetime(date) if date else datetime.now(UTC)
    except (TypeError, ValueError):
        return None
    if modified.tzinfo is None or served.tzinfo is None:
        return None
    return last_modified if (served - modified).total_seconds() >= 2 else None


def read_feed(
    url: str, known: Validators, max_bytes: int, scratch: Path, reach: mirrors.Reach | None = None
) -> Snapshot:
    """Read a feed's kernels, or learn that its metadata did not change since ``known``: a 304 to a conditional
    GET of repomd.xml, or a repomd.xml naming the same primary metadata. Every value in the snapshot fits its
    column; ``reach`` bounds the whole read (its deadline) and where redirects may lead."""
    reach = reach or mirrors.Reach()
    base = mirrors.base_url(url)
    headers = {}
    if known.etag:
        headers["If-None-Match"] = known.etag
    if known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    repomd = mirrors.read_repomd(base, scratch, headers, reach)
    if repomd is None:
        return Snapshot(False, known.etag, known.last_modified, known.primary_checksum)
    etag = kept(repomd.headers.get("ETag"), MAX_ETAG)
    modified = kept(
        strong_last_modified(repomd.headers.get("Last-Modified"), repomd.headers.get("Date")), MAX_LAST_MODIFIED
    )
    checksum = kept(repomd.primary.checksum, MAX_CHECKSUM)  # mirrors checked it is a digest: 128 at most
    if known.primary_checksum and checksum == known.primary_checksum:
        return Snapshot(False, etag, modified, checksum)
    packages = mirrors.read_packages(base, repomd.primary, scratch, max_bytes, DEVEL_PACKAGES, reach)
    kernels = [mirrors.kernel_release(package) for package in packages]
    return Snapshot(True, etag, modified, checksum, kernels)


#: How the sources a feed offers anew are kept: ``keep_sources`` itself, or a caller's way of running it (the
#: worker runs it in a process of its own).
KeepSources = Callable[[Settings, str, list[str]], None]


def poll_due_feeds(
    sessions: sessionmaker[Session], settings: Settings, work: Path, keep: "KeepSources | None" = None
) -> list[PollReport]:
    """Poll every configured feed whose turn it is (and that no other worker claimed); queue what they bring;
    then ``keep`` (``keep_sources`` by default) the sources of the kernels they offer anew.

    A feed that fails, however, fails alone: its error is recorded and the next feed is polled. Only a
    database that cannot be reached (which no other feed could use either) ends the round early."""
    reports = []
    for source in settings.kernel_feeds:
        url = source.url
        feed_id = None
        try:
            feed_id = _claim(sessions, url, settings.kernel_feed_interval)
            if feed_id is not None:
                reports.append(poll(sessions, settings, feed_id, url, work))
        except Exception as error:
            if unreachable_database(error):
                raise
            reports.append(_failed(sessions, feed_id, url, error))
    # Downloads (tens of MB, each from a mirror that may be slow) come after every feed was read: a slow one
    # never keeps the other feeds from their poll.
    for report in reports:
        if report.new_kernels:
            (keep or keep_sources)(settings, report.url, report.new_kernels)
    return reports


def _failed(sessions: sessionmaker[Session], feed_id: int | None, url: str, error: Exception) -> PollReport:
    """What is left to do when a poll raised past ``poll``'s own handling: log it, and keep a stable reason."""
    report = PollReport(url, error=DATABASE_REFUSED if isinstance(error, DBAPIError) else UNREADABLE)
    log.error("kernel feed %s: polling failed", url, exc_info=error)
    if feed_id is not None:
        try:
            _record(sessions, feed_id, report, None)
        except Exception as again:
            if unreachable_database(again):
                raise
            log.error("kernel feed %s: its error could not be recorded", url, exc_info=again)
    return report


def _claim(sessions: sessionmaker[Session], url: str, interval: float) -> int | None:
    """The feed's id when this caller is the one to poll it now (its row made on first sight)."""
    now = utcnow()
    with transaction(sessions) as session:
        feed_id = session.scalar(select(KernelFeed.id).where(KernelFeed.url == url))
        if feed_id is None:
            try:
                with session.begin_nested():
                    feed = KernelFeed(url=url)
                    session.add(feed)
                feed_id = feed.id
            except IntegrityError:  # another worker saw it first
                feed_id = session.scalar(select(KernelFeed.id).where(KernelFeed.url == url))
        claimed = session.execute(
            update(KernelFeed)
            .where(KernelFeed.id == feed_id, or_(KernelFeed.next_poll_at.is_(None), KernelFeed.next_poll_at <= now))
            .values(next_poll_at=now + timedelta(seconds=interval))
            .execution_options(synchronize_session=False)
        )
        return feed_id if claimed.rowcount else None  # type: ignore[attr-defined]


def poll(sessions: sessionmaker[Session], settings: Settings, feed_id: int, url: str, work: Path) -> PollReport:
    """Read one feed and queue builds for its kernels; the outcome is recorded in its row. Whatever its reading
    raises is recorded as its error; only the database's own errors reach the caller (``poll_due_feeds``).

    Unchanged metadata (a 304) still has its kernels, those of the last good poll, requested again: a bundle
    registered since then gets its builds too, and what is built or building costs one read-only look.
    """
    report = PollReport(url)
    with sessions() as session:
        feed = session.get(KernelFeed, feed_id)
        validators = Validators(feed.etag, feed.last_modified, feed.primary_checksum) if feed else Validators()
        known = list(feed.kernels) if feed else []
    deadline = mirrors.Deadline(settings.kernel_feed_poll_timeout)  # the whole read, parsing included
    try:
        reach = mirrors.Reach(deadline, settings.redirect_hosts)
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="kernel-feed-", dir=work) as scratch:
            snapshot = read_feed(url, validators, settings.kernel_feed_max_metadata, Path(scratch), reach)
    except Exception as error:  # whatever a hostile feed makes its reading raise, it fails alone
        report.error = _refusal(url, error)
        _record(sessions, feed_id, report, None)
        return report
    report.changed = snapshot.changed
    chosen, report.refused = newest_per_minor(
        snapshot.kernels if snapshot.changed else known, settings.kernel_feed_keep
    )
    report.kernels = [kernel.text for kernel in chosen]
    for reason in report.refused:
        log.warning("kernel feed %s: ignoring %s", url, reason)
    report.queued = _queue(sessions, settings, feed_id, chosen)
    if report.changed or report.queued:
        log.info(
            "kernel feed %s: %d kernel(s) within the bound, %d build(s) queued", url, len(chosen), len(report.queued)
        )
    _record(sessions, feed_id, report, snapshot)
    # The sources of the kernels the feed offers anew, and of those whose download failed before (the mirror
    # down for a poll): tried again at each poll, before the mirror drops the package.
    data = DataDir(settings.data_dir)
    report.new_kernels = [
        kernel
        for kernel in report.kernels
        if (report.changed and kernel not in known) or kept_sources.wanted(data, kernel)
    ]
    return report


def keep_sources(settings: Settings, url: str, kernels: list[str]) -> None:
    """Download the sources of the kernels a feed offers as soon as it offers them: a mirror that keeps only the
    newest kernel of a minor release drops the others' ``kernel-devel`` (``ofedrepo.kept_sources``)."""
    data = DataDir(settings.data_dir)
    sources = KernelSources(settings, data, lambda line: None)
    for kernel in kernels[: settings.kernel_sources_keep]:
        if kept_sources.is_complete(data, kernel) or (settings.kernel_sources_root / kernel / "Makefile").is_file():
            continue
        try:
            sources.keep(kernel)
        except BuildFailed as error:
            kept_sources.want(data, kernel)
            log.warning("kernel feed %s: the sources of %s could not be kept (tried again at the next poll): %s",
                        url, kernel, error)  # fmt: skip
        else:
            kept_sources.got(data, kernel)
            log.info("kernel feed %s: kept the sources of %s", url, kernel)


def _refusal(url: str, error: Exception) -> str:
    """The stable reason a feed's reading failed, logged with its details."""
    if isinstance(error, mirrors.MirrorRefused):
        log.warning("kernel feed %s refused: %s (%r)", url, error.kind, error.detail)
        return error.kind
    log.error("kernel feed %s: reading it failed", url, exc_info=error)  # a bug or the local disk: the trace says
    return UNREADABLE


def queue_known_kernels(sessions: sessionmaker[Session], settings: Settings, bundle_id: int) -> list[int]:
    """Queue a newly registered bundle's builds for the kernels its feeds already found, at once rather than at
    their next poll (minutes away, or an unchanged 304 that would only then queue them); the new builds."""
    with sessions() as session:
        read_only(session)
        known = [(feed.id, list(feed.kernels)) for feed in session.scalars(select(KernelFeed).order_by(KernelFeed.id))]
    queued = []
    for feed_id, texts in known:
        kernels = []
        for text in texts:
            try:
                kernels.append(parse_kernel_release(text))
            except InvalidKernelRelease:  # stored by an older grammar: the next poll judges it again
                continue
        queued += _queue(sessions, settings, feed_id, kernels, bundle_id)
    if queued:
        log.info("bundle %d: %d build(s) queued for kernels its feeds already found", bundle_id, len(queued))
    return queued


def _queue(
    sessions: sessionmaker[Session],
    settings: Settings,
    feed_id: int,
    kernels: list[KernelRelease],
    bundle_id: int | None = None,
) -> list[int]:
    """Request each kernel for each bundle it fits (``bundle_id``'s alone when given), at the feed's priority;
    the builds that were new, counted as the feed's (``builds_queued``), whether a poll or a bundle's
    registration queued them.

    A kernel whose feed build failed or was cancelled is not queued again by the feed (a person may ask)."""
    with sessions() as session:
        read_only(session)
        chosen = select(Bundle) if bundle_id is None else select(Bundle).where(Bundle.id == bundle_id)
        bundles = list(session.scalars(chosen))
        given_up = {
            (bundle_id, kernel)
            for bundle_id, kernel in session.execute(
                select(Build.bundle_id, Build.kernel).where(
                    Build.feed_id.is_not(None), Build.state.in_(GIVEN_UP_STATES)
                )
            )
        }
    queued = []
    for kernel in kernels:
        distro = ofed_distro_for_kernel(kernel)
        for bundle in bundles:
            if distro is None or not requests.fits_distro(bundle, distro.tag) or bundle.arch != kernel.arch:
                continue
            if (bundle.id, kernel.text) in given_up:
                continue
            request = requests.RepoRequest(
                kernel=kernel.text, bundle_id=bundle.id, priority=Priority.FEED, feed_id=feed_id
            )
            try:
                with sessions() as session:
                    if requests.answer_without_writing(read_only(session), settings, request) is not None:
                        continue  # built, or under way: nothing to write
                with sessions() as session:
                    outcome = requests.request_repo(session, settings, request)
            except OfedrepoError as error:
                log.warning("kernel feed: %s for bundle %d not queued: %s", kernel, bundle.id, error)
                continue
            if outcome.queued and outcome.build_id is not None:
                queued.append(outcome.build_id)
    if queued:
        with transaction(sessions) as session:
            session.execute(
                update(KernelFeed)
                .where(KernelFeed.id == feed_id)
                .values(builds_queued=KernelFeed.builds_queued + len(queued))
            )
    return queued


def _record(sessions: sessionmaker[Session], feed_id: int, report: PollReport, snapshot: Snapshot | None) -> None:
    now = utcnow()
    values: dict[str, Any] = {"error": report.error[:MAX_ERROR] if report.error else None}
    if snapshot is not None:
        values |= {
            "polled_at": now,
            "etag": snapshot.etag,
            "last_modified": snapshot.last_modified,
            "primary_checksum": snapshot.primary_checksum,
        }
    if report.changed:
        values |= {"changed_at": now, "kernels": report.kernels}
    with transaction(sessions) as session:
        session.execute(
            update(KernelFeed)
            .where(KernelFeed.id == feed_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def list_feeds(session: Session) -> list[KernelFeed]:
    return list(session.scalars(select(KernelFeed).order_by(KernelFeed.id)))
