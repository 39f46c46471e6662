"""The schema: `ofedrepo db upgrade`."""

from typing import TYPE_CHECKING

import typer

from cli.common import console, reports_errors, settings_of
from ofedrepo import db

if TYPE_CHECKING:
    pass


@reports_errors
def db_upgrade(context: typer.Context) -> None:
    """Apply all database migrations (also done by `serve` at start)."""
    settings = settings_of(context)
    db.upgrade(db.make_engine(settings.resolved_database_url))
    console.print("database is up to date")
