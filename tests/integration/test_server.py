"""The real server on a loopback port: yum-grade serving of the tree and the REST API."""

import http.client
import json
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from synthetic.bundle import BundleSpec
from tests.conftest import TARGET_KERNEL, RunningServer, start_server, stop_server

TREE = f"/repos/{BundleSpec().name}/{TARGET_KERNEL}"


def raw_get(server: RunningServer, path: str) -> tuple[int, bytes]:
    """A request whose path goes out byte for byte (httpx would normalise `..`)."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def client(published_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=published_server.url, timeout=10) as client:
        yield client


def an_rpm(client: httpx.Client, version: str = "1") -> str:
    listing = client.get(f"{TREE}/{version}/RPMS/", params={"format": "json"}).json()
    return next(entry["href"] for entry in listing["entries"] if entry["name"].endswith(".rpm"))


def test_full_get_has_exact_length_and_no_encoding(client: httpx.Client, published_server: RunningServer) -> None:
    href = an_rpm(client)
    response = client.get(href, headers={"Accept-Encoding": "gzip, br"})
    on_disk = (published_server.settings.data_dir / href.removeprefix("/")).read_bytes()
    assert response.status_code == 200
    assert response.content == on_disk
    assert response.headers["content-length"] == str(len(on_disk))
    assert "content-encoding" not in response.headers
    assert response.headers["content-type"] == "application/x-rpm"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["accept-ranges"] == "bytes"


def test_compressed_metadata_is_served_as_bytes(client: httpx.Client) -> None:
    listing = client.get(f"{TREE}/1/RPMS/repodata/", params={"format": "json"}).json()
    href = next(entry["href"] for entry in listing["entries"] if entry["name"].endswith("primary.xml.gz"))
    response = client.get(href, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert response.content[:2] == b"\x1f\x8b"  # still the gzip file, not decoded in transit


def test_head_matches_get_without_a_body(client: httpx.Client) -> None:
    href = an_rpm(client)
    head = client.head(href)
    get = client.get(href)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["etag"] == get.headers["etag"]


def test_byte_ranges(client: httpx.Client) -> None:
    href = an_rpm(client)
    whole = client.get(href).content
    size = len(whole)
    partial = client.get(href, headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206
    assert partial.content == whole[10:20]
    assert partial.headers["content-range"] == f"bytes 10-19/{size}"
    assert partial.headers["content-length"] == "10"
    suffix = client.get(href, headers={"Range": "bytes=-5"})
    assert (suffix.status_code, suffix.content) == (206, whole[-5:])
    unsatisfiable = client.get(href, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    stale = client.get(href, headers={"Range": "bytes=0-1", "If-Range": '"not-the-etag"'})
    assert (stale.status_code, stale.content) == (200, whole)


def test_repomd_and_latest_must_be_revalidated(client: httpx.Client) -> None:
    assert client.get(f"{TREE}/1/RPMS/repodata/repomd.xml").headers["cache-control"] == "no-cache"
    assert client.get(f"{TREE}/latest/mlnx-ofed.repo").headers["cache-control"] == "no-cache"
    assert client.get(f"{TREE}/1/mlnx-ofed.repo").headers["cache-control"].endswith("immutable")
    response = client.get(f"{TREE}/1/RPMS/repodata/repomd.xml")
    again = client.get(f"{TREE}/1/RPMS/repodata/repomd.xml", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_small_files_answered_before_the_app_are_the_routes_answers(client: httpx.Client) -> None:
    """A plain GET or HEAD of a small file is answered in the protocol (api/tree_fast_path.py); with a condition
    that matches nothing it is the route's own 200. Both must be the same answer, and counted alike."""
    counted = 'ofedrepo_http_requests_total{method="GET",route="/repos/{path:path}",status="200"}'

    def count() -> float:
        line = next(line for line in client.get("/metrics").text.splitlines() if line.startswith(counted))
        return float(line.rsplit(" ", 1)[1])

    before = count()
    for path in (
        f"{TREE}/1/RPMS/repodata/repomd.xml",
        f"{TREE}/latest/mlnx-ofed.repo",
        f"{TREE}/2/RPM-GPG-KEY-ofedrepo",
    ):
        fast, routed = client.get(path), client.get(path, headers={"If-None-Match": '"matches-nothing"'})
        assert fast.status_code == routed.status_code == 200 and fast.content == routed.content
        assert {**fast.headers, "date": ""} == {**routed.headers, "date": ""}
        head = client.head(path)
        assert {**head.headers, "date": ""} == {**fast.headers, "date": ""} and head.content == b""
    assert count() - before == 6


def test_latest_points_at_version_2(client: httpx.Client) -> None:
    assert client.get(f"{TREE}/latest/mlnx-ofed.repo").text == client.get(f"{TREE}/2/mlnx-ofed.repo").text
    assert client.get(f"{TREE}/1/RPMS/repodata/repomd.xml").status_code == 200  # version 1 stays servable


def test_only_get_and_head(client: httpx.Client) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = client.request(method, f"{TREE}/1/mlnx-ofed.repo")
        assert response.status_code == 405, method
        assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize(
    "path",
    [
        "/repos/../ofedrepo.db",
        "/repos/%2e%2e/ofedrepo.db",
        "/repos/%2E%2E/%2E%2E/etc/passwd",
        f"{TREE}/1/%2e%2e/%2e%2e/%2e%2e/%2e%2e/ofedrepo.db",
        "/repos/..%2f..%2fetc%2fpasswd",
        "/repos/%00",
        "/repos/.hidden",
    ],
)
def test_no_escape_from_the_tree(published_server: RunningServer, path: str) -> None:
    status, body = raw_get(published_server, path)
    assert status == 404
    assert b"root:" not in body and b"SQLite" not in body


def test_symlinks_pointing_out_are_not_followed(published_server: RunningServer, client: httpx.Client) -> None:
    repos = published_server.settings.data_dir / "repos"
    (repos / "evil-file").symlink_to("/etc/passwd")
    (repos / "evil-dir").symlink_to(published_server.settings.data_dir)
    try:
        assert client.get("/repos/evil-file").status_code == 404
        assert client.get("/repos/evil-dir/ofedrepo.db").status_code == 404
        assert client.get("/repos/evil-dir/").status_code == 404
        listed = client.get("/repos/", params={"format": "json"}).json()["entries"]
        assert not {"evil-file", "evil-dir"} & {entry["name"] for entry in listed}  # not even their size or date
        assert "passwd" not in client.get("/repos/").text
    finally:
        for name in ("evil-file", "evil-dir"):
            os.unlink(repos / name)


def test_a_fifo_in_the_tree_is_never_waited_on(published_server: RunningServer, client: httpx.Client) -> None:
    """Small files are read in the event loop: a FIFO (no writer would ever come) must be judged by its
    descriptor, opened without blocking, or the whole service would wait on it."""
    fifo = published_server.settings.data_dir / "repos" / "fifo.xml"
    os.mkfifo(fifo)
    try:
        assert client.get("/repos/fifo.xml").status_code == 404
        assert client.get("/api/v1/ping").status_code == 200
    finally:
        fifo.unlink()


def test_directory_index_html_and_json(client: httpx.Client) -> None:
    redirect = client.get(TREE)
    assert redirect.status_code == 301 and redirect.headers["location"] == f"{TREE}/"
    page = client.get(f"{TREE}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/repos/' in page.text and "../" in page.text
    listing = client.get(f"{TREE}/", params={"format": "json"}).json()
    assert listing["parent"] == f"/repos/{BundleSpec().name}/"
    names = [entry["name"] for entry in listing["entries"]]
    assert names == ["1", "2", "latest"]
    latest = listing["entries"][2]
    assert latest["link"] == "2" and latest["type"] == "directory"
    files = client.get(f"{TREE}/1/", params={"format": "json"}).json()["entries"]
    key = next(entry for entry in files if entry["name"] == "RPM-GPG-KEY-Mellanox")
    assert key["size"] > 0 and key["modified"]


def test_health(client: httpx.Client) -> None:
    assert client.get("/api/v1/health").json() == {"status": "ok", "database": "ok", "workers": 0, "worker_list": []}


def test_repos_api(client: httpx.Client, published_server: RunningServer) -> None:
    repos = client.get("/api/v1/repos").json()
    assert len(repos) == 1
    repo = client.get(f"/api/v1/repos/{repos[0]['id']}").json()
    assert repo["bundle"] == BundleSpec().name and repo["kernel"] == TARGET_KERNEL
    assert repo["state"] == "published" and repo["latest_version"] == 2
    assert [version["number"] for version in repo["versions"]] == [1, 2]
    assert repo["latest_url"] == f"{published_server.url}{TREE}/latest"
    assert repo["baseurl"] == repo["latest_url"] + "/RPMS"
    assert client.get(repo["baseurl"] + "/repodata/repomd.xml").status_code == 200


def test_a_kernel_published_from_an_ext_bundle_is_answered_without_a_registered_bundle(
    client: httpx.Client,
) -> None:
    assert client.get("/api/v1/bundles").json() == []
    answer = client.post("/api/v1/repos", json={"kernel": TARGET_KERNEL})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["kernel"], answer.json()["latest_version"], answer.json()["build"]) == (
        TARGET_KERNEL,
        2,
        None,
    )
    forced = client.post("/api/v1/repos", json={"kernel": TARGET_KERNEL, "force": True})
    assert forced.status_code == 422 and "or DOCA-OFED repository fits" in forced.json()["detail"]
    other = client.post("/api/v1/repos", json={"kernel": "4.18.0-372.32.1.el8_6.x86_64"})
    assert other.status_code == 422 and "or DOCA-OFED repository fits" in other.json()["detail"]


def test_repofile_and_dib(client: httpx.Client, published_server: RunningServer) -> None:
    repo_id = client.get("/api/v1/repos").json()[0]["id"]
    repo_file = client.get(f"/api/v1/repos/{repo_id}/repofile")
    assert repo_file.headers["content-type"].startswith("text/plain")
    assert f"baseurl={published_server.url}{TREE}/latest/RPMS\n" in repo_file.text
    pinned = client.get(f"/api/v1/repos/{repo_id}/repofile", params={"version": 1}).text
    assert f"{TREE}/1/RPMS" in pinned
    dib = client.get(f"/api/v1/repos/{repo_id}/dib").json()
    assert dib["environment"]["DIB_MLNX_OFED_REPO"] == f"{published_server.url}{TREE}/latest"
    assert set(dib["environment"]) == {
        "DIB_MLNX_OFED_VERSION",
        "DIB_MLNX_OFED_REPO",
        "DIB_MLNX_OFED_DELETE_REPO",
        "DIB_MLNX_OFED_PKGLIST",
        "DIB_MLNX_OFED_REPO_FILE",
    }
    assert "      - mlnx-ofed\n" in dib["tripleo_yaml"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/repos/999", 404),
        ("/api/v1/repos/abc", 422),
        ("/api/v1/repos/999/repofile", 404),
        ("/api/v1/repos/1/repofile?version=99", 404),
        ("/api/v1/repos/1/repofile?version=-1", 422),
        ("/api/v1/repos/1/dib?version=x", 422),
    ],
)
def test_bad_requests_get_json_errors(client: httpx.Client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert "detail" in response.json()


def test_a_browser_gets_errors_as_pages_and_the_api_stays_json(client: httpx.Client) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    for path, status in (("/ui/repos/99999", 404), ("/ui/builds/x", 422), ("/repos/no-such-bundle/", 404)):
        page = client.get(path, headers=browser)
        assert page.status_code == status and page.headers["content-type"].startswith("text/html"), path
        assert f"<h1>{status} " in page.text and 'href="/ui/builds"' in page.text
        assert client.get(path).json()["detail"]  # a program asking for anything gets JSON, as before
    assert "99999" in client.get("/ui/repos/99999", headers=browser).text
    assert client.get("/api/v1/repos/99999", headers=browser).json()["detail"]  # the REST API: JSON always


def test_made_up_methods_cannot_grow_the_metrics(client: httpx.Client) -> None:
    """Labels from a client come from a closed set: 300 invented 8 KB methods add one series, not 300."""
    before = len(client.get("/metrics").text)
    for index in range(300):
        answer = client.request(f"X{index:04d}" + "A" * 8000, "/api/v1/health")
        assert answer.status_code in (400, 405)
    assert client.request("PURGE", "/api/v1/health").status_code == 405  # a method the app sees: counted as other
    metrics = client.get("/metrics").text
    assert 'method="other"' in metrics and "AAAA" not in metrics
    assert len(metrics) - before < 2000


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, b'{"kernel": NaN}'),
        ({"Content-Type": "application/json"}, b'{"kernel": "x", "image_id": 1e999}'),
        ({"Content-Type": "application/json"}, b'{"kernel": "\\ud800"}'),
        ({"Content-Type": "application/json"}, b'{"kernel": Infinity}'),
    ],
)
def test_unwritable_json_values_get_422_not_500(client: httpx.Client, headers: dict[str, str], body: bytes) -> None:
    answer = client.post("/api/v1/repos", content=body, headers=headers)
    assert answer.status_code == 422 and answer.json()["detail"]


def test_a_boundary_longer_than_the_parser_takes_is_422(client: httpx.Client) -> None:
    content_type = "multipart/form-data; boundary=" + "a" * 300
    answer = client.post("/api/v1/bundles", content=b"x", headers={"Content-Type": content_type})
    assert answer.status_code == 422 and "multipart" in answer.json()["detail"]


#: Range headers and what the tree answers for a file of more than 100 bytes (``None``: all of it, 200).
RANGES = [
    ("bytes=0-9", (0, 10)),
    ("bytes=10-", (10, None)),
    ("bytes=-10", (-10, None)),
    ("bytes=50-" + "9" * 18, (50, None)),  # past any size: to the end
    ("bytes=0-9,20-29", None),  # several ranges: the whole file (dnf and librepo ask for one)
    ("items=0-9", None),
    ("bytes=9-0", None),
    ("bytes=a-b", None),
    ("bytes=-", None),
    ("bytes=0-" + "9" * 5000, None),  # more digits than Python converts: ignored
]


@pytest.mark.parametrize(("header", "expected"), RANGES)
def test_range_headers(client: httpx.Client, header: str, expected: tuple[int, int | None] | None) -> None:
    href = an_rpm(client)
    whole = client.get(href).content
    answer = client.get(href, headers={"Range": header})
    if expected is None:
        assert (answer.status_code, answer.content) == (200, whole)
        assert "content-range" not in answer.headers
        return
    start, end = expected
    part = whole[start:end]
    first = start % len(whole)
    assert (answer.status_code, answer.content) == (206, part)
    assert answer.headers["content-range"] == f"bytes {first}-{first + len(part) - 1}/{len(whole)}"
    assert answer.headers["content-length"] == str(len(part))


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={beyond}-{far}", "bytes=-0"])
def test_unsatisfiable_ranges_get_416(client: httpx.Client, header: str) -> None:
    href = an_rpm(client)
    size = len(client.get(href).content)
    answer = client.get(href, headers={"Range": header.format(size=size, beyond=size + 100, far=size + 200)})
    assert answer.status_code == 416 and answer.headers["content-range"] == f"bytes */{size}"


def test_large_files_stream_whole_and_in_ranges(impatient_server: RunningServer) -> None:
    """Past 1 MiB (and for every range and HEAD) a file goes through Starlette's FileResponse in 1 MiB chunks."""
    repos = impatient_server.settings.data_dir / "repos"
    repos.mkdir(parents=True, exist_ok=True)
    whole = os.urandom(2 * 1024 * 1024 + 12345)
    (repos / "large.bin").write_bytes(whole)
    with httpx.Client(base_url=impatient_server.url, timeout=30) as client:
        answer = client.get("/repos/large.bin")
        assert (answer.status_code, answer.headers["content-length"]) == (200, str(len(whole)))
        assert answer.content == whole
        across = client.get("/repos/large.bin", headers={"Range": "bytes=1048000-1049999"})
        assert (across.status_code, across.content) == (206, whole[1048000:1050000])
        head = client.head("/repos/large.bin")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(whole)))
        etag = answer.headers["etag"]
        assert client.get("/repos/large.bin", headers={"If-None-Match": f"W/{etag}"}).status_code == 304


@pytest.mark.parametrize("value", ["bytes=0-\u00b2", "bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-"])
def test_odd_ranges_never_break_the_tree(published_server: RunningServer, value: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(published_server.url.rsplit(":", 1)[1]), timeout=10)
    connection.putrequest("GET", f"{TREE}/1/RPM-GPG-KEY-Mellanox")
    connection.putheader("Range", value.encode("utf-8"))
    connection.endheaders()
    answer = connection.getresponse()
    answer.read()
    connection.close()
    assert answer.status in (200, 206, 416)


def test_weak_etags_match_and_odd_names_are_linked_encoded(
    published_server: RunningServer, client: httpx.Client
) -> None:
    key = f"{TREE}/1/RPM-GPG-KEY-Mellanox"
    etag = client.get(key).headers["etag"]
    assert client.get(key, headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    odd = published_server.settings.data_dir / "repos" / "odd name#?&"
    odd.mkdir()
    try:
        listed = client.get("/repos/", params={"format": "json"}).json()["entries"]
        (entry,) = [entry for entry in listed if entry["name"] == "odd name#?&"]
        assert entry["href"] == "/repos/odd%20name%23%3F%26/"
        assert 'href="/repos/odd%20name%23%3F%26/"' in client.get("/repos/").text
        assert client.get(entry["href"]).status_code == 200
    finally:
        odd.rmdir()


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("impatient")
    server = start_server(root / "var", root / "serve.log", {"OFEDREPO_HTTP_TIMEOUT": "1.5"})
    yield server
    stop_server(server)


def connect(server: RunningServer) -> socket.socket:
    """A raw connection whose reads give up after 30 s: a server that never cuts a client off fails a test by
    that timeout, however slow this machine (the deadlines tested are a few seconds)."""
    address = urlsplit(server.url)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def closed_after(connection: socket.socket) -> tuple[float, bytes]:
    """Seconds until the server closes ``connection``, and what it said before."""
    start = time.monotonic()
    said = b""
    while chunk := connection.recv(4096):
        said += chunk
    return time.monotonic() - start, said


def _said_something(connection: socket.socket) -> bool:
    """Whether the server has sent something or closed its end (poll, not select: this process may hold
    descriptors past select's 1024)."""
    poller = select.poll()
    poller.register(connection, select.POLLIN | select.POLLHUP)
    return bool(poller.poll(0))


def _closed_by_peer(connection: socket.socket) -> bool:
    """Whether the server has closed its end (a read that would not block finds end of stream)."""
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        connection.setblocking(True)
        connection.settimeout(30)


def read_response(connection: socket.socket) -> bytes:
    """One whole response (head and ``Content-Length`` bytes of body) from a kept-alive connection."""
    said = b""
    while b"\r\n\r\n" not in said:
        said += connection.recv(4096)
    head, _, body = said.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += connection.recv(4096)
    return head + b"\r\n\r\n" + body


def test_a_client_that_connects_and_says_nothing_is_cut_off(impatient_server: RunningServer) -> None:
    with connect(impatient_server) as connection:
        waited, said = closed_after(connection)
    assert waited >= 1.0 and said == b""  # not before the 1.5 s deadline


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(impatient_server: RunningServer) -> None:
    """Each byte arrives well within the deadline, the whole head does not: the clock is not reset per byte,
    so the server cuts the client off while it is still sending (130 bytes take 13 s at this pace)."""
    head = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    sent = 0
    with connect(impatient_server) as connection:
        try:
            for byte in head:
                connection.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
                if sent % 5 == 0 and _closed_by_peer(connection):
                    break
        except OSError:
            pass  # reset: the server closed the connection while we were still sending
    assert sent < len(head), "the server let a head arrive a byte at a time for 13 s"


def test_a_body_that_stops_arriving_gets_408(impatient_server: RunningServer) -> None:
    with connect(impatient_server) as connection:
        head = (
            b"POST /api/v1/repos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        connection.sendall(head + b'{"kernel": ')
        waited, said = closed_after(connection)
    status_line, _, rest = said.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout" and waited >= 1.0
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["detail"] == "the request body stopped arriving for 1.5 s"


def test_a_body_trickled_a_byte_before_each_deadline_gets_408(impatient_server: RunningServer) -> None:
    """Each byte comes well within the pause allowed, the body as a whole far below the minimum rate: the client
    is cut off while it is still sending (300 bytes take 30 s at this pace)."""
    body = b'{"kernel": "' + b"a" * 280 + b'"}'
    head = b"POST /api/v1/repos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sent = 0
    with connect(impatient_server) as connection:
        connection.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body))
        for byte in body:
            connection.sendall(bytes([byte]))
            sent += 1
            time.sleep(0.1)
            if _said_something(connection):
                break
        _, said = closed_after(connection)
    assert sent < len(body), "the server let a body arrive a byte at a time for 30 s"
    status_line, _, rest = said.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", said
    detail = json.loads(rest.split(b"\r\n\r\n", 1)[1])["detail"]
    assert detail == "the request body arrived slower than 10240 bytes a second"


def test_an_upload_aborted_midway_is_one_log_line_not_a_traceback(impatient_server: RunningServer) -> None:
    boundary = b"b0undary"
    head = (
        b"POST /api/v1/bundles HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=" + boundary
        + b"\r\nContent-Length: 10000000\r\n\r\n--" + boundary
        + b'\r\nContent-Disposition: form-data; name="file"; filename="b.tgz"\r\n\r\n'
    )  # fmt: skip
    with connect(impatient_server) as connection:
        connection.sendall(head + bytes(200_000))
    log = impatient_server.settings.data_dir.parent / "serve.log"
    deadline = time.monotonic() + 30
    while "disconnected before its request body" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "disconnected before its request body was complete" in log.read_text()
    assert "Traceback" not in log.read_text()
    assert not list((impatient_server.settings.data_dir / "uploads").iterdir())  # nothing of it is kept


def test_an_idle_keep_alive_connection_is_closed_and_a_prompt_one_is_not(impatient_server: RunningServer) -> None:
    with connect(impatient_server) as connection:
        for _ in range(3):  # three requests, each well within the deadline, on one connection
            connection.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(connection).startswith(b"HTTP/1.1 200")
            time.sleep(0.5)
        closed_after(connection)  # then uvicorn's keep-alive timeout (5 s) closes it, well before 30 s


def test_the_api_docs_and_their_assets_come_from_the_service(client: httpx.Client) -> None:
    """FastAPI's default /docs loads Swagger UI from a CDN: blank on a network that reaches no other host."""
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200 and "://" not in page.text, page.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(asset.startswith("/docs/assets/") for asset in assets), assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
    assert client.get("/redoc").headers["Content-Security-Policy"] == "img-src 'self' data:"  # its maker's logo
    icon = client.get("/favicon.ico")  # what every browser asks a site for
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml" and b"<svg" in icon.content
