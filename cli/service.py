"""Running the service: `ofedrepo serve`, `ofedrepo worker`."""

import logging
import os
import resource
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import address_taken, reports_errors, settings_of
from ofedrepo import db, logs
from ofedrepo.errors import InvalidInput

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def verbosity() -> list[str]:
    """``-v`` when this command logs its steps, for a child command to do the same."""
    return ["-v"] if logging.getLogger().level <= logging.INFO else []


class EmbeddedWorker:
    """``ofedrepo worker`` as a process of ``serve``, started again whenever it ends (killed by the OOM killer,
    say): a service whose worker died would answer health and take requests, and build nothing, for ever. Its
    builds' leases expire and the new worker's reaper gives them back to the queue (or ends them, cancelled)."""

    _RESTART_DELAY = 2.0

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self.process = self._start()
        self._watcher = threading.Thread(target=self._watch, name="embedded-worker", daemon=True)
        self._watcher.start()

    @staticmethod
    def _start() -> "subprocess.Popen[bytes]":
        argv = [sys.executable, "-c", "from cli.main import main; main()", *verbosity(), "worker", "--die-with-parent"]
        return subprocess.Popen(argv)

    def _watch(self) -> None:
        while not self._stopping.wait(self._RESTART_DELAY):
            code = self.process.poll()
            if code is not None and not self._stopping.is_set():
                log.error("the embedded worker ended (exit status %s): starting another", code)
                self.process = self._start()
        # A worker started here dies with this thread (PR_SET_PDEATHSIG follows the thread that forked, not the
        # process): it stays until the worker has stopped, or a Ctrl-C would kill its builds mid-way (left
        # `running`, their scratch mounted, until their leases expired).
        self._stopped.wait()

    def stop(self) -> None:
        self._stopping.set()
        self.process.terminate()  # its running builds go back to the queue
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stopped.set()
        self._watcher.join(timeout=self._RESTART_DELAY * 2)


def _check_free(host: str, port: int) -> None:
    """Refuse at once, saying what to do, when the address is taken (another `ofedrepo serve`, `make run` left
    running): uvicorn would only log its errno after migrations and the embedded worker had started."""
    taken = address_taken(host, port)
    if taken:
        raise InvalidInput(
            f"cannot serve on {host}:{port}: {taken} (another `ofedrepo serve`?): stop it, or pass --port"
        )


def _raise_descriptor_limit() -> None:
    """Every connection is a file descriptor: a service manager's default soft limit (1024) lets a few hundred
    slow clients, each cut off only at its deadline, leave none for the next request or the database. The hard
    limit is the operator's; the soft one is raised to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open files: limit raised from %d to %d", soft, hard)


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
    # The web processes and the embedded worker read their settings from the environment: what was given here
    # goes there, so the default public URL (written into .repo files) names the address really served.
    for variable, given in (("OFEDREPO_HOST", host), ("OFEDREPO_PORT", port)):
        if given is not None:
            os.environ[variable] = str(given)
    logs.configure(settings.log_format, logging.INFO)
    from ofedrepo.metrics_sharing import share_between_processes
    from ofedrepo.storage import DataDir

    # The web processes, the embedded worker and its build processes all count into one directory.
    share_between_processes(DataDir(settings.data_dir).ensure().root / "run" / "metrics")
    _check_free(host or settings.host, port or settings.port)
    db.upgrade(db.make_engine(settings.resolved_database_url))
    _raise_descriptor_limit()
    with_worker = settings.embedded_worker if worker is None else worker
    log.info(
        "serving on http://%s:%s (data in %s%s)",
        host or settings.host,
        port or settings.port,
        settings.data_dir,
        ", with an embedded worker" if with_worker else ", no worker: run `ofedrepo worker`",
    )
    # The embedded worker is a process of its own: the API never runs build code, and a build that crashes
    # cannot take the API down. It reads the same settings (the environment and config file) and ends with us.
    embedded = EmbeddedWorker() if with_worker else None
    try:
        # By import string, as uvicorn needs for --workers: each process builds its own app (and the protocol,
        # which puts a deadline on request heads) from the same OFEDREPO_* settings this command read.
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            log_level="info",
            log_config=None,  # its loggers go through ours (cli.logs): one format, JSON included
            workers=workers,
            http="api.tree_fast_path:TreeFastPathProtocol",
            loop="uvloop",
        )
    finally:
        if embedded:
            embedded.stop()
        from ofedrepo.repos.signing import stop_agents_under

        stop_agents_under(settings.data_dir)  # the site key's, started by publishing


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
    die_with_parent: Annotated[bool, typer.Option(hidden=True, help="Stop when the parent process ends.")] = False,
) -> None:
    """Claim queued builds and run them until stopped (SIGTERM/SIGINT put running builds back in the queue)."""
    settings = settings_of(context)
    logs.configure(settings.log_format, logging.INFO)
    if die_with_parent:  # the worker `ofedrepo serve` embeds: killed with it, as it was when it ran inside it
        from ofedrepo.process import die_with_parent as stop_with_parent

        stop_with_parent(signal.SIGKILL)
    if metrics_port:
        from ofedrepo.metrics_sharing import share_between_processes
        from ofedrepo.storage import DataDir

        # Its builds run in processes of their own: they count into a directory this worker reports from (set
        # before prometheus_client is imported: it chooses its storage then).
        share_between_processes(DataDir(settings.data_dir).ensure().root / "run" / f"metrics-worker-{os.getpid()}")
        from prometheus_client import start_http_server

        from ofedrepo.metrics import process_registry

        start_http_server(metrics_port, addr=settings.host, registry=process_registry())
    log.info(
        "worker: %d slot(s), database %s",
        concurrency or settings.worker_concurrency,
        settings.resolved_database_url.split("@")[-1],
    )
    from workers.worker import main

    main(settings, concurrency)
