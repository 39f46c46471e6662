"""Engines, sessions and migrations, for SQLite and PostgreSQL alike.

SQLite is made fit for several processes: WAL (readers never block the writer), a busy timeout (a
writer waits instead of failing), foreign keys on, and ``BEGIN IMMEDIATE`` for every transaction that may
write, so two processes never both read and then fail to upgrade to a write lock. Sessions that only read
(``read_only``) begin deferred instead: they take no lock, so they never wait for a writer nor make one wait.
"""

import os
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

#: How long a worker's or the CLI's statement waits for a lock another connection holds (SQLite's busy timeout,
#: PostgreSQL's ``lock_timeout``): their transactions are short, and a build's step is worth waiting for.
LOCK_WAIT_SECONDS = 30.0
#: The same for a web request, with a bound on any statement it runs: a client is better told 503 with
#: Retry-After at once than held for half a minute while another process holds the database (a stalled
#: transaction, a vacuum), and its thread and connection are free again for the requests that can be answered.
REQUEST_LOCK_WAIT_SECONDS = 5.0
REQUEST_STATEMENT_SECONDS = 20.0
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


def make_engine(url: str, lock_wait: float = LOCK_WAIT_SECONDS, statement_limit: float | None = None) -> Engine:
    """An engine for ``url`` whose statements wait ``lock_wait`` seconds at most for a lock (and run
    ``statement_limit`` seconds at most, on PostgreSQL); SQLite gets the pragmas and ``BEGIN IMMEDIATE``
    described above. A wait past either fails with an ``OperationalError``, which the API answers 503."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        bounded: dict[str, Any] = {name: value for name, value in NETWORK_TIMEOUTS.items() if name not in parsed.query}
        if "options" not in parsed.query:
            limits = [f"-c lock_timeout={round(lock_wait * 1000)}"]
            if statement_limit is not None:
                limits.append(f"-c statement_timeout={round(statement_limit * 1000)}")
            bounded["options"] = " ".join(limits)
        return create_engine(url, pool_pre_ping=True, connect_args=bounded, **_POOL)
    if parsed.database and parsed.database != ":memory:":
        database = Path(parsed.database)
        database.parent.mkdir(parents=True, exist_ok=True)
        # Made here, readable by its owner alone (SQLite gives its -wal and -shm files the same mode): the data
        # directory's top is readable by the web server that serves `repos/`, and the queue is nobody else's.
        # Never opened here when it exists: closing any descriptor of a database file drops every POSIX lock this
        # process's SQLite connections hold on it (writes were lost that way).
        try:
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
    engine = create_engine(url, connect_args={"timeout": lock_wait}, **_POOL)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={round(lock_wait * 1000)}")
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
