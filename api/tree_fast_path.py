"""The tree's small files answered inside the HTTP protocol, before the ASGI app: what yum asks for most.

A dnf client fetches ``repomd.xml`` on every run and then the few small metadata files it names; a farm of image
builds does so thousands of times an hour. Through the app, each of those answers costs the framework's work of
an API call (its middleware, its router, a task), about half of what the server can do for an empty route and a
few hundredths of nginx (``docs/benchmarks.md``). Answered here, in the connection's protocol, it costs one
``stat`` and one write.

What is answered here: a ``GET`` or ``HEAD`` of a regular file of the tree of at most ``tree.SMALL`` bytes,
asked without a body (``Content-Length: 0`` is none), a range, a condition, ``Expect`` or a proxy's
``X-Forwarded-For``, on a connection whose client has taken its earlier answers and has no other request
waiting. Everything else (directories, 404s, ranges, conditional requests, larger files, pipelined requests
queued behind another) goes to the app, as before.

What an answer is: the route's own (``tree.small_file`` makes it with every check the route makes: no hidden
names, no ``..``, nothing whose resolved path leaves the tree), kept per URL path. Before it is used again its
path is looked up once more (``os.stat``, symlinks followed): the same device, inode, size, modification and
change times mean the same file as when it was read; anything else (``latest`` switched to a new version, the
file replaced or removed) and it is read again through ``tree.small_file``. An answer is also made again, with
every check, once it is ``CHECKED_SECONDS`` old: what one ``stat`` cannot see (a directory of the tree moved out
and replaced by a link to where it went; a same-size rewrite within one tick of a coarse filesystem clock) is
the route's rule again within that time. At most ``BYTES`` of answers are kept, the oldest forgotten first.

A client may send thousands of requests in one packet (pipelining): at most ``ANSWERS_PER_READ`` of them are
answered here per read of its connection, the rest go to the app, which takes them one at a time; answered
here, all of them would hold the event loop, and every other client, for as long as that client kept sending.
While such requests wait, nothing more is read from their connection (uvicorn reads again after each answer,
and a client that reads its answers grew a process by a gigabyte in eight seconds).

What the app would have done besides is done here too: the access log line (uvicorn's format), the request
counted in ``ofedrepo_http_requests_total`` under the tree's route, uvicorn's ``Date`` and ``Server`` headers,
keep-alive or ``Connection: close``. The tree is the app's (``app.state.small_files``, made with the app from the
settings it read), and a failure here is logged and leaves the request to the app: httptools would turn any
exception in its callback into a bare 400.

It takes over ``HttpToolsProtocol._start_asgi_task`` (uvicorn 0.45 and later; pyproject.toml's floor), checked
when this module is imported: without it the tree would be served, but at the app's speed, and nothing would say.
"""

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

from api.routes import tree
from api.timeouts import DeadlineHttpToolsProtocol, served_app
from ofedrepo.metrics import HTTP_REQUESTS

if not hasattr(HttpToolsProtocol, "_start_asgi_task"):
    raise ImportError("ofedrepo's tree fast path needs uvicorn 0.45 or later (HttpToolsProtocol._start_asgi_task)")

log = logging.getLogger(__name__)

PREFIX = "/repos/"
#: Requests with any of these headers are the app's: a body, a range, a condition, a proxy's client address
#: (``Content-Length: 0`` is no body: some clients send it with every GET).
_APP_HEADERS = frozenset(
    {
        b"transfer-encoding",
        b"expect",
        b"range",
        b"if-range",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"x-forwarded-for",
        b"forwarded",
    }
)
#: The answers kept in each web process, in bytes (of their files, at most 64 KiB each, and their headers).
BYTES = 32 * 1024 * 1024
#: After this long a kept answer is made again, with every check the route makes (see the module's docstring).
CHECKED_SECONDS = 1.0
#: Requests of one connection answered here per read of it; pipelined ones beyond go to the app.
ANSWERS_PER_READ = 16


def _identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells one file from another, and a file from itself rewritten."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@dataclass(frozen=True)
class _Kept:
    lookup: str
    identity: tuple[int, int, int, int, int]
    head: bytes
    body: bytes
    checked: float
    """When every check was made (``time.monotonic``)."""


class SmallFileAnswers:
    """The answers to plain GETs of the tree's small files, checked against the file before each use (see the
    module's docstring)."""

    def __init__(self, root: Path, budget: int = BYTES) -> None:
        self.root = root
        self.budget = budget
        self.kept: dict[str, _Kept] = {}
        self.size = 0

    def answer(self, path: str) -> _Kept | None:
        """The answer for the URL path ``path`` (after ``/repos/``, percent-decoded), or None: the app's to
        give."""
        kept = self.kept.get(path)
        now = time.monotonic()
        if kept is not None:
            try:
                if now - kept.checked < CHECKED_SECONDS and _identity(os.stat(kept.lookup)) == kept.identity:
                    return kept
            except OSError:
                pass
            self._forget(path)
        small = tree.small_file(self.root, path)
        if small is None:
            return None
        head = b"".join(name + b": " + value + b"\r\n" for name, value in small.headers)
        kept = _Kept(str(small.lookup), _identity(small.info), head, small.body, now)
        self._keep(path, kept)
        return kept

    def _keep(self, path: str, kept: _Kept) -> None:
        while self.kept and self.size + _cost(path, kept) > self.budget:
            self._forget(next(iter(self.kept)))
        self.kept[path] = kept
        self.size += _cost(path, kept)

    def _forget(self, path: str) -> None:
        self.size -= _cost(path, self.kept.pop(path))


def _cost(path: str, kept: _Kept) -> int:
    """What an answer takes, counted against ``BYTES``: its bytes and a share for its entry, so that empty files
    asked for by a thousand spellings of their paths (``a//b``) are bounded too."""
    return len(path) + len(kept.lookup) + len(kept.head) + len(kept.body) + 512


class TreeFastPathProtocol(DeadlineHttpToolsProtocol):
    """The protocol ``ofedrepo serve`` runs: uvicorn's httptools protocol with deadlines on request heads
    (``api.timeouts``), answering the tree's small files itself (see the module's docstring).

    It takes over uvicorn's ``_start_asgi_task``, called once a request's head is complete, when the request is
    not queued behind another one; it leaves the request to the app unless it answers it whole, there and then."""

    _answers_left = ANSWERS_PER_READ

    def data_received(self, data: bytes) -> None:
        self._answers_left = ANSWERS_PER_READ
        super().data_received(data)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: object) -> None:
        if app is self.app and not self.pipeline and not self.flow.write_paused and self._answers_left > 0:
            try:
                answered = self._answered(cycle)
            except Exception:  # noqa: BLE001 - whatever it was, the app can still answer; the log says what
                log.exception("the tree's fast path failed on %s; the app answers it", cycle.scope["path"])
                answered = False
            if answered:
                return
        super()._start_asgi_task(cycle, app)  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.pipeline and not self.transport.is_closing():
            self.flow.pause_reading()  # read again once the requests already queued are answered

    def _answered(self, cycle: RequestResponseCycle) -> bool:
        scope = cycle.scope
        method, path = scope["method"], scope["path"]
        if method not in ("GET", "HEAD") or not path.startswith(PREFIX) or self.transport.is_closing():
            return False
        for name, value in scope["headers"]:
            if name in _APP_HEADERS or (name == b"content-length" and value != b"0"):
                return False
        answers: SmallFileAnswers = served_app(self.app).state.small_files
        kept = answers.answer(path[len(PREFIX) :])
        if kept is None:
            return False
        # Everything that could fail comes before the answer is written: after it, nothing may raise.
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                method,
                get_path_with_query_string(scope),
                scope["http_version"],
                200,
            )
        HTTP_REQUESTS.labels(method, tree.ROUTE, "200").inc()
        state: ServerState = self.server_state
        default = b"".join(name + b": " + value + b"\r\n" for name, value in state.default_headers)
        closing = b"" if cycle.keep_alive else b"connection: close\r\n"
        body = b"" if method == "HEAD" else kept.body
        self.transport.write(b"".join((STATUS_LINE[200], default, kept.head, closing, b"\r\n", body)))
        self._answers_left -= 1
        self._stop_watching()  # the head came and was answered: between requests, the keep-alive timer's business
        cycle.response_started = cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()
        return True
