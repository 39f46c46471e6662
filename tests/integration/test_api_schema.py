"""Schemathesis against the running server: generated requests for every operation in /openapi.json.

Its CLI runs its checks (no 5xx, documented status codes and content types, response schemas, schema-invalid
requests rejected, calls without the token refused, stateful links) with a fixed seed, holding a valid token.
One check is left out: `positive_data_acceptance` wants every schema-valid request accepted, but a body can
match the schema and still be refused by design with a 422 saying why (an upload that is not an MLNX_OFED
bundle, a kernel no bundle fits, a request naming neither a kernel nor an image).
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, start_server, stop_server

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
TOKEN = "schemathesis-token"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("schemathesis")
    environment = {"OFEDREPO_IMPORT_DIRS": str(root / "imports"), "OFEDREPO_API_TOKENS": TOKEN}
    running = start_server(root / "var", root / "serve.log", environment)
    yield running
    stop_server(running)


def test_the_live_api_keeps_its_contract(live_server: RunningServer, tmp_path: Path) -> None:
    completed = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{live_server.url}/openapi.json",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--header", f"Authorization: Bearer {TOKEN}", "--max-examples", "30", "--seed", "1",
         "--no-color", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=540, cwd=tmp_path,  # within pytest's 600 s
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-20000:] + completed.stderr[-5000:]
