"""Kernel feeds isolated from each other (issue 18, "trust boundary"): a hostile feed fails alone, within the
poll's deadline, with one stable reason per kind of failure in its ``error``; mirrors' redirects stay on the
configured host. Real HTTP servers on loopback: the directory mirror of ``tests.support.kernel_feed`` and,
for what a static server does not do (trickle, redirect, fail), small scripted ones here."""

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.builds import feeds, mirrors
from ofedrepo.config import MirrorSource, Settings, host_ports
from ofedrepo.models import Build
from tests.conftest import free_port
from tests.integration.test_feeds import add_bundle, feed_row
from tests.support.kernel_feed import primary_xml, serve, write_metadata

KERNEL = ("4.18.0", "372.26.1.el8_6", "x86_64")
#: The tests that need no second database run on SQLite only (the feed's failure is the same on both).
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

Answer = Callable[[BaseHTTPRequestHandler], None]


class _Quiet(BaseHTTPRequestHandler):
    def answer(self) -> None:
        raise NotImplementedError  # each scripted server gives its own

    def do_GET(self) -> None:
        self.answer()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a trickle is what the test wants, not a traceback


@contextmanager
def scripted(answer: Answer) -> Iterator[str]:
    """A loopback HTTP server answering every GET with ``answer(handler)``; yields its URL."""
    handler = type("Scripted", (_Quiet,), {"answer": lambda self: answer(self)})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def send(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def send_file(handler: BaseHTTPRequestHandler, root: Path, path: str) -> None:
    found = root / path.lstrip("/")
    if found.is_file():
        send(handler, found.read_bytes())
    else:
        send(handler, b"not here", 404)


def redirect(handler: BaseHTTPRequestHandler, location: str) -> None:
    handler.send_response(302)
    handler.send_header("Location", location)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def configured(settings: Settings, *urls: str, **more: object) -> Settings:
    return settings.model_copy(
        update={
            "kernel_feeds": [MirrorSource(url=url, gpgcheck=False) for url in urls],
            "kernel_feed_max_metadata": 1024 * 1024,
            **more,
        }
    )


def poll_within(
    seconds: float, sessions: sessionmaker[Session], settings: Settings, work: Path
) -> list[feeds.PollReport]:
    """One round of polls, which must end within ``seconds`` (a poll stuck for good fails the test, not the
    run: the round runs in a thread left behind)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(feeds.poll_due_feeds(sessions, settings, work))
        except BaseException as error:  # the test reports it below, not the thread
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the poll did not end within {seconds} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    reports: list[feeds.PollReport] = outcome[0]
    return reports


def poll(sessions: sessionmaker[Session], settings: Settings, *urls: str, **more: object) -> list[feeds.PollReport]:
    return poll_within(60, sessions, configured(settings, *urls, **more), settings.data_dir / "work")


def builds(sessions: sessionmaker[Session]) -> list[Build]:
    with sessions() as session:
        return list(session.scalars(select(Build)))


def write_repomd_without_checksum_or_location(repo: Path) -> None:
    (repo / "repodata").mkdir(parents=True)
    (repo / "repodata" / "repomd.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo">'
        '<revision>1</revision><data type="primary"><timestamp>1</timestamp></data></repomd>\n'
    )


def test_a_repomd_without_checksum_or_location_is_not_metadata(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    add_bundle(sessions)
    write_repomd_without_checksum_or_location(tmp_path)
    with serve(tmp_path) as url:
        (report,) = poll(sessions, settings, url)
    assert report.error == mirrors.NOT_METADATA and report.queued == []
    assert feed_row(sessions, url).error == mirrors.NOT_METADATA and builds(sessions) == []


def test_a_corrupt_gzip_primary_is_not_metadata(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    add_bundle(sessions)
    good = primary_xml([KERNEL] * 50)
    corrupt = bytearray(gzip.compress(good, compresslevel=1))
    corrupt[20] ^= 0xFF  # inside the deflate stream: zlib.error, not the CRC check's BadGzipFile
    write_metadata(tmp_path, good, compressed=bytes(corrupt))
    with serve(tmp_path) as url:
        (report,) = poll(sessions, settings, url)
    assert report.error == mirrors.NOT_METADATA and report.queued == []
    assert feed_row(sessions, url).error == mirrors.NOT_METADATA


def test_a_primary_listing_more_kernel_packages_than_any_distro_is_too_large(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """600,000 small records took a worker to 1.8 GB: past ``MAX_PACKAGES`` (here 10) the feed is refused, with
    the refusal of its kind, not a parser's error."""
    monkeypatch.setattr(mirrors, "MAX_PACKAGES", 10)
    add_bundle(sessions)
    version, release, arch = KERNEL
    write_metadata(tmp_path, primary_xml([(version, f"{release}.{number}", arch) for number in range(11)]))
    with serve(tmp_path) as url:
        (report,) = poll(sessions, settings, url)
    assert report.error == mirrors.TOO_LARGE and report.queued == [] and builds(sessions) == []


def test_an_overlong_etag_is_not_kept_and_the_feed_still_builds(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """The ETag column holds 256 characters: PostgreSQL refused a longer one (every round failed), SQLite kept
    it whole. A validator that long is not kept at all: the feed is read unconditionally."""
    add_bundle(sessions)
    write_metadata(tmp_path, primary_xml([KERNEL]))
    with serve(tmp_path, headers={"ETag": '"' + "e" * 300 + '"'}) as url:
        (report,) = poll(sessions, settings, url)
    assert report.error is None and len(report.queued) == 1
    row = feed_row(sessions, url)
    assert row.etag is None and row.error is None and row.kernels == ["4.18.0-372.26.1.el8_6.x86_64"]


PAUSE = 0.3  # seconds between two bytes of a trickle
DEADLINE = 1.5  # the poll's whole deadline in the trickle tests


@sqlite_only
@pytest.mark.parametrize("trickled", ["repomd.xml's status line", "repomd.xml", "the primary metadata"])
def test_a_trickling_mirror_is_cut_at_the_poll_deadline(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path, trickled: str
) -> None:
    """A byte now and then keeps each read within any per-read timeout; only the poll's deadline ends it."""
    add_bundle(sessions)
    write_metadata(tmp_path, primary_xml([KERNEL] * 20))
    stop = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        for byte in data:
            if stop.wait(PAUSE):
                return
            handler.wfile.write(bytes([byte]))

    def answer(handler: BaseHTTPRequestHandler) -> None:
        body = (tmp_path / handler.path.lstrip("/")).read_bytes()
        if trickled == "repomd.xml's status line" and handler.path.endswith("repomd.xml"):
            trickle(handler, b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        elif (trickled == "repomd.xml" and handler.path.endswith("repomd.xml")) or (
            trickled == "the primary metadata" and handler.path.endswith("primary.xml.gz")
        ):
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            trickle(handler, body)
        else:
            send(handler, body)

    with scripted(answer) as url:
        try:
            started = time.monotonic()
            (report,) = poll_within(
                DEADLINE + 5,
                sessions,
                configured(settings, url, kernel_feed_poll_timeout=DEADLINE),
                settings.data_dir / "work",
            )
            elapsed = time.monotonic() - started
        finally:
            stop.set()
    assert report.error == mirrors.TIMEOUT and report.queued == []
    assert elapsed < DEADLINE + 1, elapsed
    assert feed_row(sessions, url).error == mirrors.TIMEOUT


@sqlite_only
def test_a_redirect_to_another_port_is_refused(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    add_bundle(sessions)
    write_metadata(tmp_path, primary_xml([KERNEL]))
    with serve(tmp_path) as elsewhere, scripted(lambda handler: redirect(handler, elsewhere + handler.path[1:])) as url:
        (report,) = poll(sessions, settings, url)
    assert report.error == mirrors.REDIRECT_REFUSED and builds(sessions) == []


@sqlite_only
def test_a_redirect_within_the_same_host_and_port_or_to_an_allowed_host_is_followed(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    add_bundle(sessions)
    write_metadata(tmp_path, primary_xml([KERNEL]))

    def moved(handler: BaseHTTPRequestHandler) -> None:  # /old/... was moved to /...
        if handler.path.startswith("/old/"):
            redirect(handler, handler.path.removeprefix("/old"))
        else:
            send_file(handler, tmp_path, handler.path)

    with scripted(moved) as url:
        (report,) = poll(sessions, settings, url + "old/")
    assert report.error is None and len(report.queued) == 1

    with serve(tmp_path) as elsewhere, scripted(lambda handler: redirect(handler, elsewhere + handler.path[1:])) as url:
        port = elsewhere.rsplit(":", 1)[1].rstrip("/")
        (report,) = poll(sessions, settings, url, mirror_redirect_hosts=f"127.0.0.1:{port}")
    assert report.error is None and report.kernels == ["4.18.0-372.26.1.el8_6.x86_64"]


@pytest.mark.parametrize(
    ("origin", "target", "allowed", "followed"),
    [
        ("http://mirror:8080/os/", "http://mirror:8080/vault/os/", "", True),
        ("http://mirror/os/", "http://MIRROR:80/vault/", "", True),
        ("http://mirror:8080/os/", "http://mirror:8081/os/", "", False),
        ("http://mirror/os/", "https://mirror/os/", "", False),
        ("http://mirror/os/", "http://169.254.169.254/latest/", "", False),
        ("http://mirror/os/", "http://cdn.example/os/", "cdn.example", True),
        ("http://mirror/os/", "https://cdn.example/os/", "cdn.example", True),
        ("http://mirror/os/", "http://cdn.example:8080/os/", "cdn.example", False),
        ("http://mirror/os/", "http://cdn.example:8080/os/", "cdn.example:8080, other.example", True),
        ("https://mirror/os/", "http://cdn.example/os/", "cdn.example", False),
        ("http://mirror/os/", "ftp://cdn.example/os/", "cdn.example", False),
        ("http://mirror/os/", "http://mirror:http/os/", "", False),
    ],
)
def test_which_redirects_are_followed(origin: str, target: str, allowed: str, followed: bool) -> None:
    assert mirrors.redirect_allowed(origin, target, host_ports(allowed)) is followed


def test_a_kernel_devel_download_is_not_redirected_to_another_host(tmp_path: Path) -> None:
    (tmp_path / "kernel-devel.rpm").write_bytes(b"rpm")
    with serve(tmp_path) as elsewhere, scripted(lambda handler: redirect(handler, elsewhere + handler.path[1:])) as url:
        with pytest.raises(mirrors.MirrorRefused, match="redirect") as refused:
            mirrors.download(url + "kernel-devel.rpm", tmp_path / "downloaded.rpm", None)
    assert str(refused.value) == mirrors.REDIRECT_REFUSED


def test_a_hostile_feed_does_not_stop_the_next_one(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    add_bundle(sessions)
    write_repomd_without_checksum_or_location(tmp_path / "hostile")
    write_metadata(tmp_path / "good", primary_xml([KERNEL]))
    with serve(tmp_path / "hostile") as hostile, serve(tmp_path / "good") as good:
        first, second = poll(sessions, settings, hostile, good)
    assert first.error == mirrors.NOT_METADATA
    assert second.error is None and len(second.queued) == 1
    assert feed_row(sessions, good).builds_queued == 1


@sqlite_only
def test_a_refusal_reads_the_same_whatever_the_http_status(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """The feed's error is no oracle of what answered: one text per kind of failure, details in the log."""
    with serve(tmp_path) as missing, scripted(lambda handler: send(handler, b"oops", 500)) as failing:
        not_found, server_error = poll(sessions, settings, missing, failing)
    assert not_found.error == server_error.error == mirrors.HTTP_ERROR
    (unreachable,) = poll(sessions, settings, f"http://127.0.0.1:{free_port()}/")
    assert unreachable.error == mirrors.UNREACHABLE


def test_a_value_the_database_refuses_does_not_stop_the_next_feed(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """A feed URL longer than its column: PostgreSQL refuses the row (SQLite keeps it, and the mirror has no
    such path). Either way that feed fails alone."""
    add_bundle(sessions)
    write_metadata(tmp_path, primary_xml([KERNEL]))
    with serve(tmp_path) as good:
        overlong, second = poll(sessions, settings, good + "x" * 1100 + "/", good)
    assert overlong.error in (feeds.DATABASE_REFUSED, mirrors.HTTP_ERROR)
    assert second.error is None and len(second.queued) == 1
