"""The ``ofedrepo`` command line (Typer). Settings are loaded once, in the callback, and passed down."""

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn

from ofedrepo import db
from ofedrepo.config import Settings
from ofedrepo.errors import InvalidInput, OfedrepoError

app = typer.Typer(
    help="MLNX_OFED kernel modules for the kernel in your images, as yum repositories.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console(stderr=True)
Command = TypeVar("Command", bound=Callable[..., Any])


def reports_errors(command: Command) -> Command:
    """One clear line and a non-zero exit instead of a traceback: 2 for bad input, 1 for anything else."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OfedrepoError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
            raise typer.Exit(2 if isinstance(error, InvalidInput) else 1) from None

    return wrapper  # type: ignore[return-value]


def settings_of(context: typer.Context) -> Settings:
    settings: Settings = context.obj
    return settings


@app.callback()
def main_callback(
    context: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens, step by step.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        context.obj = Settings()
    except ValidationError as error:
        problems = "; ".join(f"OFEDREPO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        console.print(f"[bold red]error:[/] invalid settings: {problems}", highlight=False)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
@reports_errors
def db_upgrade(context: typer.Context) -> None:
    """Apply all database migrations (also done by `serve` at start)."""
    settings = settings_of(context)
    db.upgrade(db.make_engine(settings.resolved_database_url))
    console.print("database is up to date")


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

    def finish(self) -> None:
        self.step("Done", total=1)
        assert self.task is not None
        self.progress.update(self.task, completed=1)


@app.command()
@reports_errors
def publish(
    context: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="A bundle rebuilt for one kernel: `...-ext.tgz`, an ISO or a directory.")
    ],
    kernel: Annotated[
        str | None,
        typer.Option("--kernel", "-k", help="The kernel it was built for (default: read from the packages)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Publish a rebuilt MLNX_OFED bundle as a new version of its yum repository."""
    from ofedrepo.publish import Publisher

    settings = settings_of(context)
    engine = db.make_engine(settings.resolved_database_url)
    db.upgrade(engine)
    publisher = Publisher(settings, db.session_factory(engine))
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bars:
        progress = RichProgress(bars)
        result = publisher.publish(path, kernel=kernel, progress=progress)
        progress.finish()
    location = f"{settings.base_url}/repos/{result.bundle_name}/{result.kernel}/{result.version}"
    if as_json:
        payload = {
            "repo_id": result.repo_id,
            "bundle": result.bundle_name,
            "kernel": result.kernel,
            "version": result.version,
            "created": result.created,
            "packages": result.package_count,
            "signed": result.signed,
            "url": location,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    verb = "published as version" if result.created else "unchanged: identical to version"
    sys.stdout.write(
        f"{result.bundle_name} for {result.kernel}: {verb} {result.version} ({result.package_count} packages"
        f"{f', {len(result.signed)} signed with the site key' if result.signed else ''})\n"
        f"DIB_MLNX_OFED_REPO={settings.base_url}/repos/{result.bundle_name}/{result.kernel}/latest\n"
    )


@app.command()
@reports_errors
def serve(
    context: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (default: OFEDREPO_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: OFEDREPO_PORT).")] = None,
) -> None:
    """Serve the API, the published tree and the web pages (migrations are applied first)."""
    import uvicorn

    settings = settings_of(context)
    db.upgrade(db.make_engine(settings.resolved_database_url))
    console.print(f"serving on http://{host or settings.host}:{port or settings.port} (data in {settings.data_dir})")
    # By import string: the core library does not import the web layer; the app factory reads the same
    # OFEDREPO_* settings this command did.
    uvicorn.run(
        "api.app:create_app", factory=True, host=host or settings.host, port=port or settings.port, log_level="info"
    )


def main() -> None:
    app()
