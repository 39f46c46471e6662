"""Listings: `ofedrepo repos`, `builds`, `bundles`, `images` (tables, or `--json` in the API's shapes), and
`ofedrepo cancel`."""

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.common import console, migrated_sessions, print_table, reports_errors, settings_of
from ofedrepo.models import MAX_ID, BuildState
from ofedrepo.storage import human_duration

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
#: Longest error text a builds table shows (the build's JSON and page have it whole).
ERROR_SHOWN = 100


def _table(columns: Sequence[str], rows: list[list[str]]) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column != "error", overflow="ignore" if column != "error" else "fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # every value came from outside: never markup
    return table


def _print(columns: Sequence[str], rows: list[list[str]], documents: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(documents, indent=2, default=str) + "\n")
    elif rows:
        print_table(_table(columns, rows))
    else:
        console.print("none", highlight=False)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


@reports_errors
def list_repos(context: typer.Context, as_json: JsonFlag = False) -> None:
    """The repos: state, versions and the URL to give DIB (`DIB_MLNX_OFED_REPO`)."""
    from api.schemas import RepoOut
    from ofedrepo.repos import queries

    settings = settings_of(context)
    with migrated_sessions(settings)() as session:
        base = settings.base_url
        repos = [RepoOut.of(queries.view(repo, base), base) for repo in queries.list_repos(session)]
    rows = [
        [str(repo.id), repo.bundle, repo.kernel, repo.state, str(len(repo.versions)), repo.latest_url] for repo in repos
    ]
    columns = ("id", "bundle", "kernel", "state", "versions", "DIB_MLNX_OFED_REPO")
    _print(columns, rows, [repo.model_dump(mode="json") for repo in repos], as_json)


@reports_errors
def list_builds(
    context: typer.Context,
    state: Annotated[BuildState | None, typer.Option("--state", help="Only builds in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="The newest this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The newest builds: bundle, kernel, state, how long they took (or have been running), and why one failed."""
    from api.schemas import BuildOut
    from ofedrepo.builds import requests

    settings = settings_of(context)
    with migrated_sessions(settings)() as session:
        builds = requests.list_builds(session, limit, state)
        rows = [
            [
                str(build.id), build.state, build.repo.bundle_name, build.kernel, _when(build.created_at),
                human_duration(build.started_at, build.finished_at), _shortened(build.error or ""),
            ]
            for build in builds
        ]  # fmt: skip
        documents = [BuildOut.of(build).model_dump(mode="json") for build in builds]
    _print(("id", "state", "bundle", "kernel", "queued", "took", "error"), rows, documents, as_json)


@reports_errors
def list_bundles(context: typer.Context, as_json: JsonFlag = False) -> None:
    """The registered MLNX_OFED bundles and DOCA-OFED repositories."""
    from api.schemas import BundleOut
    from ofedrepo.bundles import store

    settings = settings_of(context)
    with migrated_sessions(settings)() as session:
        bundles = store.list_bundles(session)
    rows = [
        [str(bundle.id), bundle.name, bundle.kind.value, bundle.ofed_version, bundle.distro, bundle.arch,
         ", ".join(bundle.supported_kernels) or "-"]
        for bundle in bundles
    ]  # fmt: skip
    documents = [BundleOut.of(bundle).model_dump(mode="json") for bundle in bundles]
    _print(("id", "name", "kind", "OFED", "distro", "arch", "holds modules for"), rows, documents, as_json)


@reports_errors
def list_images(context: typer.Context, as_json: JsonFlag = False) -> None:
    """The inspected images: their OS, the kernel they boot and the bundle distro that fits."""
    from ofedrepo.images import catalog

    settings = settings_of(context)
    with migrated_sessions(settings)() as session:
        images = catalog.list_images(session)
    rows = [
        [str(image.id), image.filename, f"{image.distro} {image.os_version}", image.arch, image.default_kernel,
         image.ofed_distro or "-"]
        for image in images
    ]  # fmt: skip
    documents = [image.as_dict() for image in images]
    _print(("id", "file", "os", "arch", "default kernel", "MLNX_OFED distro"), rows, documents, as_json)


@reports_errors
def cancel(
    context: typer.Context,
    build_id: Annotated[int, typer.Argument(help="The build to cancel.", min=1, max=MAX_ID)],
) -> None:
    """Cancel a build: a queued one at once; a running one is stopped by its worker within seconds."""
    from ofedrepo.builds import lifecycle

    settings = settings_of(context)
    with migrated_sessions(settings)() as session:  # cancel commits (or rolls back) itself
        cancelled = lifecycle.cancel(session, build_id).state == BuildState.CANCELLED
    said = "cancelled" if cancelled else "stopping: its worker stops it within seconds"
    sys.stdout.write(f"build {build_id}: {said}\n")


def _shortened(error: str) -> str:
    """``error`` cut at a word within ``ERROR_SHOWN`` characters, with an ellipsis that says it was."""
    if len(error) <= ERROR_SHOWN:
        return error
    return error[:ERROR_SHOWN].rsplit(" ", 1)[0] + " …"
