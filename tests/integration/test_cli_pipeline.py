"""`ofedrepo bundle add`, `ofedrepo worker` and `ofedrepo request --wait` as an operator runs them."""

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import SYNTHETIC_BUILD_HOST, VENV_BIN
from tests.support.synthetic_bundle import BundleSpec, make_kernel_sources

KERNEL = "4.18.0-372.19.1.el8_6.x86_64"
MISSING_KERNEL = "4.18.0-372.70.1.el8_6.x86_64"


def cli_environment(tmp_path: Path) -> dict[str, str]:
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, KERNEL)
    environment = {
        **os.environ,
        "OFEDREPO_DATA_DIR": str(tmp_path / "var"),
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


def test_bundle_add_then_request_and_follow_the_build(tmp_path: Path, bundle_tgz: Path) -> None:
    environment = cli_environment(tmp_path)
    added = ofedrepo(environment, "bundle", "add", str(bundle_tgz), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["name"] == BundleSpec().name
    assert ofedrepo(environment, "bundle", "add", str(bundle_tgz)).returncode == 0

    worker = subprocess.Popen(
        [str(VENV_BIN / "ofedrepo"), "worker"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        built = ofedrepo(environment, "request", "--kernel", KERNEL, "--wait")
        assert built.returncode == 0, built.stdout + built.stderr
        assert "mlnx_add_kernel_support.sh" in built.stdout + built.stderr  # the log was followed
        assert built.stdout.rstrip().endswith(f"/repos/{BundleSpec().name}/{KERNEL}/latest")
        again = ofedrepo(environment, "request", "--kernel", KERNEL)
        assert again.returncode == 0 and "already built" in again.stdout

        failed = ofedrepo(environment, "request", "--kernel", MISSING_KERNEL, "--wait")
        assert failed.returncode != 0 and "failed" in failed.stderr and "Traceback" not in failed.stderr
        assert f"no kernel sources for {MISSING_KERNEL}" in failed.stdout + failed.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


def test_bad_input_gets_one_clear_line(tmp_path: Path) -> None:
    environment = cli_environment(tmp_path)
    not_a_bundle = ofedrepo(environment, "bundle", "add", "/etc/hostname")
    assert not_a_bundle.returncode != 0 and "Traceback" not in not_a_bundle.stderr and not_a_bundle.stderr.strip()
    hostile = ofedrepo(environment, "request", "--kernel", "4.18.0; rm -rf /")
    assert hostile.returncode != 0 and "Traceback" not in hostile.stderr and hostile.stderr.strip()
    neither = ofedrepo(environment, "request")
    assert neither.returncode != 0 and "exactly one of --kernel and --image" in neither.stderr
    nothing_fits = ofedrepo(environment, "request", "--kernel", KERNEL)
    assert nothing_fits.returncode != 0 and "or DOCA-OFED repository fits" in nothing_fits.stderr
