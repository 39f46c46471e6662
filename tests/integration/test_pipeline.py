"""Image to repo through the running service: bundles, requests, the queue, workers, the runner, verification.

Everything is real: the server and ``ofedrepo worker`` processes, SQLite or PostgreSQL, the synthetic
bundle's own ``mlnx_add_kernel_support.sh`` (rpmbuild), libguestfs for the image and dnf reading the result.
Kernel sources are stand-ins (synthetic/bundle.py): a few of them ask the script to build
slowly, so that a test can watch, cancel or kill a build half-way.
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elftools.elf.elffile import ELFFile
from prometheus_client.parser import text_string_to_metric_families

from synthetic import bundle as vendor
from synthetic import images as images
from synthetic.bundle import (
    BundleSpec,
    make_bundle,
    make_kernel_devel_repo,
    make_kernel_sources,
    make_tgz,
)
from tests.conftest import (
    RunningServer,
    free_port,
    start_server,
    start_worker,
    stop_server,
)
from tests.integration.test_dnf import dnf

#: Kernels of the bundle's distro (rhel8.6), each set up for one story.
SLOW_KERNEL = "4.18.0-372.41.1.el8_6.x86_64"  # its script runs for a while, printing a line a second
WRONG_KERNEL = "4.18.0-372.52.1.el8_6.x86_64"  # its sources say another release: modules carry the wrong vermagic
MISSING_KERNEL = "4.18.0-372.70.1.el8_6.x86_64"  # no sources anywhere
DEVEL_REPO_KERNEL = "4.18.0-372.80.1.el8_6.x86_64"  # only kernel-devel in a yum repository
PLAIN_KERNEL = "4.18.0-372.19.1.el8_6.x86_64"  # sources at hand, builds quickly
METRICS_KERNEL = "4.18.0-372.16.1.el8_6.x86_64"
ENDED = {"succeeded", "failed", "cancelled"}
SLOW_SECONDS = 40


@pytest.fixture(scope="module")
def sources_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kernel-sources")
    for kernel in (images.ROCKY_OLD, PLAIN_KERNEL, METRICS_KERNEL):
        make_kernel_sources(root, kernel)
    make_kernel_sources(root, SLOW_KERNEL, build_seconds=SLOW_SECONDS)
    make_kernel_sources(root, WRONG_KERNEL, release="4.18.0-372.9.1.el8_6.x86_64")
    return root


@pytest.fixture(scope="module")
def distro_key(tmp_path_factory: pytest.TempPathFactory, test_key: vendor.TestKey) -> Path:
    """The distro's public key as an operator has it (``/etc/pki/rpm-gpg/...``): the tests' signing key."""
    key_file = tmp_path_factory.mktemp("rpm-gpg") / "RPM-GPG-KEY-distro"
    key_file.write_text(test_key.public_armored)
    return key_file


@pytest.fixture(scope="module")
def devel_repo_url(tmp_path_factory: pytest.TempPathFactory, test_key: vendor.TestKey) -> Iterator[str]:
    """A yum repository holding kernel-devel-DEVEL_REPO_KERNEL, signed by the distro's key, served over loopback
    like a distro mirror."""
    repo = make_kernel_devel_repo(tmp_path_factory.mktemp("mirror") / "BaseOS", DEVEL_REPO_KERNEL, test_key)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(repo), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "repodata/repomd.xml", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    sources_root: Path,
    devel_repo_url: str,
    distro_key: Path,
    bundle_tgz: Path,
) -> Iterator[RunningServer]:
    """`ofedrepo serve` with its embedded worker (two slots) and the bundle uploaded."""
    root = tmp_path_factory.mktemp("pipeline")
    environment = {
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources_root),
        "OFEDREPO_KERNEL_DEVEL_REPOS": f"{devel_repo_url} gpgkey={distro_key}",
        "OFEDREPO_WORKER_CONCURRENCY": "2",
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
    }
    running = start_server(root / "var", root / "serve.log", environment, worker=True)
    try:
        first = upload(running, "bundles", bundle_tgz)
        assert first.status_code == 201, first.text
        yield running
    finally:
        stop_server(running)


def upload(server: RunningServer, collection: str, path: Path) -> httpx.Response:
    with path.open("rb") as stream:
        return httpx.post(f"{server.url}/api/v1/{collection}", files={"file": (path.name, stream)}, timeout=300)


def request(server: RunningServer, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/repos", json=body, timeout=30)


def build_of(server: RunningServer, build_id: int) -> dict[str, object]:
    return dict(httpx.get(f"{server.url}/api/v1/builds/{build_id}", timeout=10).json())


def build_log(server: RunningServer, build_id: int) -> str:
    return httpx.get(f"{server.url}/api/v1/builds/{build_id}/log", timeout=10).text


def wait_for(server: RunningServer, build_id: int, states: set[str], timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        build = build_of(server, build_id)
        if build["state"] in states:
            return build
        time.sleep(0.2)
    raise AssertionError(f"build {build_id} is still {build['state']}:\n{build_log(server, build_id)}")


def wait_for_log(server: RunningServer, build_id: int, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = build_log(server, build_id)
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"build {build_id}'s log never said {text!r}:\n{build_log(server, build_id)}")


def script_processes(kernel: str) -> list[int]:
    """Processes running add-kernel-support for ``kernel``, found through /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-k" in arguments and kernel.encode() in arguments and any(b"add_kernel_support" in a for a in arguments):
            found.append(int(entry.name))
    return found


def module_vermagic(module: Path) -> str:
    with module.open("rb") as handle:
        modinfo = ELFFile(handle).get_section_by_name(".modinfo").data()
    field = next(entry for entry in modinfo.split(b"\0") if entry.startswith(b"vermagic="))
    return field.decode().removeprefix("vermagic=").split()[0]


def test_an_image_booting_the_bundles_ga_kernel_gets_its_own_packages_without_a_rebuild(
    tmp_path: Path, service: RunningServer, bundle_tgz: Path, disk_images: dict[str, Path]
) -> None:
    """Rocky 8.6 boots 4.18.0-372.9.1.el8, RHEL 8.6's GA kernel: the bundle's kmods are built for it."""
    assert upload(service, "bundles", bundle_tgz).status_code == 200  # known by its sha256
    uploaded = upload(service, "images", disk_images[images.ROCKY8.name])
    assert uploaded.status_code == 201, uploaded.text
    image = uploaded.json()

    asked = request(service, image_id=image["id"])
    assert asked.status_code == 202, asked.text
    repo = asked.json()
    assert (repo["kernel"], repo["bundle"], repo["distro"]) == (images.ROCKY_OLD, BundleSpec().name, "rhel8.6")
    assert images.ROCKY_OLD == BundleSpec().ga_kernel and repo["build"]["rebuild"] is False
    build = wait_for(service, repo["build"]["id"], ENDED)
    assert build["state"] == "succeeded", build_log(service, repo["build"]["id"])
    assert (build["version_number"], build["image_id"], build["attempts"], build["rebuild"]) == (
        1,
        image["id"],
        1,
        False,
    )

    again = request(service, image_id=image["id"])
    assert again.status_code == 200, again.text
    published = again.json()
    assert published["latest_version"] == 1 and published["build"]["id"] == build["id"]
    log = build_log(service, build["id"])
    assert "no rebuild" in log and "verified:" in log and "succeeded: version 1" in log
    assert "$ bash" not in log and "mlnx_add_kernel_support.sh output" not in log  # the script never ran

    # What DIB's mlnx-ofed element does with DIB_MLNX_OFED_REPO=<latest_url>.
    latest = published["latest_url"]
    definition = (
        f"[mlnx_ofed]\nname=MLNX_OFED\nbaseurl={latest}/RPMS\nenabled=1\ngpgcheck=1\n"
        f"gpgkey={latest}/RPM-GPG-KEY-Mellanox\n"
    )
    listed = dnf(tmp_path / "query", definition, "repoquery", "-q", "-l", "*").stdout.split()
    kernels = {path.split("/")[3] for path in listed if path.startswith("/lib/modules/")}
    assert kernels == {images.ROCKY_OLD}

    dnf(tmp_path / "install", definition, "install", "mlnx-ofed-hypervisor")
    modules = sorted((tmp_path / "install" / "installroot" / "lib" / "modules" / images.ROCKY_OLD).rglob("*.ko"))
    assert modules and {module_vermagic(module) for module in modules} == {images.ROCKY_OLD}


def test_force_builds_again_and_publishes_a_new_version(service: RunningServer) -> None:
    first = request(service, kernel=PLAIN_KERNEL)
    assert first.status_code == 202, first.text
    assert wait_for(service, first.json()["build"]["id"], ENDED)["state"] == "succeeded"
    assert request(service, kernel=PLAIN_KERNEL).status_code == 200

    forced = request(service, kernel=PLAIN_KERNEL, force=True)
    assert forced.status_code == 202 and forced.json()["build"]["id"] != first.json()["build"]["id"]
    assert wait_for(service, forced.json()["build"]["id"], ENDED)["version_number"] == 2
    ended = httpx.post(f"{service.url}/api/v1/builds/{forced.json()['build']['id']}/cancel", timeout=10)
    assert ended.status_code == 409 and "succeeded" in ended.json()["detail"]


def test_missing_kernel_sources_fail_the_build_naming_the_package(service: RunningServer) -> None:
    build_id = request(service, kernel=MISSING_KERNEL).json()["build"]["id"]
    build = wait_for(service, build_id, ENDED)
    assert build["state"] == "failed"
    assert f"no kernel sources for {MISSING_KERNEL}" in str(build["error"])
    log = build_log(service, build_id)
    assert f"FAILED: no kernel sources for {MISSING_KERNEL}" in log and f"kernel-devel-{MISSING_KERNEL}" in log


def test_kernel_devel_is_fetched_from_a_yum_repository(service: RunningServer, devel_repo_url: str) -> None:
    build_id = request(service, kernel=DEVEL_REPO_KERNEL).json()["build"]["id"]
    build = wait_for(service, build_id, ENDED)
    log = build_log(service, build_id)
    assert build["state"] == "succeeded", log
    assert f"kernel sources: downloading {devel_repo_url}Packages/kernel-devel-" in log
    cached = service.settings.data_dir / "kernel-sources" / DEVEL_REPO_KERNEL
    assert (cached / "usr" / "src" / "kernels" / DEVEL_REPO_KERNEL / "Makefile").is_file()


def test_modules_built_for_another_kernel_fail_verification(service: RunningServer) -> None:
    build_id = request(service, kernel=WRONG_KERNEL).json()["build"]["id"]
    build = wait_for(service, build_id, ENDED)
    assert build["state"] == "failed"
    error = str(build["error"])
    assert ".ko was built for 4.18.0-372.9.1.el8_6.x86_64, not " + WRONG_KERNEL in error
    assert error.split(":")[0].endswith(".rpm")  # the offending package is named
    repo = httpx.get(f"{service.url}/api/v1/repos/{build['repo_id']}", timeout=10).json()
    assert repo["versions"] == []


def test_a_running_build_streams_its_log_and_cancel_kills_its_process_group(service: RunningServer) -> None:
    build_id = request(service, kernel=SLOW_KERNEL).json()["build"]["id"]
    wait_for_log(service, build_id, "(2/")
    before = httpx.get(f"{service.url}/api/v1/builds/{build_id}/log", timeout=10)
    assert before.headers["X-Build-State"] == "running"
    offset = int(before.headers["X-Log-Offset"])
    wait_for_log(service, build_id, "(4/")  # two more seconds of the script's output
    grown = httpx.get(f"{service.url}/api/v1/builds/{build_id}/log", params={"offset": offset}, timeout=10)
    assert "compiling kernel modules" in grown.text
    assert script_processes(SLOW_KERNEL)

    cancelled = httpx.post(f"{service.url}/api/v1/builds/{build_id}/cancel", timeout=10)
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
    build = wait_for(service, build_id, ENDED, timeout=15)
    assert build["state"] == "cancelled"
    assert "cancelled by request" in build_log(service, build_id)
    assert script_processes(SLOW_KERNEL) == []
    again = httpx.post(f"{service.url}/api/v1/builds/{build_id}/cancel", timeout=10)
    assert again.status_code == 202 and again.json()["state"] == "cancelled"  # cancelling is idempotent


def test_requests_that_cannot_be_served_say_why(service: RunningServer) -> None:
    no_bundle = request(service, kernel="5.14.0-284.11.1.el9_2.x86_64")
    assert no_bundle.status_code == 422
    assert "rhel9.2" in no_bundle.json()["detail"] and BundleSpec().name in no_bundle.json()["detail"]
    wrong_version = request(service, kernel=PLAIN_KERNEL, ofed_version="23.10-1.1.9.0")
    assert wrong_version.status_code == 422 and BundleSpec().name in wrong_version.json()["detail"]
    for hostile in ("../../etc/passwd", "4.18.0-372.el8.x86_64; rm -rf /", ""):
        refused = request(service, kernel=hostile)
        assert refused.status_code == 422 and "detail" in refused.json(), hostile
    assert request(service).status_code == 422
    assert request(service, kernel=PLAIN_KERNEL, image_id=1).status_code == 422
    unknown = request(service, image_id=999_999)
    assert unknown.status_code == 404 and "detail" in unknown.json()
    assert httpx.post(f"{service.url}/api/v1/builds/999999/cancel", timeout=10).status_code == 404
    assert httpx.get(f"{service.url}/api/v1/builds/999999/log", timeout=10).status_code == 404


def test_bundles_api(service: RunningServer, tmp_path: Path) -> None:
    listed = httpx.get(f"{service.url}/api/v1/bundles", timeout=10).json()
    assert [bundle["name"] for bundle in listed] == [BundleSpec().name]
    bundle = httpx.get(f"{service.url}/api/v1/bundles/{listed[0]['id']}", timeout=10).json()
    assert (bundle["ofed_version"], bundle["distro"], bundle["arch"]) == ("5.8-3.0.7.0", "rhel8.6", "x86_64")
    assert httpx.get(f"{service.url}/api/v1/bundles/999999", timeout=10).status_code == 404

    content = tmp_path / "content"
    content.mkdir()
    (content / "README").write_text("not an MLNX_OFED bundle\n")
    not_a_bundle = tmp_path / "MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64.tgz"
    subprocess.run(["tar", "-czf", str(not_a_bundle), "-C", str(content), "."], check=True)
    refused = upload(service, "bundles", not_a_bundle)
    assert refused.status_code == 422 and "detail" in refused.json()
    garbage = tmp_path / "garbage.tgz"
    garbage.write_bytes(os.urandom(4096))
    assert upload(service, "bundles", garbage).status_code == 422
    outside = httpx.post(f"{service.url}/api/v1/bundles", json={"path": "/etc"}, timeout=10)
    assert outside.status_code in (403, 422) and "detail" in outside.json()
    assert [path.name for path in (service.settings.data_dir / "uploads").iterdir()] == []


def start_stack(
    root: Path, sources_root: Path, bundle_tgz: Path, environment: dict[str, str], lease_seconds: float = 60
) -> RunningServer:
    """A server without an embedded worker, the bundle uploaded; workers are started by the test."""
    environment = {
        **environment,
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources_root),
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        "OFEDREPO_BUILD_LEASE_SECONDS": str(lease_seconds),
    }
    server = start_server(root / "var", root / "serve.log", environment, worker=False)
    uploaded = upload(server, "bundles", bundle_tgz)
    assert uploaded.status_code == 201, uploaded.text
    return server


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_fifty_identical_requests_make_one_build(
    tmp_path: Path, sources_root: Path, bundle_tgz: Path, database_url: str
) -> None:
    """On SQLite (one file) and PostgreSQL, with three worker processes of two slots each."""
    environment = {"OFEDREPO_DATABASE_URL": database_url}
    server = start_stack(tmp_path, sources_root, bundle_tgz, environment)
    workers = [start_worker(server, tmp_path / f"worker-{index}.log", concurrency=2) for index in range(3)]
    try:
        with httpx.Client(timeout=60) as client, concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(
                pool.map(lambda _: client.post(f"{server.url}/api/v1/repos", json={"kernel": PLAIN_KERNEL}), range(50))
            )
        assert all(answer.status_code in (200, 202) for answer in answers), [a.text for a in answers]
        build_ids = {answer.json()["build"]["id"] for answer in answers}
        assert len(build_ids) == 1
        (build_id,) = build_ids
        build = wait_for(server, build_id, ENDED)
        assert build["state"] == "succeeded", build_log(server, build_id)
        assert len(httpx.get(f"{server.url}/api/v1/builds", timeout=10).json()) == 1
        health = httpx.get(f"{server.url}/api/v1/health", timeout=10).json()
        assert health["workers"] == 3 and all(worker["arches"] == ["x86_64"] for worker in health["worker_list"])
        assert request(server, kernel=PLAIN_KERNEL).status_code == 200
    finally:
        stop_workers(workers)
        stop_server(server)


def test_a_killed_worker_build_is_finished_by_another(tmp_path: Path, sources_root: Path, bundle_tgz: Path) -> None:
    server = start_stack(tmp_path, sources_root, bundle_tgz, {}, lease_seconds=2)
    doomed = start_worker(server, tmp_path / "doomed.log")
    workers = [doomed]
    try:
        build_id = request(server, kernel=SLOW_KERNEL).json()["build"]["id"]
        wait_for_log(server, build_id, "(3/")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        survivor = start_worker(server, tmp_path / "survivor.log")
        workers.append(survivor)
        build = wait_for(server, build_id, ENDED, timeout=SLOW_SECONDS + 120)
        log = build_log(server, build_id)
        assert build["state"] == "succeeded", log
        assert build["attempts"] == 2 and build["version_number"] == 1
        assert "stopped answering: back in the queue" in log and "attempt 2 of" in log
        repo = httpx.get(f"{server.url}/api/v1/repos/{build['repo_id']}", timeout=10).json()
        assert [version["number"] for version in repo["versions"]] == [1]
        published = server.settings.data_dir / "repos" / BundleSpec().name / SLOW_KERNEL
        assert sorted(path.name for path in published.iterdir()) == ["1", "latest"]
    finally:
        stop_workers(workers)
        stop_server(server)


def test_cancel_a_queued_build(tmp_path: Path, sources_root: Path, bundle_tgz: Path) -> None:
    server = start_stack(tmp_path, sources_root, bundle_tgz, {})
    try:
        build_id = request(server, kernel=PLAIN_KERNEL).json()["build"]["id"]
        assert build_of(server, build_id)["state"] == "queued"
        cancelled = httpx.post(f"{server.url}/api/v1/builds/{build_id}/cancel", timeout=10)
        assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
        # A worker arriving later finds nothing to do; a new request queues a new build.
        worker = start_worker(server, tmp_path / "worker.log")
        try:
            fresh = request(server, kernel=PLAIN_KERNEL).json()["build"]["id"]
            assert fresh != build_id and wait_for(server, fresh, ENDED)["state"] == "succeeded"
            # The worker has claimed and built since: the cancelled build was never taken.
            cancelled_build = build_of(server, build_id)
            assert cancelled_build["state"] == "cancelled" and cancelled_build["started_at"] is None, cancelled_build
        finally:
            stop_workers([worker])
    finally:
        stop_server(server)


def metric_samples(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = httpx.get(f"{server.url}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_describe_builds_queue_publishes_and_requests(service: RunningServer) -> None:
    build_id = request(service, kernel=METRICS_KERNEL).json()["build"]["id"]
    assert wait_for(service, build_id, ENDED)["state"] == "succeeded"
    samples = metric_samples(service)
    assert samples[("ofedrepo_builds", frozenset({("state", "succeeded")}))] >= 1
    assert ("ofedrepo_queue_depth", frozenset()) in samples
    assert samples[("ofedrepo_published_versions", frozenset())] >= 1
    assert samples[("ofedrepo_workers", frozenset())] == 1
    assert samples[("ofedrepo_build_duration_seconds_count", frozenset({("state", "succeeded")}))] >= 1
    assert samples[("ofedrepo_publish_duration_seconds_count", frozenset())] >= 1
    posted = frozenset({("method", "POST"), ("route", "/api/v1/repos"), ("status", "202")})
    assert samples[("ofedrepo_http_requests_total", posted)] >= 1
    assert all(name.startswith("ofedrepo_") for name, _ in samples if not name.startswith(("python_", "process_")))


def test_an_aarch64_bundle_waits_for_a_worker_declared_for_aarch64(tmp_path: Path, test_key: vendor.TestKey) -> None:
    """On an x86_64-only deployment the build stays queued, saying why; a worker declared for aarch64 takes it.
    Here that worker runs on this x86_64 host, where the script (as NVIDIA's, naming its output after
    ``uname -m``) makes an x86_64 bundle, which the build refuses: a wrong declaration publishes nothing."""
    spec = BundleSpec("24.10-1.1.4.0", "rhel9.4", "aarch64", "5.14.0-427.13.1.el9_4.aarch64")
    bundle = make_bundle(spec, test_key, tmp_path / "bundle")
    kernel = "5.14.0-427.42.1.el9_4.aarch64"
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, kernel)
    server = start_stack(tmp_path, sources, make_tgz(bundle, tmp_path / f"{bundle.name}.tgz"), {})
    workers = [start_worker(server, tmp_path / "x86.log", environment={"OFEDREPO_WORKER_ARCHES": "x86_64"})]
    try:
        asked = request(server, kernel=kernel)
        assert asked.status_code == 202, asked.text
        build_id = asked.json()["build"]["id"]
        health_url = f"{server.url}/api/v1/health"
        deadline = time.monotonic() + 60
        while httpx.get(health_url, timeout=10).json()["workers"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        build = httpx.get(f"{server.url}/api/v1/builds/{build_id}", timeout=10).json()
        assert build["state"] == "queued" and build["waiting"].startswith("no aarch64 worker"), build
        assert "no aarch64 worker" in httpx.get(f"{server.url}/ui/builds/{build_id}", timeout=10).text
        # Everywhere a client or a person meets the build: the builds list and page, the repo's own answer (JSON,
        # and the env lines the DIB element reads), the repo and builds pages.
        listed = httpx.get(f"{server.url}/api/v1/builds", timeout=10).json()
        assert listed[0]["waiting"].startswith("no aarch64 worker"), listed
        assert [build["id"] for build in httpx.get(f"{server.url}/api/v1/builds?state=queued").json()] == [build_id]
        assert httpx.get(f"{server.url}/api/v1/builds?state=succeeded&limit=5").json() == []
        assert httpx.get(f"{server.url}/api/v1/builds?state=nonsense").status_code == 422
        repo_url = f"{server.url}/api/v1/repos/{build['repo_id']}"
        assert httpx.get(repo_url, timeout=10).json()["build"]["waiting"].startswith("no aarch64 worker")
        assert "OFEDREPO_BUILD_WAITING='no aarch64 worker" in httpx.get(f"{repo_url}?format=env", timeout=10).text
        again = httpx.post(f"{server.url}/api/v1/repos?format=env", json={"kernel": kernel}, timeout=10)
        assert again.status_code == 202 and "OFEDREPO_BUILD_WAITING='no aarch64 worker" in again.text, again.text
        for page in (f"/ui/repos/{build['repo_id']}", "/ui/builds", "/"):
            assert "no aarch64 worker" in httpx.get(f"{server.url}{page}", timeout=10).text, page
        arm = start_worker(server, tmp_path / "arm.log", environment={"OFEDREPO_WORKER_ARCHES": "aarch64"})
        workers.append(arm)
        done = wait_for(server, build_id, ENDED, timeout=240)
        log = build_log(server, build_id)
        assert f":{arm.pid}:" in log.splitlines()[0] and f":{workers[0].pid}:" not in log, log
        assert done["state"] == "failed" and "-x86_64-ext is named like another bundle" in done["error"], log
        assert (
            "declares aarch64 (OFEDREPO_WORKER_ARCHES) but runs the vendor's tool on this x86_64 host"
            in (tmp_path / "arm.log").read_text()
        )  # said when it started
        arches = {tuple(worker["arches"]) for worker in httpx.get(health_url, timeout=10).json()["worker_list"]}
        assert arches == {("x86_64",), ("aarch64",)}
    finally:
        stop_workers(workers)
        stop_server(server)
