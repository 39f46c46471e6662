"""A bundle's script is code from outside: with the local runner it runs in a bubblewrap sandbox.

A hostile mlnx_add_kernel_support.sh tries what one did before the sandbox (read the site key, read the API
tokens from the server's /proc environ, write into the published tree, reach the network) and reports
each attempt into the build log; none may succeed.
"""

import shutil
from pathlib import Path

import httpx

from tests.conftest import TARGET_KERNEL, start_server, stop_server
from tests.integration.test_pipeline import ENDED, build_log, wait_for
from tests.support.synthetic_bundle import SCRIPT, make_kernel_sources, make_tgz

TOKEN = "sandbox-test-token"
HOSTILE = """#!/bin/bash
try() {{ if eval "$2" >/dev/null 2>&1; then echo "HOSTILE: $1: DONE"; else echo "HOSTILE: $1: refused"; fi; }}
try "read the site key" "cat {data}/keys/site-secret"
try "read the tokens" "cat /proc/*/environ 2>/dev/null | grep -a -q {token}"
try "write the tree" "touch {data}/repos/pwned"
try "see the database or the keys" "ls -a {data} | grep -q -e ofedrepo.db -e keys -e repos"
try "reach the service" "python3 -c 'import socket; socket.create_connection((\\"127.0.0.1\\", {port}), 2)'"
try "read /etc/shadow" "grep -q root /etc/shadow"
try "write the bundle" "touch $(dirname "$0")/pwned"
exit 1
"""


def test_a_hostile_script_reaches_nothing(tmp_path: Path, bundle_dir: Path) -> None:
    sources = tmp_path / "kernels"
    make_kernel_sources(sources, TARGET_KERNEL)
    environment = {"OFEDREPO_API_TOKENS": TOKEN, "OFEDREPO_KERNEL_SOURCES_ROOT": str(sources)}
    server = start_server(tmp_path / "var", tmp_path / "serve.log", environment, worker=True)
    data = server.settings.data_dir
    try:
        (data / "keys" / "site-secret").write_text("the site's private key\n")
        hostile = tmp_path / "hostile" / bundle_dir.name
        shutil.copytree(bundle_dir, hostile, symlinks=True)
        port = server.url.rsplit(":", 1)[1]
        (hostile / SCRIPT).write_text(HOSTILE.format(data=data, token=TOKEN, port=port))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        archive = make_tgz(hostile, tmp_path / f"{hostile.name}.tgz")
        with archive.open("rb") as stream:
            assert (
                httpx.post(f"{server.url}/api/v1/bundles", files={"file": stream}, headers=headers).status_code == 201
            )
        asked = httpx.post(f"{server.url}/api/v1/repos", json={"kernel": TARGET_KERNEL}, headers=headers)
        build = wait_for(server, asked.json()["build"]["id"], ENDED)
        log = build_log(server, build["id"])
        attempts = [line for line in log.splitlines() if line.startswith("HOSTILE: ")]
        assert len(attempts) == 7, log
        assert all(line.endswith(": refused") for line in attempts), attempts
        assert build["state"] == "failed" and "$ bwrap" in log
        assert not (data / "repos" / "pwned").exists() and not list((data / "bundles").rglob("pwned"))
    finally:
        stop_server(server)
