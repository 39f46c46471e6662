"""Images: `ofedrepo inspect`."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from cli.common import console, hashing_progress, migrated_sessions, print_table, reports_errors, settings_of
from ofedrepo.errors import InvalidInput

if TYPE_CHECKING:
    from ofedrepo.images.catalog import ImageView


@reports_errors
def inspect(
    context: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="qcow2 or raw disk images; several share one appliance launch.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON: an object, or a list for several images.")
    ] = False,
) -> None:
    """Tell which kernel an image boots and which MLNX_OFED bundle fits it (read-only, nothing is mounted)."""
    from ofedrepo.images.catalog import ImageCatalog
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
        for outcome in outcomes:
            if outcome.image:
                print_table(image_table(outcome.image))
    if failed:
        raise typer.Exit(2)


def image_table(image: "ImageView") -> Table:
    """One image as a two-column table (fields down the side, so a narrow terminal wraps only long values), its
    values never folded: a kernel release or a checksum stays whole for copying."""
    # Every value comes from the image or its uploader: escaped, so that "[...]" is never read as markup.
    table = Table(title=escape(image.filename), title_justify="left", box=box.SIMPLE, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", no_wrap=True, overflow="ignore")
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
