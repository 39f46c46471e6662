"""Running the service: `ofedrepo serve`, `ofedrepo worker`."""

from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import console, reports_errors, settings_of
from ofedrepo import db

if TYPE_CHECKING:
    pass


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
    from workers.worker import Worker

    embedded = Worker(settings) if (settings.embedded_worker if worker is None else worker) else None
    console.print(
        f"serving on http://{host or settings.host}:{port or settings.port} (data in {settings.data_dir}"
        f"{', with an embedded worker' if embedded else ', no worker: run `ofedrepo worker`'})"
    )
    if embedded:
        embedded.start()
    try:
        # By import string, as uvicorn needs for --workers: each process builds its own app (and the protocol,
        # which puts a deadline on request heads) from the same OFEDREPO_* settings this command read.
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
    from workers.worker import main

    main(settings, concurrency)
