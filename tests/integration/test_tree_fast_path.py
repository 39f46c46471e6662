"""The tree's small files answered in the HTTP protocol (``api/tree_fast_path.py``): the protocol fed bytes as uvicorn
feeds it, on a transport that records what it is given, with an app that answers what the protocol leaves to it.

The real server's answers to the same requests are in ``test_server.py``, which reaches this path with every plain
GET of a small file."""

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from uvicorn.config import Config
from uvicorn.server import ServerState

from api import tree_fast_path
from api.tree_fast_path import ANSWERS_PER_READ, CHECKED_SECONDS, SmallFileAnswers, TreeFastPathProtocol
from ofedrepo.config import Settings
from ofedrepo.storage import DataDir


def in_a_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test in an event loop of its own, as uvicorn runs its protocols in one."""

    @functools.wraps(test)
    def run(*arguments: Any, **keywords: Any) -> None:
        asyncio.run(test(*arguments, **keywords))

    return run


class Transport(asyncio.Transport):
    """What a socket's transport does, written down."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def answers(self) -> list[bytes]:
        """The answers written so far, each a status line, headers and body (bodies here never hold 'HTTP/1.')."""
        return [b"HTTP/1." + part for part in bytes(self.written).split(b"HTTP/1.")[1:]]


class App(Starlette):
    """The app behind the protocol, with the state the protocol reads (the settings, the tree's answers): answers
    299 with the path, and records what reached it."""

    def __init__(self, data_dir: Path, http_timeout: float = 60) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.state.settings = Settings(data_dir=data_dir, http_timeout=http_timeout)
        self.state.small_files = SmallFileAnswers(DataDir(data_dir).repos)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # type: ignore[override]
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        body = f"app {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 299, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir whose tree has two versions of a repo and ``latest`` pointing at the second. The environment
    names another data dir: the protocol serves its app's tree, whatever the environment says later."""
    monkeypatch.setenv("OFEDREPO_DATA_DIR", str(tmp_path / "elsewhere"))
    repo = tmp_path / "repos" / "bundle" / "kernel"
    for version in ("1", "2"):
        (repo / version / "RPMS" / "repodata").mkdir(parents=True)
        (repo / version / "RPMS" / "repodata" / "repomd.xml").write_text(f"<repomd version='{version}'/>")
    (repo / "latest").symlink_to("2")
    (tmp_path / "ofedrepo.db").write_text("SQLite format 3")
    return repo


def data_dir_of(tree: Path) -> Path:
    return tree.parents[2]


class Connection:
    """One client connection to the protocol, on the running loop."""

    def __init__(self, app: App) -> None:
        config = Config(app=app, log_config=None)  # uvicorn wraps it in its proxy-headers middleware, as it runs
        state = ServerState()
        state.default_headers = [(b"server", b"uvicorn")]
        self.transport = Transport()
        self.protocol = TreeFastPathProtocol(config=config, server_state=state, app_state={})
        self.protocol.connection_made(self.transport)

    async def send(self, data: bytes, answers: int = 0) -> list[bytes]:
        """Sends ``data``, lets the app's tasks run until ``answers`` answers were written in all (or a while),
        and returns every answer written on the connection."""
        self.protocol.data_received(data)
        for turn in range(5000):
            await asyncio.sleep(0)
            if turn >= 20 and len(self.transport.answers()) >= answers:
                break
        return self.transport.answers()

    def close(self) -> None:
        self.protocol.connection_lost(None)


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: x", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


REPOMD = "/repos/bundle/kernel/1/RPMS/repodata/repomd.xml"
LATEST = "/repos/bundle/kernel/latest/RPMS/repodata/repomd.xml"


@in_a_loop
async def test_a_plain_get_of_a_small_file_never_reaches_the_app(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = App(data_dir_of(tree))
    connection = Connection(app)
    caplog.set_level(logging.INFO, "uvicorn.access")
    answers = await connection.send(get(REPOMD) + get(REPOMD, method="HEAD"))
    assert app.paths == []
    assert answers[0].startswith(b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\n")
    assert answers[0].endswith(b"\r\n\r\n<repomd version='1'/>")
    assert b"cache-control: no-cache\r\n" in answers[0] and b"etag: " in answers[0]
    assert b"content-length: 21\r\n" in answers[1] and answers[1].endswith(b"\r\n\r\n")  # HEAD: no body
    logged = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert logged == [
        f'127.0.0.1:40000 - "GET {REPOMD} HTTP/1.1" 200',
        f'127.0.0.1:40000 - "HEAD {REPOMD} HTTP/1.1" 200',
    ]
    assert not connection.transport.closed
    connection.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        get(REPOMD, "Range: bytes=0-3"),
        get(REPOMD, 'If-None-Match: "x"'),
        get(REPOMD, "If-Modified-Since: Sat, 05 Dec 2026 10:00:00 GMT"),
        get(REPOMD, "X-Forwarded-For: 10.0.0.1"),
        get(REPOMD, "Content-Length: 2") + b"ab",
        get(REPOMD, "Transfer-Encoding: chunked") + b"0\r\n\r\n",
        get(REPOMD, method="POST"),
        get("/repos/bundle/kernel/1/RPMS/"),  # a directory
        get("/repos/bundle/kernel/3/nothing.xml"),
        get("/repos/../ofedrepo.db"),
        get("/repos/%2e%2e/ofedrepo.db"),
        get("/repos/bundle/kernel/1/RPMS/repodata/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/ofedrepo.db"),
        get("/api/v1/ping"),
    ],
)
@in_a_loop
async def test_everything_else_is_the_apps(tree: Path, request_bytes: bytes) -> None:
    app = App(data_dir_of(tree))
    connection = Connection(app)
    answers = await connection.send(request_bytes)
    assert len(app.paths) == 1 and len(answers) == 1 and answers[0].startswith(b"HTTP/1.1 299 ")
    connection.close()


@in_a_loop
async def test_pipelined_requests_are_answered_in_order(tree: Path) -> None:
    """A request the app answers holds the ones behind it: they wait their turn, and are the app's while others
    wait behind them (answered there and then, each would call the next: a deep recursion for a client that
    pipelines thousands); the last is answered here, once the app's answers are out."""
    app = App(data_dir_of(tree))
    connection = Connection(app)
    answers = await connection.send(get(REPOMD) + get(REPOMD, "Range: bytes=0-3") + get(LATEST) + get(REPOMD))
    statuses = [answer.split(b" ", 2)[1] for answer in answers]
    assert statuses == [b"200", b"299", b"299", b"200"]
    assert app.paths == [REPOMD, LATEST] and answers[3].endswith(b"<repomd version='1'/>")
    connection.close()


@in_a_loop
async def test_http_1_0_and_connection_close_end_the_connection(tree: Path) -> None:
    for request_bytes in (get(REPOMD, version="1.0"), get(REPOMD, "Connection: close")):
        connection = Connection(App(data_dir_of(tree)))
        answers = await connection.send(request_bytes)
        assert b"connection: close\r\n" in answers[0] and answers[0].endswith(b"<repomd version='1'/>")
        assert connection.transport.closed


@in_a_loop
async def test_a_client_that_does_not_read_its_answers_is_left_to_the_app(tree: Path) -> None:
    """While the transport holds more than it should (the client reads nothing), answers wait for it to drain,
    as the app's do, instead of piling up in memory."""
    app = App(data_dir_of(tree))
    connection = Connection(app)
    connection.protocol.pause_writing()
    connection.protocol.data_received(get(REPOMD))
    await asyncio.sleep(0)
    assert app.paths == [REPOMD] and connection.transport.written == b""
    connection.protocol.resume_writing()
    assert (await connection.send(b""))[0].startswith(b"HTTP/1.1 299 ")
    connection.close()


@in_a_loop
async def test_a_kept_answer_follows_its_file(tree: Path) -> None:
    """Kept answers are checked against the file each time: ``latest`` switched, a file rewritten in place or
    replaced, a link that now leads out of the tree, a file removed."""
    app = App(data_dir_of(tree))
    connection = Connection(app)
    assert (await connection.send(get(LATEST)))[-1].endswith(b"<repomd version='2'/>")
    switched = tree / "latest.new"
    switched.symlink_to("1")
    os.replace(switched, tree / "latest")
    assert (await connection.send(get(LATEST)))[-1].endswith(b"<repomd version='1'/>")

    repomd = tree / "1" / "RPMS" / "repodata" / "repomd.xml"
    repomd.write_text("<repomd version='1b'/>")  # same inode, new size and times
    assert (await connection.send(get(REPOMD)))[-1].endswith(b"<repomd version='1b'/>")
    replacement = repomd.with_name("repomd.new")
    replacement.write_text("<repomd version='1c'/>")  # same size, another inode
    os.replace(replacement, repomd)
    assert (await connection.send(get(REPOMD)))[-1].endswith(b"<repomd version='1c'/>")

    outside = tree.parents[2] / "ofedrepo.db"
    os.unlink(tree / "latest")
    (tree / "latest").symlink_to(outside.parent)  # now leads out of the tree
    assert app.paths == []
    answers = await connection.send(get("/repos/bundle/kernel/latest/ofedrepo.db"))
    assert app.paths == ["/repos/bundle/kernel/latest/ofedrepo.db"] and answers[-1].startswith(b"HTTP/1.1 299")

    repomd.unlink()
    await connection.send(get(REPOMD))
    assert app.paths[-1] == REPOMD
    connection.close()


def test_kept_answers_stay_within_their_budget(tree: Path) -> None:
    answers = SmallFileAnswers(tree.parent.parent, budget=4096)
    for index in range(40):  # forty spellings of the same two files
        slashes = "/" * (index + 1)
        assert answers.answer(f"bundle{slashes}kernel/1/RPMS/repodata/repomd.xml") is not None
        assert answers.answer(f"bundle{slashes}kernel/latest/RPMS/repodata/repomd.xml") is not None
        assert answers.size <= 4096
    assert 0 < len(answers.kept) < 40
    assert answers.answer("bundle/kernel/1/RPMS/repodata/repomd.xml/..") is None
    assert answers.answer(".hidden") is None


@in_a_loop
async def test_a_client_pipelining_without_end_gets_a_few_answers_here_per_read_and_the_rest_from_the_app(
    tree: Path,
) -> None:
    """Answered here, thousands of pipelined requests in one read would hold the event loop (and every other
    client) for as long as their client kept sending; beyond a few per read they are the app's, which takes them
    one at a time and stops reading meanwhile."""
    app = App(data_dir_of(tree))
    connection = Connection(app)
    answers = await connection.send(get(REPOMD) * 100, answers=100)
    statuses = [answer.split(b" ", 2)[1] for answer in answers]
    assert statuses == [b"200"] * ANSWERS_PER_READ + [b"299"] * (100 - ANSWERS_PER_READ)
    assert (await connection.send(get(REPOMD), answers=101))[-1].endswith(b"<repomd version='1'/>")  # a new read
    connection.close()


@in_a_loop
async def test_a_failure_here_is_logged_and_the_app_answers(
    tree: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """httptools turns an exception in its callbacks into a bare 400 that says nothing of its cause."""

    def broken(self: SmallFileAnswers, path: str) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(SmallFileAnswers, "answer", broken)
    app = App(data_dir_of(tree))
    connection = Connection(app)
    answers = await connection.send(get(REPOMD), answers=1)
    assert app.paths == [REPOMD] and answers[0].startswith(b"HTTP/1.1 299 ")
    failures = [record for record in caplog.records if record.name == tree_fast_path.__name__]
    assert failures and "Permission denied" in str(failures[0].exc_info) and REPOMD in failures[0].getMessage()
    connection.close()


@in_a_loop
async def test_a_kept_answer_is_checked_whole_again_once_it_is_old(tree: Path) -> None:
    """One stat cannot see a directory of the tree moved out and replaced by a link to where it went (the file
    is the same one): within CHECKED_SECONDS the route's rule holds again, and the app answers 404."""
    app = App(data_dir_of(tree))
    connection = Connection(app)
    assert (await connection.send(get(REPOMD), answers=1))[-1].endswith(b"<repomd version='1'/>")
    repodata = tree / "1" / "RPMS" / "repodata"
    moved = data_dir_of(tree) / "outside-the-tree"  # beside repos/, not in it
    repodata.rename(moved)
    repodata.symlink_to(moved)
    time.sleep(CHECKED_SECONDS + 0.1)
    await connection.send(get(REPOMD), answers=2)
    assert app.paths == [REPOMD]
    connection.close()


@in_a_loop
async def test_a_keep_alive_connection_answered_here_is_never_cut_by_the_request_head_deadline(tree: Path) -> None:
    """Each head came whole and was answered: the deadline on request heads (api/timeouts.py) has nothing to cut,
    however long the connection lives; a head that then trickles is still cut."""
    app = App(data_dir_of(tree), http_timeout=0.3)
    connection = Connection(app)
    for count in range(1, 6):
        assert len(await connection.send(get(REPOMD), answers=count)) == count
        await asyncio.sleep(0.1)
    assert not connection.transport.closed and app.paths == []  # 0.5 s and more after the connection opened
    connection.protocol.data_received(b"GET /repos/")
    await asyncio.sleep(0.4)
    assert connection.transport.closed
    connection.close()


@in_a_loop
async def test_nothing_more_is_read_from_a_client_while_its_pipelined_requests_wait(tree: Path) -> None:
    """uvicorn reads again after each answer: a client that pipelines without end and reads its answers would
    grow the queue of its requests without bound."""
    app = App(data_dir_of(tree))
    connection = Connection(app)
    connection.protocol.data_received(get(REPOMD, "Range: bytes=0-3") * 10)
    waited = 0
    while len(connection.transport.answers()) < 10 and waited < 5000:
        if connection.protocol.pipeline:
            assert connection.transport.paused
        await asyncio.sleep(0)
        waited += 1
    assert len(connection.transport.answers()) == 10 and not connection.transport.paused
    connection.close()
