"""Every setting is documented in the README (as datasette does for its settings)."""

from pathlib import Path

from ofedrepo.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [name for name in Settings.model_fields if f"`OFEDREPO_{name.upper()}`" not in text]
    assert not missing, f"document these settings in README.md: {missing}"


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())
