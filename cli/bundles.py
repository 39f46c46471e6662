"""Bundles: `ofedrepo bundle add`."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import hashing_progress, migrated_sessions, reports_errors, settings_of
from ofedrepo.errors import InvalidInput
from ofedrepo.kinds import BundleKind

if TYPE_CHECKING:
    pass


@reports_errors
def bundle_add(
    context: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            help="An MLNX_OFED bundle (`.tgz`, `.iso` or an unpacked directory), or a DOCA-OFED repository "
            "(`doca-host-<ver>-<build>_<distro>.<arch>.rpm`, or an unpacked copy of NVIDIA's online tree)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the bundle as JSON.")] = False,
) -> None:
    """Register an MLNX_OFED bundle or a DOCA-OFED repository (stored unpacked and read-only, once per sha256)."""
    from ofedrepo.builds import feeds
    from ofedrepo.bundles.store import BundleStore
    from ofedrepo.uploads import discard

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
        try:
            bars.update(hashing, visible=False)
            step = bars.add_task("Checking", total=None)
            bundle, created = store.add(candidate, progress=lambda text: bars.update(step, description=text))
        finally:
            discard(candidate)
    queued = feeds.queue_known_kernels(store.sessions, settings, bundle.id) if created else []
    if as_json:
        sys.stdout.write(
            json.dumps(
                {**bundle.__dict__, "created_at": bundle.created_at.isoformat(), "created": created, "queued": queued},
                indent=2,
            )
            + "\n"
        )
        return
    verb = "registered" if created else "already registered"
    kind = f"DOCA {bundle.doca_version}, " if bundle.kind == BundleKind.DOCA else ""
    details = f"{kind}OFED {bundle.ofed_version}, {bundle.distro}, {bundle.arch}, sha256 {bundle.sha256[:12]}"
    sys.stdout.write(f"{bundle.name}: {verb} as bundle {bundle.id} ({details})\n")
    if queued:
        sys.stdout.write(f"{len(queued)} build(s) queued for kernels the kernel feeds already found\n")
