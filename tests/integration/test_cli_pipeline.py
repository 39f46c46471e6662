"""`ofedrepo bundle add`, `ofedrepo worker` and `ofedrepo request --wait` as an operator runs them."""

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from synthetic.bundle import BundleSpec, make_kernel_sources
from tests.conftest import SYNTHETIC_BUILD_HOST, VENV_BIN

KERNEL = "4.18.0-372.19.1.el8_6.x86_64"
MISSING_KERNEL = "4.18.0-372.70.1.el8_6.x86_64"


def cli_environment(tmp_path: Path) -> dict[str, str]:
    """What an operator's shell holds: no data dir named (the default, ``var`` in the working directory, is what
    ``make run`` uses), the kernel sources and the synthetic build host's settings."""
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, KERNEL)
    environment = {
        **{name: value for name, value in os.environ.items() if name != "OFEDREPO_DATA_DIR"},
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources),
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
        "COLUMNS": "200",
        **SYNTHETIC_BUILD_HOST,
    }
    environment.pop("OFEDREPO_DATABASE_URL", None)
    return environment


def ofedrepo(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ofedrepo"), *arguments], env=environment, capture_output=True, text=True, timeout=300
    )


def test_bundle_add_then_request_and_follow_the_build(
    tmp_path: Path, bundle_tgz: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the defaults: the relative data dir ``var`` (every tool the build runs needs absolute paths)."""
    monkeypatch.chdir(tmp_path)
    environment = cli_environment(tmp_path)
    added = ofedrepo(environment, "bundle", "add", str(bundle_tgz), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["name"] == BundleSpec().name
    assert ofedrepo(environment, "bundle", "add", str(bundle_tgz)).returncode == 0

    # No worker yet: the waiting request says why nothing happens, then follows the build once one starts.
    waiting = subprocess.Popen(
        [str(VENV_BIN / "ofedrepo"), "request", "--kernel", KERNEL, "--wait"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert waiting.stdout is not None
    said = ""
    while "is not taken yet" not in said:
        line = waiting.stdout.readline()
        assert line, f"request --wait ended without saying why its build waits: {said}"
        said += line
    assert "is not taken yet: no x86_64 worker" in said, said
    worker = subprocess.Popen(
        [str(VENV_BIN / "ofedrepo"), "worker"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        rest, _ = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, said + rest
        assert "mlnx_add_kernel_support.sh" in rest  # the log was followed
        assert rest.rstrip().endswith(f"/repos/{BundleSpec().name}/{KERNEL}/latest")
        assert (tmp_path / "var" / "repos" / BundleSpec().name / KERNEL / "latest" / "RPMS").is_dir()
        again = ofedrepo(environment, "request", "--kernel", KERNEL)
        assert again.returncode == 0 and "already built" in again.stdout

        failed = ofedrepo(environment, "request", "--kernel", MISSING_KERNEL, "--wait")
        assert failed.returncode != 0 and "failed" in failed.stderr and "Traceback" not in failed.stderr
        assert f"no kernel sources for {MISSING_KERNEL}" in failed.stdout + failed.stderr

        # The listings, piped: one line per row, identifiers whole, the failure's reason shown.
        builds = ofedrepo(environment, "builds")
        (succeeded,) = [line for line in builds.stdout.splitlines() if " succeeded " in line]
        assert BundleSpec().name in succeeded and KERNEL in succeeded, builds.stdout
        (failed_line,) = ofedrepo(environment, "builds", "--state", "failed").stdout.splitlines()[2:]
        assert MISSING_KERNEL in failed_line and "no kernel sources" in failed_line
        repos = ofedrepo(environment, "repos").stdout
        assert f"/repos/{BundleSpec().name}/{KERNEL}/latest" in repos, repos
        assert [bundle["name"] for bundle in json.loads(ofedrepo(environment, "bundles", "--json").stdout)] == [
            BundleSpec().name
        ]
        done = json.loads(ofedrepo(environment, "builds", "--json", "--state", "succeeded").stdout)[0]["id"]
        too_late = ofedrepo(environment, "cancel", str(done))
        assert too_late.returncode != 0 and too_late.stderr.startswith("error: ") and "Traceback" not in too_late.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


def test_bad_input_gets_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environment = cli_environment(tmp_path)
    not_a_bundle = ofedrepo(environment, "bundle", "add", "/etc/hostname")
    assert not_a_bundle.returncode != 0 and "Traceback" not in not_a_bundle.stderr and not_a_bundle.stderr.strip()
    hostile = ofedrepo(environment, "request", "--kernel", "4.18.0; rm -rf /")
    assert hostile.returncode != 0 and "Traceback" not in hostile.stderr and hostile.stderr.strip()
    neither = ofedrepo(environment, "request")
    assert neither.returncode != 0 and "exactly one of --kernel and --image" in neither.stderr
    nothing_fits = ofedrepo(environment, "request", "--kernel", KERNEL)
    assert nothing_fits.returncode != 0 and "or DOCA-OFED repository fits" in nothing_fits.stderr
    with socket.socket() as taken:  # `make run` left serving, say
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = ofedrepo(environment, "serve", "--port", str(port))
    assert busy.returncode != 0 and "Traceback" not in busy.stderr
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in busy.stderr, busy.stderr
    no_build = ofedrepo(environment, "cancel", "7")
    assert no_build.returncode != 0 and no_build.stderr == "error: no build with id 7\n"
    for command in ("inspect", "request", "builds", "bundle add"):  # flags are shown as flags
        shown = ofedrepo(environment, *command.split(), "--help")
        assert shown.returncode == 0 and "<bool>" not in shown.stdout, shown.stdout


def test_cancel_from_the_cli_says_one_line_in_every_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle_tgz: Path
) -> None:
    """No worker runs: the request stays queued, and cancel ends it at once; again, and on ids that name
    nothing or cannot, it answers in one line (exit 2 for what the command was asked wrongly)."""
    monkeypatch.chdir(tmp_path)
    environment = cli_environment(tmp_path)
    assert ofedrepo(environment, "bundle", "add", str(bundle_tgz)).returncode == 0
    asked = ofedrepo(environment, "request", "--kernel", KERNEL)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    (queued,) = json.loads(ofedrepo(environment, "builds", "--json", "--state", "queued").stdout)
    for _ in range(2):  # the second finds it cancelled already
        cancelled = ofedrepo(environment, "cancel", str(queued["id"]))
        said = (cancelled.returncode, cancelled.stdout, cancelled.stderr)
        assert said == (0, f"build {queued['id']}: cancelled\n", "")
    for build_id, message in (("7", "no build with id 7"), ("99999999999999999999", "less than or equal to")):
        refused = ofedrepo(environment, "cancel", build_id)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr, refused
