"""`?format=env` answers: `NAME='value'` lines a POSIX shell can source and get every value back exactly."""

import subprocess
from pathlib import Path

import pytest

from api.schemas import env_response

HOSTILE = 'exited with status 1: $(touch {marker}) `touch {marker}` it\'s "quoted" \\ back\\slash\nsecond line\n'


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_sourced_answer_gives_back_each_value_and_runs_nothing(tmp_path: Path, shell: str) -> None:
    marker = tmp_path / "ran"
    fields: dict[str, str | int | None] = {
        "OFEDREPO_BUILD_ID": 7,
        "OFEDREPO_KERNEL": f"4.18.0$(touch {marker})'`touch {marker}`",
        "OFEDREPO_VERSION": None,
        "OFEDREPO_ERROR": HOSTILE.format(marker=marker),
        "OFEDREPO_EMPTY_QUOTES": "''",
    }
    answer = tmp_path / "answer.env"
    answer.write_bytes(env_response(fields).body)
    script = ". ./answer.env && " + " && ".join(f'printf "%s\\0" "${name}"' for name in fields)
    ran = subprocess.run([shell, "-c", script], cwd=tmp_path, capture_output=True, check=True)
    values = ran.stdout.split(b"\0")[:-1]
    assert [value.decode() for value in values] == ["" if value is None else str(value) for value in fields.values()]
    assert not marker.exists()


def test_every_value_is_single_quoted_and_names_stay_plain() -> None:
    body = env_response({"OFEDREPO_REPO_ID": 1, "OFEDREPO_BUILD_STATE": "running", "OFEDREPO_VERSION": None}).body
    assert body == b"OFEDREPO_REPO_ID='1'\nOFEDREPO_BUILD_STATE='running'\nOFEDREPO_VERSION=''\n"
    assert env_response({"OFEDREPO_ERROR": "it's"}).body == b"OFEDREPO_ERROR='it'\\''s'\n"
