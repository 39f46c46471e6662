"""Database models (SQLAlchemy 2, typed). The schema is created by Alembic migrations, never create_all.

Build states and their transitions (each one a conditional UPDATE in the queue, issue 4)::

    queued ──claim──> running ──> succeeded
       │                 │  └──> failed        (error set; or re-queued while attempts remain)
       └──cancel──> cancelled <──cancel──┘
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ofedrepo.kinds import BundleKind

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Row ids are 32-bit integers on PostgreSQL; larger numbers cannot name anything (refused as bad input, never
#: a database error).
MAX_ID = 2**31 - 1


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always returned timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class BuildState(StrEnum):
    """A build's state; ``ofedrepo.builds.lifecycle`` holds every transition between them."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A build waiting for or held by a worker; at most one per cache key (a partial unique index).
ACTIVE_STATES = (BuildState.QUEUED, BuildState.RUNNING)
ENDED_STATES = (BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED)


def _states_sql(states: tuple[BuildState, ...]) -> str:
    return "state IN (" + ", ".join(f"'{state.value}'" for state in states) + ")"


ACTIVE_STATES_SQL = _states_sql(ACTIVE_STATES)
#: The CHECK constraint of ``builds.state``, derived from the enum (migration 0001 wrote the same list).
KNOWN_STATES_SQL = _states_sql(tuple(BuildState))


class Priority:
    """Claim order: a higher priority is claimed first, then the oldest. A person's request always goes
    before a build a kernel feed queued on its own (and lifts that build when it asks for the same thing)."""

    REQUEST = 10
    FEED = 0


class Bundle(Base):
    """A registered MLNX_OFED bundle or DOCA-OFED repository (``kind``), stored unpacked once per sha256."""

    __tablename__ = "bundles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[BundleKind] = mapped_column(
        Enum(
            BundleKind,
            native_enum=False,
            create_constraint=False,  # a kind this version does not know is refused when read, not when stored
            length=16,
            values_callable=lambda kinds: [kind.value for kind in kinds],
            validate_strings=True,
        ),
        default=BundleKind.MLNX_OFED,
        server_default=text(f"'{BundleKind.MLNX_OFED.value}'"),
    )
    """Which vendor's bundle this is, and so which rebuild tool builds it (``ofedrepo.bundles.vendors``)."""
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    """What its vendor read at registration and its builds need (where the rebuild tool and the driver sources
    are, which packages a version may publish), so that no build reads the packages again."""
    doca_version: Mapped[str | None] = mapped_column(String(32))
    tool_sha256: Mapped[str | None] = mapped_column(String(64))
    """The checksum of the rebuild tool when it is a package of the bundle (DOCA's doca-kernel-support)."""
    ofed_version: Mapped[str] = mapped_column(String(64))
    distro: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str | None] = mapped_column(Text)
    supported_kernels: Mapped[list[str]] = mapped_column(default=list, server_default=text("'[]'"))
    """Kernels the bundle already holds kernel modules for (its GA kernel): published without a rebuild."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    """An inspected disk image, identified by the sha256 of its bytes."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(255))
    distro: Mapped[str] = mapped_column(String(64))
    os_version: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(16))
    kernels: Mapped[list[str]]
    default_kernel: Mapped[str] = mapped_column(String(128))
    default_kernel_rule: Mapped[str] = mapped_column(String(200))
    ofed_distro: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Repo(Base):
    """The published repository of one (bundle, kernel) pair; its content lives in numbered versions."""

    __tablename__ = "repos"
    __table_args__ = (UniqueConstraint("bundle_name", "kernel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    bundle_name: Mapped[str] = mapped_column(String(200))
    kernel: Mapped[str] = mapped_column(String(128))
    ofed_version: Mapped[str] = mapped_column(String(64))
    distro: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(16))
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list["RepoVersion"]] = relationship(
        back_populates="repo", order_by="RepoVersion.number", cascade="all, delete-orphan"
    )
    builds: Mapped[list["Build"]] = relationship(back_populates="repo", order_by="Build.id")


class RepoVersion(Base):
    """One immutable, complete version ``repos/<bundle>/<kernel>/<number>/``.

    ``source_digest`` identifies the packages as they came in (before signing): publishing the same
    packages again answers with the existing version instead of making a new one.
    """

    __tablename__ = "repo_versions"
    __table_args__ = (UniqueConstraint("repo_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    source_digest: Mapped[str] = mapped_column(String(64))
    package_count: Mapped[int]
    size_bytes: Mapped[int] = mapped_column(Integer)
    signing_key: Mapped[str | None] = mapped_column(String(64))
    gpgcheck: Mapped[bool] = mapped_column(default=True)
    """True when every package is signed by a key in RPM-GPG-KEY-Mellanox, so clients can verify."""
    repo_gpgcheck: Mapped[bool] = mapped_column(default=False, server_default=false())
    """True when ``RPMS/repodata/repomd.xml.asc`` signs the metadata with the site key."""
    package_names: Mapped[list[str] | None]
    """The names of the packages it holds (what a DIB package list may name); None for older versions."""
    build_id: Mapped[int | None] = mapped_column(ForeignKey("builds.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    repo: Mapped[Repo] = relationship(back_populates="versions")


class Build(Base):
    """One job producing a repo version. Cache key: (bundle sha256, kernel, builder fingerprint)."""

    __tablename__ = "builds"
    __table_args__ = (
        CheckConstraint(KNOWN_STATES_SQL, name="state_known"),
        # At most one active build per cache key: concurrent identical requests collide here and share it.
        Index(
            "uq_builds_active_key",
            "bundle_id",
            "kernel",
            "fingerprint",
            unique=True,
            sqlite_where=text(ACTIVE_STATES_SQL),
            postgresql_where=text(ACTIVE_STATES_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("repos.id", ondelete="CASCADE"), index=True)
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id", ondelete="SET NULL"))
    kernel: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[BuildState] = mapped_column(
        Enum(
            BuildState,
            native_enum=False,
            create_constraint=False,  # the named CHECK above, which migrations already hold
            length=16,
            values_callable=lambda states: [state.value for state in states],
            validate_strings=True,
        ),
        default=BuildState.QUEUED,
        index=True,
    )
    attempts: Mapped[int] = mapped_column(default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    rebuild: Mapped[bool] = mapped_column(default=True, server_default=true())
    """False when the bundle already holds the kernel's modules: its own packages are published, no compile."""
    version_number: Mapped[int | None]
    """The repo version this build published."""
    priority: Mapped[int] = mapped_column(default=Priority.REQUEST, server_default=text(str(Priority.REQUEST)))
    """Claim order (``Priority``): requests before what kernel feeds queue."""
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("kernel_feeds.id", ondelete="SET NULL"))
    """The kernel feed that queued it, when no one asked."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    repo: Mapped[Repo] = relationship(back_populates="builds")
    bundle: Mapped[Bundle | None] = relationship()


class KernelFeed(Base):
    """A yum repository (``OFEDREPO_KERNEL_FEEDS``) where new kernels appear, and what its polls found.

    One row per configured URL; ``next_poll_at`` is claimed by one conditional UPDATE, so of several workers
    exactly one polls a feed per interval.
    """

    __tablename__ = "kernel_feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(1024), unique=True)
    etag: Mapped[str | None] = mapped_column(String(256))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    primary_checksum: Mapped[str | None] = mapped_column(String(128))
    """The checksum repomd.xml gave the primary metadata last time: the same one again is no change."""
    next_poll_at: Mapped[datetime | None]
    polled_at: Mapped[datetime | None]
    """The last poll that reached the feed (a 304 included)."""
    changed_at: Mapped[datetime | None]
    """The last poll that found new metadata."""
    error: Mapped[str | None] = mapped_column(Text)
    """Why the last poll failed; None after a good one."""
    kernels: Mapped[list[str]] = mapped_column(default=list, server_default=text("'[]'"))
    """The kernels (with their ``kernel-devel``) the last good poll found, within the per-minor bound."""
    builds_queued: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    """Builds this feed has queued, in all."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A running worker process; its heartbeat says it is alive (``/api/v1/health`` counts the recent ones)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    concurrency: Mapped[int]
    arches: Mapped[list[str]] = mapped_column(default=list, server_default=text("'[]'"))
    """The architectures it builds for (``OFEDREPO_WORKER_ARCHES``): it claims builds of those only."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
