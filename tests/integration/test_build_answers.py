"""What shell clients read from a running server: `?format=env` answers sourced by `sh` and `bash`, and the
build log followed by offset (an offset past the end answers from the end, never a 500)."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ofedrepo.db import make_engine, session_factory
from ofedrepo.models import Build, Repo
from tests.conftest import RunningServer, start_server, stop_server

MARKER = "/tmp/ofedrepo-env-injection-marker"
HOSTILE_ERROR = (
    f'exited with status 1: $(touch {MARKER}) `touch {MARKER}` it\'s "quoted" \\ back\\slash\n'
    f"second line ${{IFS}} '\nOFEDREPO_VERSION='9'\n"
)
HOSTILE_KERNEL = f"4.18.0$(touch {MARKER})`touch {MARKER}`'\"\\"
LOG = b"line one\nline two\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("build-answers")
    running = start_server(root / "var", root / "serve.log")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def failed_build(server: RunningServer) -> Build:
    """A failed build whose error and kernel hold what a shell would run, with a short log."""
    engine = make_engine(server.settings.resolved_database_url)
    with session_factory(engine)() as session:
        repo = Repo(bundle_name="MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64", kernel=HOSTILE_KERNEL,
                    ofed_version="5.8-3.0.7.0", distro="rhel8.6", arch="x86_64")  # fmt: skip
        build = Build(repo=repo, kernel=HOSTILE_KERNEL, fingerprint="f" * 64, state="failed", error=HOSTILE_ERROR)
        session.add(build)
        session.commit()
        session.refresh(build)
        session.expunge(build)
    engine.dispose()
    server.settings.data_dir.joinpath("builds", f"{build.id}.log").write_bytes(LOG)
    return build


def sourced(shell: str, answer: bytes, names: list[str], directory: Path) -> list[str]:
    (directory / "answer.env").write_bytes(answer)
    script = ". ./answer.env && " + " && ".join(f'printf "%s\\0" "${name}"' for name in names)
    ran = subprocess.run([shell, "-c", script], cwd=directory, capture_output=True, check=True)
    return [value.decode() for value in ran.stdout.split(b"\0")[:-1]]


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_an_env_answer_sourced_by_a_shell_gives_back_the_values_and_runs_nothing(
    server: RunningServer, failed_build: Build, shell: str, tmp_path: Path
) -> None:
    Path(MARKER).unlink(missing_ok=True)
    build = httpx.get(f"{server.url}/api/v1/builds/{failed_build.id}?format=env")
    assert build.status_code == 200 and build.headers["content-type"].startswith("text/plain")
    names = ["OFEDREPO_BUILD_ID", "OFEDREPO_BUILD_STATE", "OFEDREPO_KERNEL", "OFEDREPO_VERSION", "OFEDREPO_ERROR"]
    assert sourced(shell, build.content, names, tmp_path) == [
        str(failed_build.id), "failed", HOSTILE_KERNEL, "", HOSTILE_ERROR
    ]  # fmt: skip
    repo = httpx.get(f"{server.url}/api/v1/repos/{failed_build.repo_id}?format=env")
    assert repo.status_code == 200
    assert sourced(shell, repo.content, ["OFEDREPO_KERNEL", "OFEDREPO_BUILD_STATE"], tmp_path) == [
        HOSTILE_KERNEL, "failed"
    ]  # fmt: skip
    assert not Path(MARKER).exists()


def log_from(server: RunningServer, build_id: int, offset: int | str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/builds/{build_id}/log", params={"offset": offset}, timeout=10)


@pytest.mark.parametrize("offset", [len(LOG), len(LOG) + 1, 2**31, 17592186044415, 2**53 - 1])
def test_an_offset_at_or_past_the_end_answers_empty_from_the_end(
    server: RunningServer, failed_build: Build, offset: int
) -> None:
    answer = log_from(server, failed_build.id, offset)
    assert answer.status_code == 200, answer.text
    assert answer.content == b"" and answer.headers["X-Log-Offset"] == str(len(LOG))
    assert answer.headers["X-Build-State"] == "failed"


def test_an_offset_inside_the_log_reads_from_there(server: RunningServer, failed_build: Build) -> None:
    answer = log_from(server, failed_build.id, 5)
    assert answer.content == LOG[5:] and answer.headers["X-Log-Offset"] == str(len(LOG))


def test_a_log_not_yet_written_answers_from_its_start(server: RunningServer, failed_build: Build) -> None:
    log = server.settings.data_dir / "builds" / f"{failed_build.id}.log"
    log.rename(log.with_suffix(".kept"))
    try:
        answer = log_from(server, failed_build.id, 1000)
        assert answer.status_code == 200 and answer.content == b"" and answer.headers["X-Log-Offset"] == "0"
    finally:
        log.with_suffix(".kept").rename(log)


@pytest.mark.parametrize("offset", [-1, 2**53, 2**64, "x"])
def test_an_offset_out_of_range_is_a_422_with_a_detail(
    server: RunningServer, failed_build: Build, offset: object
) -> None:
    answer = log_from(server, failed_build.id, offset)  # type: ignore[arg-type]
    assert answer.status_code == 422 and "detail" in answer.json()


def test_the_offset_bound_is_in_the_openapi_schema(server: RunningServer) -> None:
    operation = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/api/v1/builds/{build_id}/log"]["get"]
    (offset,) = [parameter for parameter in operation["parameters"] if parameter["name"] == "offset"]
    assert offset["schema"]["minimum"] == 0 and offset["schema"]["maximum"] == 2**53 - 1
