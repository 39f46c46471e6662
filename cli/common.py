"""What every command shares: the console, settings, sessions, one line per error, progress bars."""

import socket
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from ofedrepo import db
from ofedrepo.config import Settings
from ofedrepo.errors import Conflict, InvalidInput, NotFound, OfedrepoError, disk_full, disk_full_message

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

console = Console(stderr=True)
Command = TypeVar("Command", bound=Callable[..., Any])


def reports_errors(command: Command) -> Command:
    """One clear line and a non-zero exit instead of a traceback: 2 for bad input (what it names does not exist
    or cannot be done in its state too), 1 for anything else."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OfedrepoError as error:
            console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(error, InvalidInput | NotFound | Conflict) else 1) from None
        except OSError as error:
            if not disk_full(error):
                raise
            console.print(f"[bold red]error:[/] {escape(disk_full_message(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def migrated_sessions(settings: Settings) -> "sessionmaker[Session]":
    """Sessions on an up-to-date schema: every command that needs the database migrates it first."""
    engine = db.make_engine(settings.resolved_database_url)
    db.upgrade(engine)
    return db.session_factory(engine)


def print_table(table: RenderableType) -> None:
    """A table on standard output. Identifiers (kernels, bundle names, URLs) are never folded, cut or dropped
    with their column: a table is as wide as its content, piped or not (Rich would fit it to 80 columns, or to
    the terminal by cutting cells); on a terminal a long line wraps as the terminal wraps it, so that copying a
    kernel release copies all of it. Each line ends where its text ends: Rich pads every cell to its column's
    width, which left a short row as wide as the longest (126 columns of blanks after ``inspect``'s "os")."""
    output = Console(highlight=False, width=100_000)
    with output.capture() as captured:
        output.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def settings_of(context: typer.Context) -> Settings:
    settings: Settings = context.obj
    return settings


class RichProgress:
    """Draws the publisher's steps as Rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def step(self, description: str, total: int | None = None) -> None:
        if self.task is not None:
            task = self.progress.tasks[self.task]
            self.progress.update(self.task, completed=task.total or 1, total=task.total or 1)
        self.task = self.progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)

    def note(self, text: str) -> None:
        self.progress.console.print(f"  {escape(text)}", highlight=False, soft_wrap=True)

    def finish(self) -> None:
        self.step("Done", total=1)
        assert self.task is not None
        self.progress.update(self.task, completed=1)


def hashing_progress() -> Progress:
    """Bytes-read bars for hashing what the user named (a terminal only; gone once done)."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def address_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served on (another process listens there), or None. ``SO_REUSEADDR`` as
    uvicorn sets it: a port a stopped server left in TIME_WAIT is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.strerror or str(error)
    return None
