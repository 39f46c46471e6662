"""Serving under load: the API and the published tree at 50 concurrent clients, against nginx on the same files.

    .venv/bin/python bench/serve.py [--duration 10] [--connections 50] [--workers CORES]

Publishes a synthetic bundle's ``-ext`` rebuild (with one 1 MiB package added) into a fresh data dir, then
starts ``ofedrepo serve --no-worker --workers CORES`` (a web process per core, as nginx runs a worker per core)
on SQLite, and again on PostgreSQL (a fresh database on 127.0.0.1:5432, skipped when it does not answer), and
Debian's nginx serving the same ``repos/`` directory. wrk (Debian's)
drives each URL for ``--duration`` seconds over ``--connections`` connections, and each API route is set
against ``GET /api/v1/ping``, an empty route of the same server stack (uvicorn, its protocol, the middleware)
measured in the same run:

- ``GET /api/v1/repos/{id}`` (a client polling a repo: the answer kept for a second, ``api/answers.py``);
- ``GET /api/v1/health`` and ``POST /api/v1/repos {"kernel": K}`` for the published kernel (each asks the
  database);
- a burst: ``GET /api/v1/repos/{id+1000}`` (a 404, from the database) for ``--burst`` seconds, then
  ``GET /api/v1/health`` as long, each over ``--connections``; errors and 5xx counted, then one health
  request timed;
- ``/repos/.../repomd.xml`` (a small file) and the 1 MiB rpm, from ofedrepo and from nginx.

Goals: the cached answer >= 0.5x the empty route and p50 <= 20 ms; no errors or 5xx in the burst, and health
answering within a second right after; small files >= 0.1x nginx's requests/s; the 1 MiB rpm >= 0.3x
nginx's throughput. Rewrites the "serve" section of docs/benchmarks.md.
"""

import sys
from pathlib import Path

# Run as a script, bench/ comes first on the path and bench/inspection.py would shadow the standard library's.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import httpx  # noqa: E402

from bench.report import write_section  # noqa: E402
from ofedrepo.bundles.archive import Limits, extract  # noqa: E402
from ofedrepo.config import Settings  # noqa: E402
from ofedrepo.db import make_engine, session_factory, upgrade  # noqa: E402
from ofedrepo.repos.publish import Publisher, PublishResult  # noqa: E402
from synthetic.bundle import (  # noqa: E402
    BundleSpec,
    add_kernel_support,
    make_bundle,
    make_kernel_sources,
    make_test_key,
)
from synthetic.vendor.install_pl import rpmbuild_argv  # noqa: E402

BIN = Path(sys.executable).parent
KERNEL = "4.18.0-372.26.1.el8_6.x86_64"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PAYLOAD_SPEC = """\
Name: bench-payload
Version: 1.0
Release: 1
Summary: one MiB of incompressible bytes, for serving benchmarks
License: MIT
AutoReqProv: no
%description
Serving benchmark payload.
%install
mkdir -p %{buildroot}/usr/share/bench-payload
head -c 1048576 /dev/urandom > %{buildroot}/usr/share/bench-payload/payload
%files
/usr/share/bench-payload/payload
"""


@dataclass
class Load:
    """What wrk measured for one URL."""

    requests_per_second: float
    transfer_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Connection errors and timeouts."""
    server_errors: int = 0
    """Answers of 5xx."""

    def line(self, what: str) -> str:
        return (
            f"{what}: {self.requests_per_second:,.0f} req/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"{self.transfer_per_second / 2**20:,.0f} MiB/s, {self.errors} errors"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def size_bytes(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)([KMGT]?B)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[unit]


#: wrk's Lua hooks counting 5xx answers apart (a response() hook slows wrk: only where they are counted).
COUNT_SERVER_ERRORS = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) server_errors = 0 end
function response(status, headers, body) if status >= 500 then server_errors = server_errors + 1 end end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("server_errors") end
  io.write("Server errors: " .. total .. "\\n")
end
"""


def wrk(url: str, duration: int, connections: int, work: Path, method: str = "GET", body: str = "",
        headers: dict[str, str] | None = None, count_5xx: bool = False) -> Load:  # fmt: skip
    """One wrk run: two threads (the machine's cores), ``connections`` connections, latency percentiles. With
    ``count_5xx``, answers other than 2xx/3xx are not errors, 5xx are counted apart (``server_errors``)."""
    script = work / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    lines = [f'wrk.method = "{method}"', f"wrk.body = [[{body}]]"]
    lines += [f'wrk.headers["{name}"] = [[{value}]]' for name, value in (headers or {}).items()]
    lines += [COUNT_SERVER_ERRORS] if count_5xx else []
    script.write_text("\n".join(lines) + "\n")
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Latency Distribution" not in output:
        raise RuntimeError(f"wrk said:\n{output}")
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx and not count_5xx else 0
    errors += sum(int(count) for count in socket_errors.groups()) if socket_errors else 0
    server_errors = re.search(r"Server errors: (\d+)", output)
    return Load(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        transfer_per_second=size_bytes(re.search(r"Transfer/sec:\s+(\S+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=milliseconds(percentiles["50"]),
        p99_ms=milliseconds(percentiles["99"]),
        errors=errors,
        server_errors=int(server_errors.group(1)) if server_errors else 0,
    )


def payload_rpm(work: Path) -> Path:
    top = work / "payload-rpmbuild"
    top.mkdir()
    (top / "payload.spec").write_text(PAYLOAD_SPEC)
    subprocess.run(rpmbuild_argv(top, "-bb", str(top / "payload.spec")), check=True, capture_output=True)
    return next((top / "RPMS").rglob("*.rpm"))


def ext_directory(work: Path) -> Path:
    """The bundle's ``-ext`` rebuild for KERNEL, unpacked, with the 1 MiB package beside its packages."""
    key = make_test_key(work / "key")
    bundle = make_bundle(BundleSpec(), key, work)
    sources = make_kernel_sources(work / "kernels", KERNEL)
    ext = add_kernel_support(bundle, KERNEL, sources, work / "ext")
    unpacked = work / "ext-unpacked"
    extract(ext, unpacked, Limits(max_bytes=2**32, max_members=10_000))
    (root,) = unpacked.iterdir()
    shutil.copy(payload_rpm(work), root / "RPMS")
    return root


def publish(data_dir: Path, database_url: str, ext: Path) -> PublishResult:
    settings = Settings(data_dir=data_dir, database_url=database_url)  # type: ignore[arg-type]
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    try:
        return Publisher(settings, session_factory(engine)).publish(ext)
    finally:
        engine.dispose()


def start_ofedrepo(data_dir: Path, database_url: str, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "OFEDREPO_DATA_DIR": str(data_dir), "OFEDREPO_PUBLIC_URL": url,
                   "OFEDREPO_DATABASE_URL": database_url}  # fmt: skip
    argv = [str(BIN / "ofedrepo"), "serve", "--no-worker", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as output:
        process = subprocess.Popen(argv, env=environment, stdout=output, stderr=output)
    wait_until_up(url + "/api/v1/health", process)
    return process, url


def start_nginx(root: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nginx as a distribution ships it, tuned as one would for static files: a worker per core, sendfile."""
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        f"worker_processes auto;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n"
        f"  client_body_temp_path {work}/nginx-body;\n  proxy_temp_path {work}/nginx-proxy;\n"
        f"  fastcgi_temp_path {work}/nginx-fastcgi;\n  uwsgi_temp_path {work}/nginx-uwsgi;\n"
        f"  scgi_temp_path {work}/nginx-scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n"
    )
    process = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"])
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + "/", process, accept_404=True)
    return process, url


def wait_until_up(url: str, process: subprocess.Popen[bytes], accept_404: bool = False) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, timeout=1).status_code
            if status == 200 or (accept_404 and status in (403, 404)):
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def postgres_database() -> str | None:
    """A fresh database on the local PostgreSQL, or None when it does not answer."""
    try:
        import psycopg

        name = f"ofedrepo_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    except Exception as error:  # noqa: BLE001 - any failure means: no PostgreSQL run
        print(f"PostgreSQL: skipped ({error})")
        return None


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def api_lines(label: str, url: str, repo_id: int, arguments: argparse.Namespace, work: Path) -> tuple[list[str], Load]:
    """Each route against the empty one, then the burst; the report's lines and the empty route's load."""
    body = f'{{"kernel": "{KERNEL}"}}'
    answered = httpx.post(f"{url}/api/v1/repos", content=body, headers={"Content-Type": "application/json"})
    assert answered.status_code == 200, answered.text
    run = {"duration": arguments.duration, "connections": arguments.connections, "work": work}
    empty = wrk(f"{url}/api/v1/ping", **run)
    lines = [f"- {label}, {empty.line('GET /api/v1/ping, the empty route')}"]
    routes = {
        "GET /api/v1/repos/{id}, the cached answer": (wrk(f"{url}/api/v1/repos/{repo_id}", **run), 0.5),
        "GET /api/v1/health (database)": (wrk(f"{url}/api/v1/health", **run), None),
        "POST /api/v1/repos, published kernel (database)": (
            wrk(f"{url}/api/v1/repos", method="POST", body=body, headers={"Content-Type": "application/json"}, **run),
            None,
        ),
    }
    for what, (load, goal) in routes.items():
        ratio = load.requests_per_second / empty.requests_per_second
        verdict = (
            ""
            if goal is None
            else (f"; goal >= {goal}x and p50 <= 20 ms: {'met' if ratio >= goal and load.p50_ms <= 20 else 'missed'}")
        )
        lines.append(f"- {label}, {load.line(what)}: **{ratio:.2f}x** the empty route{verdict}")
    burst = {"duration": arguments.burst, "connections": arguments.connections, "work": work, "count_5xx": True}
    missing = wrk(f"{url}/api/v1/repos/{repo_id + 1000}", **burst)
    health = wrk(f"{url}/api/v1/health", **burst)
    started = time.monotonic()
    after = httpx.get(f"{url}/api/v1/health", timeout=60)
    took = time.monotonic() - started
    errors = missing.errors + health.errors + missing.server_errors + health.server_errors
    lines.append(
        f"- {label}, burst of {2 * arguments.burst} s ({arguments.connections} connections, a 404 then health): "
        f"{missing.requests_per_second * arguments.burst + health.requests_per_second * arguments.burst:,.0f} "
        f"answers, **{errors} errors or 5xx**; health right after: {after.status_code} in **{took * 1000:.0f} ms** "
        f"(goal: 0 errors, under 1 s: {'met' if errors == 0 and took < 1 and after.status_code == 200 else 'missed'})"
    )
    return lines, empty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per URL")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="`ofedrepo serve --workers` (default: one per core, as nginx's `worker_processes auto`)",
    )
    parser.add_argument("--burst", type=int, default=6, help="seconds of each half of the burst")
    arguments = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: scripts/install-system-packages.sh --bench installs it")
    lines = [f"- {arguments.connections} connections, {arguments.duration} s per URL, wrk -t2, "
             f"`ofedrepo serve --workers {arguments.workers}`; nginx: worker_processes auto, sendfile"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ofedrepo-bench-") as scratch:
        work = Path(scratch)
        work.chmod(0o755)  # nginx's workers run as an unprivileged user and must reach the tree
        ext = ext_directory(work)
        databases = {"SQLite": f"sqlite:///{work / 'sqlite' / 'ofedrepo.db'}"}
        if postgres := postgres_database():
            databases["PostgreSQL"] = postgres
        files: dict[str, str] = {}
        try:
            for label, database_url in databases.items():
                data_dir = work / label.lower() / "var"
                result = publish(data_dir, database_url, ext)
                server, url = start_ofedrepo(data_dir, database_url, arguments.workers, work / f"{label}.log")
                try:
                    measured, empty = api_lines(label, url, result.repo_id, arguments, work)
                    lines += measured
                    print("\n".join(measured))
                    if label == "SQLite":
                        version = result.path.relative_to(data_dir)
                        payload = next((result.path / "RPMS").glob("bench-payload-*.rpm")).name
                        files = {
                            "repomd.xml": f"/{version}/RPMS/repodata/repomd.xml",
                            "1 MiB rpm": f"/{version}/RPMS/{payload}",
                        }
                        nginx, nginx_url = start_nginx(data_dir, work)
                        try:
                            for what, path in files.items():
                                ours = wrk(url + path, arguments.duration, arguments.connections, work)
                                theirs = wrk(nginx_url + path, arguments.duration, arguments.connections, work)
                                goal = 0.1 if what == "repomd.xml" else 0.3
                                ratio = ours.requests_per_second / theirs.requests_per_second
                                lines.append(f"- {ours.line(f'ofedrepo, {what}')}")
                                lines.append(f"- {theirs.line(f'nginx, {what}')}")
                                lines.append(
                                    f"- ratio ofedrepo / nginx, {what}: **{ratio:.2f}x** (goal >= {goal}x); ofedrepo /"
                                    f" its empty route: {ours.requests_per_second / empty.requests_per_second:.2f}x"
                                )
                                print("\n".join(lines[-3:]))
                        finally:
                            stop(nginx)
                finally:
                    stop(server)
        finally:
            if postgres:
                drop_database(postgres)
    write_section("serve", "\n".join(lines))


if __name__ == "__main__":
    main()
