"""Jinja2 templates shared by the HTML pages."""

from datetime import datetime
from pathlib import Path

from fastapi.templating import Jinja2Templates

from ofedrepo.storage import human_duration, human_size

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def short_time(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["human_size"] = human_size
templates.env.filters["short_time"] = short_time
templates.env.globals["duration"] = human_duration
