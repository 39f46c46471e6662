"""`OFEDREPO_API_TOKENS`: unset means no authentication; set, it must name at least one token, and no blank one.

A variable that is set but holds nothing (a template that expanded to "", a stray comma) is a mistake, and
taking it for "no tokens" would silently switch authentication off.
"""

from pathlib import Path

import pytest
from pydantic import ValidationError

from ofedrepo.config import CONFIG_FILE_VARIABLE, Settings

BLANK = ["", " ", ",", " , ", ",,", "\t"]


def test_unset_means_no_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFEDREPO_API_TOKENS", raising=False)
    monkeypatch.delenv(CONFIG_FILE_VARIABLE, raising=False)
    assert Settings().api_tokens == []


def test_tokens_are_split_on_commas_and_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFEDREPO_API_TOKENS", " alpha , beta")
    assert Settings().api_tokens == ["alpha", "beta"]


@pytest.mark.parametrize("value", BLANK)
def test_a_blank_variable_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OFEDREPO_API_TOKENS", value)
    with pytest.raises(ValidationError, match="no token"):
        Settings()


@pytest.mark.parametrize("value", ["alpha,", "alpha, ,beta", ", alpha"])
def test_a_blank_token_beside_real_ones_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OFEDREPO_API_TOKENS", value)
    with pytest.raises(ValidationError, match="blank token"):
        Settings()


@pytest.mark.parametrize("value", ["\u200b", "alpha,be\u200bta", "a b", "caf\u00e9", "to\x7fken"])
def test_a_token_no_one_can_see_or_send_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OFEDREPO_API_TOKENS", value)
    with pytest.raises(ValidationError, match="tokens are printable ASCII"):
        Settings()


@pytest.mark.parametrize(
    ("toml", "message"),
    [("api_tokens = []", "no token"), ('api_tokens = ["", "  "]', "no token"), ('api_tokens = ["a", " "]', "blank")],
)
def test_a_blank_toml_list_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "ofedrepo.toml"
    config.write_text(toml + "\n")
    monkeypatch.delenv("OFEDREPO_API_TOKENS", raising=False)
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, str(config))
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_the_message_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFEDREPO_API_TOKENS", ",")
    with pytest.raises(ValidationError, match="names no token") as raised:
        Settings()
    (error,) = raised.value.errors()
    assert "\n" not in error["msg"] and "unset" in error["msg"]


@pytest.mark.parametrize("value", ["[]", '["a"]', " {}"])
def test_json_is_refused_never_taken_for_a_token(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """``[]`` became the one token "[]": authentication on, with a token nobody meant."""
    monkeypatch.setenv("OFEDREPO_API_TOKENS", value)
    with pytest.raises(ValidationError, match="not JSON"):
        Settings()
