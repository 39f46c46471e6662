"""Reading a distro's yum repository: its ``repomd.xml``, then the packages its primary metadata lists.

Both places that read distro mirrors go through here: kernel sources (``kernel-devel-<K>`` for a build) and
kernel feeds (which kernels a mirror holds). Everything from the mirror is hostile until checked: repomd.xml
is capped, the primary metadata is checksum-verified and capped as downloaded and again as decompressed (a
few KB of gzip can claim gigabytes), records missing a field are refused, locations may not climb out of the
repository, and the XML is parsed by createrepo_c, never by hand.

Time is bounded too. Each read of a socket waits at most ``READ_TIMEOUT`` seconds, and a ``Deadline`` bounds
a whole exchange (a feed's poll: repomd.xml, primary metadata, parsing): a mirror sending a byte now and
then passes any per-read timeout, so every read loop checks the wall clock, each read waits no longer than
the time left, and at the deadline the exchange's sockets are shut down, even mid-header. Redirects are
followed only to the requested URL's own scheme, host and port, or to the hosts of a ``Reach``'s allowlist
(``OFEDREPO_MIRROR_REDIRECT_HOSTS``); anything else is refused rather than asked of another host.

Every refusal is a ``MirrorRefused`` whose message is one of these texts, one per kind of failure, stable
for operators and no oracle of what a redirect or a hostile mirror made the reader touch (the details, a
status or an exception, are in its ``detail``, for the log):

    UNREACHABLE         "the mirror cannot be reached"           no connection (refused, no route, TLS)
    TIMEOUT             "the mirror did not answer in time"      a read timed out, or the deadline passed
    HTTP_ERROR          "the mirror answered an HTTP error"      any 4xx or 5xx status
    REDIRECT_REFUSED    "redirect to another host refused"       a redirect off the origin and allowlist
    NOT_HTTP            "the mirror's answer is not valid HTTP"  a malformed or broken-off answer
    TOO_LARGE           "larger than allowed"                    past a cap, as downloaded or decompressed
    NOT_METADATA        "not yum metadata"                       unparsable, a field missing, a bad stream
    CHECKSUM_MISMATCH   "checksum mismatch"                      not what the metadata's checksum says
    LOCATION_REFUSED    "location outside the repository"        an absolute or climbing location
    UNSUPPORTED_SCHEME  "only http, https and file repository URLs are supported"
"""

import bz2
import gzip
import hashlib
import http.client
import lzma
import re
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Protocol, Self

import createrepo_c as cr
import zstandard

from ofedrepo.errors import OfedrepoError
from ofedrepo.kernel import release_of_package

MAX_DOWNLOAD = 2 * 1024**3
MAX_REPOMD_BYTES = 4 * 1024**2
#: Seconds one read of a socket may wait, whatever the deadline.
READ_TIMEOUT = 60.0
_CHUNK = 1024 * 1024

UNREACHABLE = "the mirror cannot be reached"
TIMEOUT = "the mirror did not answer in time"
HTTP_ERROR = "the mirror answered an HTTP error"
REDIRECT_REFUSED = "redirect to another host refused"
NOT_HTTP = "the mirror's answer is not valid HTTP"
TOO_LARGE = "larger than allowed"
NOT_METADATA = "not yum metadata"
CHECKSUM_MISMATCH = "checksum mismatch"
LOCATION_REFUSED = "location outside the repository"
UNSUPPORTED_SCHEME = "only http, https and file repository URLs are supported"

#: Checksum types yum metadata uses (``sha`` is yum's old name of sha1), by hashlib name.
_CHECKSUM_TYPES = {
    "md5": "md5",
    "sha": "sha1",
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A location is sent in a request line: printable ASCII without spaces, as http.client requires anyway.
_LOCATION = re.compile(r"[\x21-\x7e]+")
#: The fields a package record must have to be used: its release and where to fetch it, with its checksum.
_PACKAGE_FIELDS = ("name", "version", "release", "arch", "location_href", "checksum_type", "pkgId")
#: Records of the wanted packages one primary metadata may list: a distro's repository (its vault included)
#: lists a few hundred kernel-devel releases; 600,000 small records took a worker to 1.8 GB.
MAX_PACKAGES = 20_000


@dataclass(frozen=True)
class PackageRecord:
    """What is kept of a primary metadata record: ``_PACKAGE_FIELDS``, not createrepo_c's whole package."""

    name: str
    version: str
    release: str
    arch: str
    location_href: str
    checksum_type: str
    pkgId: str  # noqa: N815 (createrepo_c's name, kept so that both read alike)


class MirrorRefused(OfedrepoError):
    """A repository or an answer that cannot be used. The message is the kind of failure (one of the texts
    above, the same whatever the mirror sent); ``detail`` says what exactly, for the log."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.detail = detail[:500]


class Deadline:
    """When a whole exchange with mirrors must be over: per-read timeouts alone let a mirror that trickles a
    byte now and then hold a reader for good. ``Deadline()`` sets none (each read still waits at most
    ``READ_TIMEOUT``)."""

    def __init__(self, seconds: float | None = None) -> None:
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (at most 0 once passed), None without a deadline."""
        return None if self._end is None else max(self._end - time.monotonic(), 0.0)

    @property
    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def check(self) -> None:
        """Refuse (``TIMEOUT``) once the deadline has passed."""
        if self.expired:
            raise MirrorRefused(TIMEOUT, "the deadline passed")

    def read_timeout(self) -> float:
        """How long the next read may wait: ``READ_TIMEOUT``, or less when less time is left."""
        self.check()
        remaining = self.remaining()
        return READ_TIMEOUT if remaining is None else min(READ_TIMEOUT, remaining)


@dataclass(frozen=True)
class Reach:
    """How far reading mirrors may go: until ``deadline``, and by redirects to the requested URL's own scheme,
    host and port or to ``redirect_hosts`` (``Settings.redirect_hosts``; http or https, never from https to
    http). The default: no deadline beyond ``READ_TIMEOUT`` per read, and no other host."""

    deadline: Deadline = field(default_factory=Deadline)
    redirect_hosts: frozenset[tuple[str, int | None]] = frozenset()


def redirect_allowed(origin: str, target: str, hosts: Collection[tuple[str, int | None]] = ()) -> bool:
    """Whether a request for ``origin`` may follow a redirect to ``target``. Pure."""
    try:
        source, destination = urllib.parse.urlsplit(origin), urllib.parse.urlsplit(target)
        source_port = source.port or _DEFAULT_PORTS.get(source.scheme)
        port = destination.port or _DEFAULT_PORTS.get(destination.scheme)
    except ValueError:  # a port that is no number
        return False
    if (destination.scheme, destination.hostname, port) == (source.scheme, source.hostname, source_port):
        return True
    if destination.scheme not in _DEFAULT_PORTS or (source.scheme, destination.scheme) == ("https", "http"):
        return False
    return (destination.hostname, port) in hosts or (
        (destination.hostname, None) in hosts and port == _DEFAULT_PORTS[destination.scheme]
    )


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, kind: Any, value: Any, traceback: Any, /) -> Any: ...


_OPENERS: dict[str, Callable[[Path], _Reader]] = {
    ".gz": lambda path: gzip.open(path, "rb"),
    ".xz": lambda path: lzma.open(path, "rb"),
    ".bz2": lambda path: bz2.open(path, "rb"),
    ".zst": lambda path: zstandard.open(path, "rb"),
}
#: What a broken compressed stream raises, by decompressor: gzip's zlib.error and EOFError are no OSError.
_STREAM_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


@dataclass(frozen=True)
class Repomd:
    """What ``repodata/repomd.xml`` said: where the primary metadata is, and the answer's headers."""

    primary: Any
    """createrepo_c's record of the primary metadata: location, checksum, sizes (each one checked)."""
    headers: Message


def base_url(url: str) -> str:
    """``url`` with one trailing slash, once its scheme is known to be one we read."""
    base = url.rstrip("/") + "/"
    if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
        raise MirrorRefused(UNSUPPORTED_SCHEME, base[:200])
    return base


def safe_href(href: object) -> str:
    """A repository-relative location from metadata; anything absolute, climbing out, or that no request line
    can carry is refused."""
    if not isinstance(href, str) or not _LOCATION.fullmatch(href):
        raise MirrorRefused(LOCATION_REFUSED, repr(href)[:200])
    path = PurePosixPath(href)
    if path.is_absolute() or ".." in path.parts or "://" in href or "\\" in href:
        raise MirrorRefused(LOCATION_REFUSED, repr(href)[:200])
    return path.as_posix()


def read_repomd(
    base: str, scratch: Path, headers: dict[str, str] | None = None, reach: Reach | None = None
) -> Repomd | None:
    """``base``'s repomd.xml, asked with ``headers`` (validators of a conditional GET); None for a 304."""
    path = scratch / "repomd.xml"
    answer = _fetch(base + "repodata/repomd.xml", path, reach or Reach(), MAX_REPOMD_BYTES, headers=headers)
    if answer is None:
        return None
    try:
        repomd = cr.Repomd(str(path))
    except cr.CreaterepoCError as error:
        raise MirrorRefused(NOT_METADATA, f"repomd.xml: {str(error).strip()}") from None
    primary = next((record for record in repomd.records if record.type == "primary"), None)
    if primary is None:
        raise MirrorRefused(NOT_METADATA, "repomd.xml lists no primary metadata")
    if not isinstance(primary.location_href, str) or not _is_checksum(primary.checksum_type, primary.checksum):
        raise MirrorRefused(NOT_METADATA, "repomd.xml: the primary metadata has no location or no valid checksum")
    return Repomd(primary, answer)


def read_packages(
    base: str, primary: Any, scratch: Path, max_bytes: int, names: Collection[str], reach: Reach | None = None
) -> list[PackageRecord]:
    """The packages named ``names`` that the primary metadata lists, at most ``MAX_PACKAGES``."""
    reach = reach or Reach()
    if (primary.size or 0) > max_bytes or (primary.size_open or 0) > max_bytes:
        raise MirrorRefused(TOO_LARGE, f"the primary metadata claims more than {max_bytes} bytes")
    href = safe_href(primary.location_href)
    compressed = scratch / ("fetched-primary" + Path(href).suffix)  # never the name of what it decompresses to
    _fetch(base + href, compressed, reach, max_bytes, checksum=(primary.checksum_type, primary.checksum))
    plain = scratch / "primary.xml"
    _decompress(compressed, plain, max_bytes, reach.deadline)
    found: list[PackageRecord] = []
    refused: list[MirrorRefused] = []  # createrepo_c turns what its callback raises into its own error

    def keep(package: Any) -> bool:
        try:
            reach.deadline.check()  # raised inside createrepo_c's callback: it stops the parse
            if package.name in names:
                fields = [getattr(package, name) for name in _PACKAGE_FIELDS]
                if not all(isinstance(field, str) for field in fields):
                    raise MirrorRefused(NOT_METADATA, f"a {package.name} record misses a field")
                if len(found) >= MAX_PACKAGES:
                    raise MirrorRefused(TOO_LARGE, f"the primary metadata lists over {MAX_PACKAGES} kernel packages")
                found.append(PackageRecord(*fields))
        except MirrorRefused as refusal:
            refused.append(refusal)
            raise
        return True

    try:
        cr.xml_parse_primary(str(plain), pkgcb=keep, do_files=False, warningcb=lambda *_: True)
    except cr.CreaterepoCError as error:
        if refused:
            raise refused[0] from None
        reach.deadline.check()
        raise MirrorRefused(NOT_METADATA, f"primary metadata: {str(error).strip()}") from None
    return found


def kernel_release(package: PackageRecord) -> str:
    """The ``uname -r`` a kernel package (``kernel-devel``, ``kernel-rt-devel``...) is for."""
    return release_of_package(package.name, package.version, package.release, package.arch)


def download(
    url: str,
    destination: Path,
    checksum: tuple[str, str] | None,
    max_bytes: int = MAX_DOWNLOAD,
    reach: Reach | None = None,
) -> None:
    """Fetch ``url`` into ``destination``, never past ``max_bytes``; with ``checksum`` (type, hex), refuse a
    mismatch."""
    _fetch(url, destination, reach or Reach(), max_bytes, checksum=checksum)


def _is_checksum(kind: object, value: object) -> bool:
    """A checksum type yum uses, and a hex digest of its length."""
    name = _CHECKSUM_TYPES.get(kind) if isinstance(kind, str) else None
    if name is None or not isinstance(value, str):
        return False
    return re.fullmatch(f"[0-9a-fA-F]{{{hashlib.new(name).digest_size * 2}}}", value) is not None


def _fetch(
    url: str,
    destination: Path,
    reach: Reach,
    max_bytes: int,
    headers: dict[str, str] | None = None,
    checksum: tuple[str, str] | None = None,
) -> Message | None:
    """Copy what ``url`` answers into ``destination`` within ``reach``; the answer's headers, or None for a 304
    to a conditional GET (``headers`` given). Every failure of the mirror is a ``MirrorRefused``."""
    name = _CHECKSUM_TYPES.get(checksum[0]) if checksum else None
    if checksum and name is None:
        raise MirrorRefused(NOT_METADATA, f"unknown checksum type {checksum[0][:50]!r}")
    digest = hashlib.new(name) if name else None
    deadline = reach.deadline
    with _Watch(deadline) as watch:
        opener = urllib.request.build_opener(
            _Redirects(url, reach.redirect_hosts), _WatchedHTTP(watch), _WatchedHTTPS(watch)
        )
        try:
            response = opener.open(urllib.request.Request(url, headers=headers or {}), timeout=deadline.read_timeout())
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 304 and headers:
                return None
            raise _refusal(error, deadline) from None
        except Exception as error:  # whatever a hostile answer makes urllib or http.client raise
            raise _refusal(error, deadline) from None
        size = 0
        with response, destination.open("wb") as writer:
            while True:
                watch.pace()
                try:
                    chunk = response.read1(_CHUNK)  # read() would wait for a whole chunk, however slow it comes
                except Exception as error:
                    raise _refusal(error, deadline) from None
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise MirrorRefused(TOO_LARGE, f"{url[:300]} is larger than {max_bytes} bytes")
                writer.write(chunk)
                if digest:
                    digest.update(chunk)
            deadline.check()  # a socket shut down at the deadline reads as the end of the answer
            if getattr(response, "length", None):  # http.client reads a body cut short as its end
                raise MirrorRefused(NOT_HTTP, f"{url[:300]}: the answer broke off")
            answer: Message = response.headers
    if checksum and digest and digest.hexdigest() != checksum[1].lower():
        raise MirrorRefused(
            CHECKSUM_MISMATCH, f"{url[:300]}: {checksum[0]} {digest.hexdigest()} is not {checksum[1][:200]!r}"
        )
    return answer


def _refusal(error: BaseException, deadline: Deadline) -> MirrorRefused:
    """The kind of failure ``error`` (raised while asking or reading a mirror) is."""
    if isinstance(error, MirrorRefused):
        return error
    if deadline.expired:  # whatever the cut sockets made the reader raise
        return MirrorRefused(TIMEOUT, f"the deadline passed ({type(error).__name__})")
    detail = f"{type(error).__name__}: {str(error)[:300]}"
    if isinstance(error, urllib.error.HTTPError):
        if error.code == 304:  # to a GET that asked nothing conditionally
            return MirrorRefused(NOT_HTTP, detail)
        # urllib raises a 3xx it did not follow: a redirect to another scheme, a loop, no Location.
        return MirrorRefused(REDIRECT_REFUSED if 300 <= error.code < 400 else HTTP_ERROR, detail)
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return MirrorRefused(TIMEOUT, detail)
    if isinstance(reason, ssl.SSLError):  # before ValueError: a certificate refused is one of those too
        return MirrorRefused(UNREACHABLE, detail)
    if isinstance(reason, http.client.HTTPException | ValueError):
        return MirrorRefused(NOT_HTTP, detail)  # RemoteDisconnected too: the connection was there
    if isinstance(reason, OSError | str):  # a URLError's reason may be text ("unknown url type")
        return MirrorRefused(UNREACHABLE, detail)
    return MirrorRefused(NOT_HTTP, detail)


class _Watch:
    """The sockets of one request (its redirects included): each read waits no longer than the deadline
    allows, and when it passes they are shut down from a timer, since a read blocked in ``recv`` (or in
    http.client's reading of a trickled status line and headers) sees no clock."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self._connections: list[http.client.HTTPConnection] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Self:
        remaining = self.deadline.remaining()
        if remaining is not None:
            self._timer = threading.Timer(remaining, self.cut)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def connecting(self, connection: http.client.HTTPConnection) -> None:
        """``connection`` is connecting: its socket may be cut during the TLS handshake too."""
        with self._lock:
            self._connections.append(connection)

    def connected(self, sock: socket.socket) -> None:
        """Kept apart from its connection: urllib drops the connection's socket once the headers are read."""
        with self._lock:
            self._sockets.append(sock)
        sock.settimeout(self.deadline.read_timeout())

    def pace(self) -> None:
        """Before each read: refuse past the deadline, and let the read wait only for the time left."""
        timeout = self.deadline.read_timeout()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.settimeout(timeout)
                except OSError:  # closed already
                    pass

    def cut(self) -> None:
        with self._lock:
            sockets = [connection.sock for connection in self._connections] + self._sockets
        for sock in sockets:
            if sock is None:
                continue
            try:
                # socket's own shutdown, not SSLSocket's: that one drops its TLS state under a reading thread.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


def _watched(connection_class: type[http.client.HTTPConnection], watch: _Watch) -> Callable[..., Any]:
    """``connection_class`` reporting its socket to ``watch``."""

    def connect(connection: http.client.HTTPConnection) -> None:
        watch.connecting(connection)
        connection_class.connect(connection)
        watch.connected(connection.sock)

    return type("Watched" + connection_class.__name__, (connection_class,), {"connect": connect})


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def do_open(self, http_class: Any, req: urllib.request.Request, **http_conn_args: Any) -> Any:
        return super().do_open(_watched(http_class, self.watch), req, **http_conn_args)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def do_open(self, http_class: Any, req: urllib.request.Request, **http_conn_args: Any) -> Any:
        return super().do_open(_watched(http_class, self.watch), req, **http_conn_args)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only where ``redirect_allowed`` says: a mirror may move its files, not send the
    reader to other hosts (an internal service, say)."""

    def __init__(self, origin: str, hosts: Collection[tuple[str, int | None]]) -> None:
        super().__init__()
        self.origin = origin
        self.hosts = hosts

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: http.client.HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        if not redirect_allowed(self.origin, newurl, self.hosts):
            fp.close()
            raise MirrorRefused(REDIRECT_REFUSED, f"{req.full_url[:300]} -> {newurl[:300]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _decompress(source: Path, destination: Path, max_bytes: int, deadline: Deadline) -> None:
    opener = _OPENERS.get(source.suffix)
    if opener is None:
        shutil.copyfile(source, destination)
        return
    written = 0
    with destination.open("wb") as writer:
        for chunk in _decompressed(opener, source):
            deadline.check()
            written += len(chunk)
            if written > max_bytes:
                raise MirrorRefused(TOO_LARGE, f"the primary metadata, decompressed, is larger than {max_bytes} bytes")
            writer.write(chunk)


def _decompressed(opener: Callable[[Path], _Reader], source: Path) -> Iterator[bytes]:
    """The decompressed stream in chunks; a broken stream is ``NOT_METADATA`` (and errors of writing what it
    gives stay what they are: a full disk is not the mirror's doing)."""
    try:
        with opener(source) as reader:
            while chunk := reader.read(_CHUNK):
                yield chunk
    except _STREAM_ERRORS as error:
        raise MirrorRefused(NOT_METADATA, f"not a readable {source.suffix} stream ({error})") from None
