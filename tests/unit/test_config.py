"""Settings as they load: every path absolute, whatever the working directory."""

import os
from pathlib import Path

import pytest

from ofedrepo.config import Settings


def test_every_path_setting_is_absolute_once_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The default data dir is relative (``var``): tools run with another working directory (bubblewrap's mount
    sources, rpm's ``--dbpath``) need the absolute path."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("OFEDREPO_"):
            monkeypatch.delenv(name)
    path_fields = [name for name, field in Settings.model_fields.items() if "Path" in str(field.annotation)]
    values = {name: ["in/a", "in/b"] if "list" in str(Settings.model_fields[name].annotation) else f"rel/{name}"
              for name in path_fields}  # fmt: skip
    settings = Settings(**values)  # type: ignore[arg-type]
    for name in path_fields:
        value = getattr(settings, name)
        for path in value if isinstance(value, list) else [value]:
            assert path.is_absolute() and str(path).startswith(str(tmp_path)), (name, path)
    assert Settings().data_dir == tmp_path / "var"  # the default, as `make run` uses it
