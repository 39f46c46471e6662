"""Repos: `ofedrepo publish`, `ofedrepo request`, `ofedrepo gc`."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
)
from rich.table import Table

from cli.common import RichProgress, console, migrated_sessions, print_table, reports_errors, settings_of
from ofedrepo.config import Settings
from ofedrepo.errors import InvalidInput, OfedrepoError
from ofedrepo.kinds import BundleKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


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
    from ofedrepo.repos.publish import Publisher
    from ofedrepo.repos.repofile import RepoLocation
    from ofedrepo.storage import LATEST

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
    location = RepoLocation(settings.base_url, result.bundle_name, result.kernel, str(result.version)).url
    latest = RepoLocation(settings.base_url, result.bundle_name, result.kernel, LATEST).url
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
        f"DIB_MLNX_OFED_REPO={latest}\n"
    )


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
    from ofedrepo.repos.retention import collect_garbage, policy_from
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
        print_table(table)
    sys.stdout.write(f"{verb} {human_size(report.total)} in {len(report.freed)} item(s)\n")


@reports_errors
def request(
    context: typer.Context,
    kernel: Annotated[str | None, typer.Option("--kernel", "-k", help="The kernel release to build for.")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="An image whose default kernel to build for.")] = None,
    ofed: Annotated[
        str | None, typer.Option("--ofed", help="The OFED version (default: the newest fitting bundle).")
    ] = None,
    distro: Annotated[
        str | None,
        typer.Option("--distro", help="The distro tag, e.g. rhel9.4 (default: the image's, or the kernel's)."),
    ] = None,
    kind: Annotated[
        BundleKind | None,
        typer.Option("--kind", help="Only MLNX_OFED bundles, or only DOCA-OFED repositories (default: either)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Build again even if a build for this key succeeded.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the build log until the build ends.")] = False,
) -> None:
    """Ask for a repo for a kernel or an image; a worker builds it (run `ofedrepo worker` or `serve`)."""
    from ofedrepo.builds import requests
    from ofedrepo.images.catalog import ImageCatalog
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
        answer = requests.request_repo(
            session,
            settings,
            requests.RepoRequest(
                kernel=kernel, image_id=image_id, ofed_version=ofed, distro=distro, kind=kind, force=force
            ),
        )
    location = _latest_url(settings, sessions, answer.repo_id)
    if answer.ready:
        made_by = f"build {answer.build_id}" if answer.build_id else "published with `ofedrepo publish`"
        sys.stdout.write(f"already built ({made_by})\nDIB_MLNX_OFED_REPO={location}\n")
        return
    console.print(f"build {answer.build_id} queued for repo {answer.repo_id}")
    assert answer.build_id is not None
    with sessions() as session:
        if not requests.get_build(session, answer.build_id).rebuild:
            console.print("the bundle already holds this kernel's modules: its own packages are published, no rebuild")
    if not wait:
        sys.stdout.write(f"build {answer.build_id}\nDIB_MLNX_OFED_REPO={location} (once it succeeds)\n")
        return
    state = _follow(settings, sessions, answer.build_id)
    if state != "succeeded":
        raise OfedrepoError(f"build {answer.build_id} {state}")
    sys.stdout.write(f"DIB_MLNX_OFED_REPO={location}\n")


def _latest_url(settings: Settings, sessions: "sessionmaker[Session]", repo_id: int) -> str:
    from ofedrepo.repos import queries

    with sessions() as session:
        return queries.view(queries.get_repo(session, repo_id), settings.base_url).latest.url


def _follow(settings: Settings, sessions: "sessionmaker[Session]", build_id: int) -> str:
    """Print the build log as it grows; return the build's final state."""
    import time

    from ofedrepo.builds import requests
    from ofedrepo.models import ENDED_STATES
    from ofedrepo.storage import DataDir

    log_file = DataDir(settings.data_dir).build_log(build_id)
    offset = 0
    told = None
    with console.status(f"build {build_id} waiting for a worker") as status:
        while True:
            chunk = requests.read_log(log_file, offset)
            if chunk:
                offset += len(chunk)
                console.out(chunk.decode("utf-8", "replace"), end="", highlight=False)
            with sessions() as session:
                build = requests.get_build(session, build_id)
                state, error = build.state, build.error
                waiting = requests.waiting_reason(build, requests.live_arches(session, settings.build_lease_seconds))
            if waiting != told and waiting is not None:  # said once, not only in a spinner a pipe never shows
                console.print(f"build {build_id} is not taken yet: {escape(waiting)}", highlight=False)
            told = waiting
            status.update(f"build {build_id} {state}" + (f" ({waiting})" if waiting else ""))
            if state in ENDED_STATES:
                if not requests.read_log(log_file, offset):
                    if error and state != "succeeded":
                        console.print(f"[bold red]{escape(error)}[/]", highlight=False, soft_wrap=True)
                    return state
            time.sleep(0.5)
