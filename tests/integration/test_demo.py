"""`ofedrepo demo --no-serve` as a newcomer runs it: the whole job on synthetic inputs, through its own service,
proven by a dnf install. Its inputs are the session's (the same generators make them; making them again would
only repeat rpmbuild and an appliance launch that other tests already pay for)."""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

from ofedrepo.repos.signing import agent_homes_under
from synthetic.images import DEMO, ROCKY_NEW
from tests.conftest import VENV_BIN


def test_the_demo_does_the_whole_job_and_proves_it_with_an_install(
    tmp_path: Path, bundle_tgz: Path, disk_images: dict[str, Path]
) -> None:
    inputs = tmp_path / "demo" / "inputs"
    (inputs / "images").mkdir(parents=True)
    shutil.copy(bundle_tgz, inputs / bundle_tgz.name)
    shutil.copy(disk_images[DEMO.name], inputs / "images" / disk_images[DEMO.name].name)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("OFEDREPO_")}
    with socket.socket() as taken:  # `make run` serving on the default port: the demo serves on another
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        default = taken.getsockname()[1]
        done = subprocess.run(
            [str(VENV_BIN / "ofedrepo"), "demo", "--no-serve", "--dir", str(tmp_path / "demo")],
            env={**environment, "OFEDREPO_PORT": str(default)}, cwd=tmp_path, capture_output=True, text=True,
            timeout=540,
        )  # fmt: skip
        busy = subprocess.run(
            [str(VENV_BIN / "ofedrepo"), "demo", "--dir", str(tmp_path / "demo"), "--port", str(default)],
            env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=540,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Port {default} is in use" in done.stderr, done.stderr
    assert f"boots {ROCKY_NEW}" in done.stderr and "mlnx_add_kernel_support.sh" in done.stderr  # the log, shown
    assert f"mlx5_core.ko: vermagic {ROCKY_NEW}" in done.stderr, done.stderr
    served = re.search(r"DIB_MLNX_OFED_REPO=http://127\.0\.0\.1:(\d+)/repos/", done.stdout)
    assert served and int(served.group(1)) != default, done.stdout
    assert "Traceback" not in done.stderr
    assert "Reusing the small Rocky Linux 8.6 disk image" in done.stderr  # the one copied in above, not made
    assert f"--no-serve: the service stops now; `OFEDREPO_DATA_DIR={tmp_path / 'demo' / 'var'}" in done.stderr
    assert agent_homes_under(tmp_path / "demo") == []  # the site key's and dnf's gpg-agents stopped with it
    assert busy.returncode != 0 and f"port {default} is in use on 127.0.0.1: pass another with --port" in busy.stderr
