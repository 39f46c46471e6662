"""Migrations build the schema on SQLite and PostgreSQL, and the models never drift from them."""

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from ofedrepo.bundles.names import BundleIdentity
from ofedrepo.db import alembic_config, transaction, upgrade
from ofedrepo.models import Build, Bundle, RepoVersion
from ofedrepo.repos import queries

IDENTITY = BundleIdentity("5.8-3.0.7.0", "rhel8.6", "x86_64")
KERNEL = "4.18.0-372.26.1.el8_6.x86_64"


def test_models_match_migrations(engine: Engine) -> None:
    command.check(alembic_config(engine))  # raises when autogenerate would emit anything


def test_downgrade_to_nothing_and_back(engine: Engine) -> None:
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert {"bundles", "images", "repos", "repo_versions", "builds"} <= set(inspect(engine).get_table_names())


def test_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade(engine)
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head == "0008"


def test_repo_rows_are_unique_per_bundle_and_kernel(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        first = queries.get_or_create_repo(session, IDENTITY, KERNEL).id
    with transaction(sessions) as session:
        assert queries.get_or_create_repo(session, IDENTITY, KERNEL).id == first


def test_version_numbers_are_unique_per_repo(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        repo_id = queries.get_or_create_repo(session, IDENTITY, KERNEL).id
        session.add(RepoVersion(repo_id=repo_id, number=1, source_digest="a", package_count=1, size_bytes=1))
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate key"), transaction(sessions) as session:
        session.add(RepoVersion(repo_id=repo_id, number=1, source_digest="b", package_count=1, size_bytes=1))


def test_build_states_are_constrained(sessions: sessionmaker[Session]) -> None:
    """The typed column refuses an unknown state before SQL is sent; the database's CHECK (derived from the same
    enum) refuses one that comes by another way."""
    with transaction(sessions) as session:
        repo_id = queries.get_or_create_repo(session, IDENTITY, KERNEL).id
    with pytest.raises(StatementError, match="exploded"), transaction(sessions) as session:
        session.add(Build(repo_id=repo_id, kernel=KERNEL, fingerprint="f", state="exploded"))
    with pytest.raises(IntegrityError, match="state_known"), transaction(sessions) as session:
        columns = "repo_id, kernel, fingerprint, state, attempts, created_at"
        session.execute(
            text(f"INSERT INTO builds ({columns}) VALUES (:r, :k, 'f', 'exploded', 0, :t)"),
            {"r": repo_id, "k": KERNEL, "t": "2026-01-01 00:00:00"},
        )


def test_timestamps_come_back_in_utc(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        repo = queries.get_or_create_repo(session, IDENTITY, KERNEL)
    with sessions() as session:
        created = queries.get_repo(session, repo.id).created_at
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_one_active_build_per_cache_key(sessions: sessionmaker[Session]) -> None:
    """The partial unique index that makes concurrent identical requests share one build."""
    with transaction(sessions) as session:
        bundle = Bundle(
            name="MLNX_OFED_LINUX-5.8-3.0.7.0-rhel8.6-x86_64",
            sha256="0" * 64,
            ofed_version=IDENTITY.ofed_version,
            distro=IDENTITY.distro,
            arch=IDENTITY.arch,
        )
        session.add(bundle)
        session.flush()
        repo_id = queries.get_or_create_repo(session, IDENTITY, KERNEL).id
        key = {"repo_id": repo_id, "bundle_id": bundle.id, "kernel": KERNEL}
        session.add(Build(**key, fingerprint="f", state="succeeded"))
        session.add(Build(**key, fingerprint="f", state="queued"))
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate key"), transaction(sessions) as session:
        session.add(Build(**key, fingerprint="f", state="running"))
    with transaction(sessions) as session:
        session.add(Build(**key, fingerprint="another builder", state="queued"))
