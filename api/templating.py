"""Jinja2 templates shared by the HTML pages."""

import re
from datetime import datetime
from pathlib import Path

from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from ofedrepo.storage import human_duration, human_size

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def short_time(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


_HYPHENATED = re.compile(r"\S*-\S*")


def whole_words(text: str) -> Markup:
    """``text`` escaped, each word with a hyphen in it kept on one line (``.word``): browsers break lines after a
    hyphen, and a kernel release in a reason (``4.18.0-372.26.1.el8_6.x86_64``) must stay whole."""
    return Markup(_HYPHENATED.sub(lambda word: f'<span class="word">{word.group()}</span>', str(escape(text))))


templates.env.filters["human_size"] = human_size
templates.env.filters["short_time"] = short_time
templates.env.filters["whole_words"] = whole_words
templates.env.globals["duration"] = human_duration
