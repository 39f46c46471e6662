"""`OFEDREPO_API_TOKENS`: calls that change state need a token; reads, the tree and /docs stay open."""

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api.auth import TOKEN_COOKIE
from tests.conftest import VENV_BIN, RunningServer, free_port, service_environment, start_server, stop_server

TOKENS = ("s3cret-alpha", "s3cret-beta")
KERNEL = "4.18.0-372.26.1.el8_6.x86_64"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("auth")
    running = start_server(root / "var", root / "serve.log", {"OFEDREPO_API_TOKENS": ",".join(TOKENS)})
    yield running
    stop_server(running)


def post_repo(server: RunningServer, **options: object) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/repos", json={"kernel": KERNEL}, timeout=30, **options)  # type: ignore[arg-type]


def test_without_a_token_a_mutating_call_gets_401(server: RunningServer) -> None:
    refused = post_repo(server)
    assert refused.status_code == 401 and "token" in refused.json()["detail"]
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    basic = post_repo(server, headers={"Authorization": "Basic czNjcmV0LWFscGhhOg=="})
    assert basic.status_code == 401


def test_a_wrong_token_gets_403(server: RunningServer) -> None:
    refused = post_repo(server, headers={"Authorization": "Bearer s3cret-alph"})
    assert refused.status_code == 403 and "detail" in refused.json()


@pytest.mark.parametrize("token", TOKENS)
def test_each_configured_token_is_accepted(server: RunningServer, token: str) -> None:
    accepted = post_repo(server, headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 422 and "or DOCA-OFED repository fits" in accepted.json()["detail"]


def test_the_login_cookie_is_accepted(server: RunningServer) -> None:
    accepted = post_repo(server, cookies={TOKEN_COOKIE: TOKENS[0]})
    assert accepted.status_code == 422


def test_uploads_are_refused_before_their_body_is_stored(server: RunningServer, tmp_path: Path) -> None:
    image = tmp_path / "image.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(4 * 1024 * 1024))
    for collection in ("images", "bundles"):
        with image.open("rb") as stream:
            refused = httpx.post(f"{server.url}/api/v1/{collection}", files={"file": stream}, timeout=30)
        assert refused.status_code == 401
    assert httpx.post(f"{server.url}/api/v1/builds/1/cancel", timeout=10).status_code == 401
    assert list((server.settings.data_dir / "uploads").iterdir()) == []


def test_reads_stay_open(server: RunningServer) -> None:
    for path in ("/api/v1/health", "/api/v1/repos", "/api/v1/builds", "/api/v1/images", "/repos/", "/docs"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path


def test_tokens_are_never_logged(server: RunningServer) -> None:
    post_repo(server, headers={"Authorization": f"Bearer {TOKENS[0]}"})
    post_repo(server, headers={"Authorization": "Bearer wrong-token-value"})
    log = (server.settings.data_dir.parent / "serve.log").read_text()
    assert all(secret not in log for secret in (*TOKENS, "wrong-token-value"))


def test_a_body_is_never_read_before_the_token_is_checked(server: RunningServer) -> None:
    """A client without a token cannot make the service hold a large body only to be told 401 afterwards: it
    declares 200 MB, sends 1 MB, and gets its 401 while 199 MB are still owed (a server that waited for the
    body would leave this read to time out)."""
    address = urlsplit(server.url)
    head = (
        b"POST /api/v1/repos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(head + b'{"kernel": "' + b"x" * (1024 * 1024))
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_json_bodies_are_capped(server: RunningServer) -> None:
    big = {"kernel": KERNEL, "distro": "x" * (128 * 1024)}
    refused = post_repo_json(server, big)
    assert refused.status_code == 413 and "detail" in refused.json()

    def chunked() -> Iterator[bytes]:  # no Content-Length to check up front
        yield b'{"kernel": "'
        yield from (b"x" * 16384 for _ in range(8))
        yield b'"}'

    headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/json"}
    streamed = httpx.post(f"{server.url}/api/v1/repos", content=chunked(), headers=headers, timeout=30)
    assert streamed.status_code == 413 and "at most 65536 bytes" in streamed.json()["detail"]


def post_repo_json(server: RunningServer, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/repos", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {TOKENS[0]}"})  # fmt: skip


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "https://evil.example"},
     {"Origin": "null"}],
)  # fmt: skip
def test_the_login_cookie_is_refused_on_requests_from_another_site(
    server: RunningServer, headers: dict[str, str]
) -> None:
    refused = post_repo(server, cookies={TOKEN_COOKIE: TOKENS[0]}, headers=headers)
    assert refused.status_code == 403 and "another site" in refused.json()["detail"]
    cancel = httpx.post(f"{server.url}/api/v1/builds/1/cancel", cookies={TOKEN_COOKIE: TOKENS[0]}, headers=headers)
    assert cancel.status_code == 403
    # The service's own pages: same origin.
    own = {"Sec-Fetch-Site": "same-origin", "Origin": server.url}
    assert post_repo(server, cookies={TOKEN_COOKIE: TOKENS[0]}, headers=own).status_code == 422
    # A bearer token is not sent by a browser on its own: no cross-site question arises.
    bearer = post_repo(server, headers={**headers, "Authorization": f"Bearer {TOKENS[0]}"})
    assert bearer.status_code == 422


def test_a_login_from_another_site_is_refused(server: RunningServer) -> None:
    forged = httpx.post(f"{server.url}/ui/login", data={"token": TOKENS[0]}, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and TOKEN_COOKIE not in forged.cookies
    own = httpx.post(f"{server.url}/ui/login", data={"token": TOKENS[0]}, headers={"Origin": server.url})
    assert own.status_code == 303 and TOKEN_COOKIE in own.cookies


@pytest.mark.parametrize("value", ["", " ", ",", " , "])
@pytest.mark.parametrize("command", [["serve", "--no-worker"], ["worker"]])
def test_a_blank_token_list_stops_the_service_with_one_line(tmp_path: Path, value: str, command: list[str]) -> None:
    """Set but blank is a mistake (a template that expanded to nothing), never "no authentication"."""
    port = free_port()
    environment = service_environment(tmp_path / "var", f"http://127.0.0.1:{port}", {"OFEDREPO_API_TOKENS": value})
    argv = [str(VENV_BIN / "ofedrepo"), *command, *(["--port", str(port)] if command[0] == "serve" else [])]
    ran = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "OFEDREPO_API_TOKENS" in lines[0] and "no token" in lines[0], ran.stderr
    assert "Traceback" not in ran.stderr
    with pytest.raises(httpx.TransportError, match="(?i)connect"):
        httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
