"""The ``ofedrepo`` command line (Typer): one module per command group, assembled here. Settings are loaded
once, in the callback, and passed down; the service's own layers are imported lazily, by the commands that
need them, so that ``ofedrepo --help`` stays quick."""

import logging
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from cli import bundles, database, demo, images, listings, repos, service
from cli.common import console
from ofedrepo import logs
from ofedrepo.config import Settings

# Plain help, not Rich's: this Typer's Rich help shows every flag as taking a value (`--json <bool>`).
app = typer.Typer(
    help="MLNX_OFED and DOCA-OFED kernel modules for the kernel in your images, as yum repositories.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
bundle_app = typer.Typer(
    help="MLNX_OFED bundles and DOCA-OFED repositories.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(bundle_app, name="bundle")

app.command()(repos.publish)
app.command()(images.inspect)
app.command()(repos.gc)
app.command()(service.serve)
app.command("worker")(service.worker_command)
app.command()(repos.request)
app.command("repos")(listings.list_repos)
app.command("builds")(listings.list_builds)
app.command("bundles")(listings.list_bundles)
app.command("images")(listings.list_images)
app.command("cancel")(listings.cancel)
app.command("demo")(demo.demo)
db_app.command("upgrade")(database.db_upgrade)
bundle_app.command("add")(bundles.bundle_add)


@app.callback()
def main_callback(
    context: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens, step by step.")] = False,
) -> None:
    try:
        context.obj = Settings()
    except ValidationError as error:
        problems = "; ".join(f"OFEDREPO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        console.print(f"[bold red]error:[/] invalid settings: {escape(problems)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    logs.configure(context.obj.log_format, logging.INFO if verbose else logging.WARNING)


def main() -> None:
    app()
