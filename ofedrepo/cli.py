"""The ``ofedrepo`` command line (Typer). Settings are loaded once, in the callback, and passed down."""

import importlib
import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ofedrepo import db
from ofedrepo.config import Settings
from ofedrepo.errors import InvalidInput, OfedrepoError, disk_full, disk_full_message

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ofedrepo.images import ImageView

app = typer.Typer(
    help="MLNX_OFED kernel modules for the kernel in your images, as yum repositories.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
bundle_app = typer.Typer(help="MLNX_OFED bundles.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")

console = Console(stderr=True)
Command = TypeVar("Command", bound=Callable[..., Any])


def reports_errors(command: Command) -> Command:
    """One clear line and a non-zero exit instead of a traceback: 2 for bad input, 1 for anything else."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OfedrepoError as error:
            console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(error, InvalidInput) else 1) from None
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
        console.print(f"[bold red]error:[/] invalid settings: {escape(problems)}", highlight=False, soft_wrap=True)
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

    def note(self, text: str) -> None:
        self.progress.console.print(f"  {escape(text)}", highlight=False, soft_wrap=True)

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
    publisher = Publisher(settings, migrated_sessions(settings))
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
            "left_out": result.left_out,
            "regenerated": result.regenerated,
            "url": location,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    verb = "published as version" if result.created else "unchanged: identical to version"
    details = [f"{result.package_count} packages"]
    details += [f"{len(result.signed)} signed with the site key"] if result.signed else []
    details += [f"{len(result.left_out)} left out (other kernels)"] if result.left_out else []
    details += [f"{len(result.regenerated)} metadata packages regenerated"] if result.regenerated else []
    sys.stdout.write(
        f"{result.bundle_name} for {result.kernel}: {verb} {result.version} ({', '.join(details)})\n"
        f"DIB_MLNX_OFED_REPO={settings.base_url}/repos/{result.bundle_name}/{result.kernel}/latest\n"
    )


@app.command()
@reports_errors
def inspect(
    context: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="qcow2 or raw disk images; several share one appliance launch.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: an object, or a list for several images.")
    ] = False,
) -> None:
    """Tell which kernel an image boots and which MLNX_OFED bundle fits it (read-only, nothing is mounted)."""
    from ofedrepo.images import ImageCatalog
    from ofedrepo.uploads import hash_candidate

    settings = settings_of(context)
    catalog = ImageCatalog(settings, migrated_sessions(settings))
    for path in images:
        if not path.is_file():
            raise InvalidInput(f"{path}: no such file")
    total = sum(path.stat().st_size for path in images)
    with hashing_progress() as bars:
        hashing = bars.add_task("Hashing", total=total)
        candidates = [hash_candidate(path, lambda size: bars.advance(hashing, size)) for path in images]
        bars.remove_task(hashing)
        booting = bars.add_task("Inspecting", total=None, visible=False)

        def show_boot(count: int) -> None:
            description = f"Booting the libguestfs appliance for {count} image{'s' * (count > 1)} and inspecting"
            bars.update(booting, description=description, visible=True)

        outcomes = catalog.inspect(candidates, booting=show_boot)
    failed = [outcome for outcome in outcomes if outcome.error]
    for outcome in failed:
        console.print(f"[bold red]error:[/] {escape(str(outcome.error))}", highlight=False, soft_wrap=True)
    if as_json:
        documents = [
            outcome.image.as_dict()
            if outcome.image
            else {"path": str(outcome.candidate.path), "error": str(outcome.error)}
            for outcome in outcomes
        ]
        sys.stdout.write(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2) + "\n")
    else:
        output = Console(highlight=False)
        for outcome in outcomes:
            if outcome.image:
                output.print(image_table(outcome.image))
    if failed:
        raise typer.Exit(2)


def hashing_progress() -> Progress:
    """Bytes-read bars for hashing what the user named (a terminal only; gone once done)."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def image_table(image: "ImageView") -> Table:
    """One image as a two-column table: readable in 80 columns, where a wide table would fold every cell."""
    # Every value comes from the image or its uploader: escaped, so that "[...]" is never read as markup.
    table = Table(title=escape(image.filename), title_justify="left", box=box.SIMPLE, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    others = [kernel for kernel in image.kernels if kernel != image.default_kernel]
    rows = {
        "os": f"{image.distro} {image.os_version} ({image.arch})",
        "default kernel": image.default_kernel,
        "decided by": image.default_kernel_rule,
        "other kernels": "\n".join(others) or "-",
        "MLNX_OFED distro": image.ofed_distro or "-",
        "sha256": image.sha256,
    }
    for field, value in rows.items():
        table.add_row(field, escape(value))
    return table


@app.command()
@reports_errors
def gc(
    context: typer.Context,
    keep: Annotated[
        int | None, typer.Option(min=1, help="Keep N newest versions per repo (default: OFEDREPO_GC_KEEP_VERSIONS).")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option(help="Remove only versions older than 30d, 12h... (default: OFEDREPO_GC_OLDER_THAN).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False,
) -> None:
    """Remove old repo versions (never `latest`, never one that was `latest` within the grace period),
    unreferenced bundle trees and stale build scratch; print what was freed."""
    from ofedrepo.retention import collect_garbage, policy_from
    from ofedrepo.storage import human_size

    settings = settings_of(context)
    policy = policy_from(settings, keep, older_than)
    report = collect_garbage(settings, migrated_sessions(settings), policy, dry_run)
    verb = "would free" if dry_run else "freed"
    table = Table(show_header=True, box=None)
    for column in ("what", "path", "size"):
        table.add_column(column)
    for item in report.freed:
        table.add_row(escape(item.what), escape(str(item.path)), human_size(item.size))
    if report.freed:
        Console(highlight=False).print(table)
    sys.stdout.write(f"{verb} {human_size(report.total)} in {len(report.freed)} item(s)\n")


@app.command()
@reports_errors
def serve(
    context: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (default: OFEDREPO_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: OFEDREPO_PORT).")] = None,
    worker: Annotated[
        bool | None,
        typer.Option("--worker/--no-worker", help="Run an embedded worker (default: OFEDREPO_EMBEDDED_WORKER)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Web server processes (one per core serves the most requests).")
    ] = 1,
) -> None:
    """Serve the API, the published tree and the web pages, with an embedded worker (migrations first)."""
    import uvicorn

    settings = settings_of(context)
    if workers > 1:
        from ofedrepo.metrics import share_between_processes
        from ofedrepo.storage import DataDir

        share_between_processes(DataDir(settings.data_dir).ensure().root / "run" / "metrics")
    db.upgrade(db.make_engine(settings.resolved_database_url))
    embedded = _worker_module().Worker(settings) if (settings.embedded_worker if worker is None else worker) else None
    console.print(
        f"serving on http://{host or settings.host}:{port or settings.port} (data in {settings.data_dir}"
        f"{', with an embedded worker' if embedded else ', no worker: run `ofedrepo worker`'})"
    )
    if embedded:
        embedded.start()
    try:
        # By import string: the core library does not import the web layer; the app factory (and the protocol,
        # which puts a deadline on request heads) read the same OFEDREPO_* settings this command did.
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            log_level="info",
            workers=workers,
            http="api.timeouts:DeadlineH11Protocol",
        )
    finally:
        if embedded:
            embedded.stop()


@app.command("worker")
@reports_errors
def worker_command(
    context: typer.Context,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=64, help="Builds run at once (default: OFEDREPO_WORKER_CONCURRENCY).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve this worker's own metrics (publish durations) on this port."),
    ] = None,
) -> None:
    """Claim queued builds and run them until stopped (SIGTERM/SIGINT put running builds back in the queue)."""
    settings = settings_of(context)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.host)
    console.print(
        f"worker: {concurrency or settings.worker_concurrency} slot(s), "
        f"database {settings.resolved_database_url.split('@')[-1]}"
    )
    _worker_module().main(settings, concurrency)


def _worker_module() -> Any:
    """``workers.worker``, imported by name: the core library does not import the worker layer (as with the app)."""
    return importlib.import_module("workers.worker")


@bundle_app.command("add")
@reports_errors
def bundle_add(
    context: typer.Context,
    path: Annotated[Path, typer.Argument(help="An MLNX_OFED bundle: `.tgz`, `.iso` or an unpacked directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the bundle as JSON.")] = False,
) -> None:
    """Register an MLNX_OFED bundle (stored unpacked and read-only, once per sha256)."""
    from ofedrepo.bundles import BundleStore

    settings = settings_of(context)
    store = BundleStore(settings, migrated_sessions(settings))
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or directory")
    total = (
        path.stat().st_size
        if path.is_file()
        else sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file() and not entry.is_symlink())
    )
    with hashing_progress() as bars:
        hashing = bars.add_task(f"Hashing {path.name}", total=total)
        candidate = store.identify(path, lambda size: bars.advance(hashing, size))
        bars.update(hashing, visible=False)
        step = bars.add_task("Checking", total=None)
        bundle, created = store.add(candidate, progress=lambda text: bars.update(step, description=text))
    if as_json:
        sys.stdout.write(
            json.dumps({**bundle.__dict__, "created_at": bundle.created_at.isoformat(), "created": created}, indent=2)
            + "\n"
        )
        return
    verb = "registered" if created else "already registered"
    details = f"OFED {bundle.ofed_version}, {bundle.distro}, {bundle.arch}, sha256 {bundle.sha256[:12]}"
    sys.stdout.write(f"{bundle.name}: {verb} as bundle {bundle.id} ({details})\n")


@app.command()
@reports_errors
def request(
    context: typer.Context,
    kernel: Annotated[str | None, typer.Option("--kernel", "-k", help="The kernel release to build for.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="An image whose default kernel to build for.")] = None,
    ofed: Annotated[
        str | None, typer.Option("--ofed", help="The OFED version (default: the newest fitting bundle).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Build again even if a build for this key succeeded.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the build log until the build ends.")] = False,
) -> None:
    """Ask for a repo for a kernel or an image; a worker builds it (run `ofedrepo worker` or `serve`)."""
    from ofedrepo import builds
    from ofedrepo.images import ImageCatalog
    from ofedrepo.uploads import hash_candidate

    settings = settings_of(context)
    if (kernel is None) == (image is None):
        raise InvalidInput("give exactly one of --kernel and --image")
    sessions = migrated_sessions(settings)
    image_id = None
    if image is not None:
        with console.status("Inspecting the image"):
            outcome = ImageCatalog(settings, sessions).inspect([hash_candidate(image)])[0]
        if outcome.error:
            raise outcome.error
        assert outcome.image is not None
        image_id = outcome.image.id
    with sessions() as session:
        answer = builds.request_repo(
            session, settings, builds.RepoRequest(kernel=kernel, image_id=image_id, ofed_version=ofed, force=force)
        )
    location = _latest_url(settings, sessions, answer.repo_id)
    if answer.ready:
        made_by = f"build {answer.build_id}" if answer.build_id else "published with `ofedrepo publish`"
        sys.stdout.write(f"already built ({made_by})\nDIB_MLNX_OFED_REPO={location}\n")
        return
    console.print(f"build {answer.build_id} queued for repo {answer.repo_id}")
    assert answer.build_id is not None
    with sessions() as session:
        if not builds.get_build(session, answer.build_id).rebuild:
            console.print("the bundle already holds this kernel's modules: its own packages are published, no rebuild")
    if not wait:
        sys.stdout.write(f"build {answer.build_id}\nDIB_MLNX_OFED_REPO={location} (once it succeeds)\n")
        return
    state = _follow(settings, sessions, answer.build_id)
    if state != "succeeded":
        raise OfedrepoError(f"build {answer.build_id} {state}")
    sys.stdout.write(f"DIB_MLNX_OFED_REPO={location}\n")


def _latest_url(settings: Settings, sessions: "sessionmaker[Session]", repo_id: int) -> str:
    from ofedrepo import catalog

    with sessions() as session:
        return catalog.view(catalog.get_repo(session, repo_id), settings.base_url).latest.url


def _follow(settings: Settings, sessions: "sessionmaker[Session]", build_id: int) -> str:
    """Print the build log as it grows; return the build's final state."""
    import time

    from ofedrepo import builds
    from ofedrepo.models import ENDED_STATES
    from ofedrepo.storage import DataDir

    log_file = DataDir(settings.data_dir).build_log(build_id)
    offset = 0
    with console.status(f"build {build_id} waiting for a worker") as status:
        while True:
            chunk = builds.read_log(log_file, offset)
            if chunk:
                offset += len(chunk)
                console.out(chunk.decode("utf-8", "replace"), end="", highlight=False)
            with sessions() as session:
                build = builds.get_build(session, build_id)
                state, error = build.state, build.error
            status.update(f"build {build_id} {state}")
            if state in ENDED_STATES:
                if not builds.read_log(log_file, offset):
                    if error and state != "succeeded":
                        console.print(f"[bold red]{escape(error)}[/]", highlight=False, soft_wrap=True)
                    return state
            time.sleep(0.5)


def main() -> None:
    app()
