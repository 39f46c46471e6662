"""Alembic environment: runs on the engine ``ofedrepo.db`` hands over (SQLite or PostgreSQL)."""

from alembic import context
from sqlalchemy import create_engine

from ofedrepo.config import Settings
from ofedrepo.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    # Plain `alembic` command line (e.g. `alembic revision --autogenerate`): use the configured database.
    engine = create_engine(config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode recreates the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
