"""Engines, sessions and migrations, for SQLite and PostgreSQL alike.

SQLite is made fit for several processes: WAL (readers never block the writer), a busy timeout (a
writer waits instead of failing), foreign keys on, and ``BEGIN IMMEDIATE`` for every transaction that may
write, so two processes never both read and then fail to upgrade to a write lock. Sessions that only read
(``read_only``) begin deferred instead: they take no lock, so they never wait for a writer nor make one wait.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: libpq settings that bound how long a lost server (host down, link cut) can hold a query or a connect: by
#: default a half-open TCP connection waits out the kernel's retransmissions, about 15 minutes, while a
#: worker's leases expire. A URL's own query parameters take precedence.
NETWORK_TIMEOUTS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,
}
#: The execution option marking a read-only session's connection (its SQLite transaction begins deferred).
READ_ONLY = "ofedrepo_read_only"
#: Connections per process: as many as the threads that run requests and builds (anyio's 40, a few more), so
#: that a thread never waits for a connection another thread's request holds; past ``POOL_TIMEOUT`` seconds of
#: waiting all the same the API answers 503 with Retry-After, never a 30 s wait and a 500.
POOL_SIZE = 10
POOL_OVERFLOW = 40
POOL_TIMEOUT = 5


_POOL: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW, "pool_timeout": POOL_TIMEOUT}


def unreachable_database(error: BaseException) -> bool:
    """Whether ``error`` says the database is down or lost (worth retrying elsewhere or later), rather than
    that it refused a statement or one value (a ``DataError``: a string too long for its column, an
    ``IntegrityError``, a schema older than the code), which trying again would only repeat."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError | DisconnectionError | PoolTimeout)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets the pragmas and ``BEGIN IMMEDIATE`` described above."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        bounded = {name: value for name, value in NETWORK_TIMEOUTS.items() if name not in parsed.query}
        return create_engine(url, pool_pre_ping=True, connect_args=bounded, **_POOL)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **_POOL)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN" if connection.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with sessions() as session, session.begin():
        yield session


def read_only_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions that only read, whose connection is taken when first used, not when the session is made: a
    web request then holds a connection only in the thread that runs its endpoint, never while it waits for
    a thread (``api.deps``)."""
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def read_only(session: Session) -> Session:
    """Mark a new session as one that only reads (see the module's docstring); returns it."""
    session.connection(execution_options={READ_ONLY: True})
    return session


def alembic_config(engine: Engine) -> Config:
    """Alembic configured from code: the migrations ship inside the package, no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (``ofedrepo db upgrade``; also run at serve/worker start)."""
    command.upgrade(alembic_config(engine), "head")
