"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bundles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("ofed_version", sa.String(length=64), nullable=False),
        sa.Column("distro", sa.String(length=32), nullable=False),
        sa.Column("arch", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bundles")),
        sa.UniqueConstraint("sha256", name=op.f("uq_bundles_sha256")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("distro", sa.String(length=64), nullable=False),
        sa.Column("os_version", sa.String(length=32), nullable=False),
        sa.Column("arch", sa.String(length=16), nullable=False),
        sa.Column("kernels", sa.JSON(), nullable=False),
        sa.Column("default_kernel", sa.String(length=128), nullable=False),
        sa.Column("default_kernel_rule", sa.String(length=200), nullable=False),
        sa.Column("ofed_distro", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("sha256", name=op.f("uq_images_sha256")),
    )
    op.create_table(
        "repos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bundle_name", sa.String(length=200), nullable=False),
        sa.Column("kernel", sa.String(length=128), nullable=False),
        sa.Column("ofed_version", sa.String(length=64), nullable=False),
        sa.Column("distro", sa.String(length=32), nullable=False),
        sa.Column("arch", sa.String(length=16), nullable=False),
        sa.Column("bundle_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name=op.f("fk_repos_bundle_id_bundles"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repos")),
        sa.UniqueConstraint("bundle_name", "kernel", name=op.f("uq_repos_bundle_name")),
    )
    op.create_table(
        "builds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("bundle_id", sa.Integer(), nullable=True),
        sa.Column("kernel", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_builds_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["bundle_id"], ["bundles.id"], name=op.f("fk_builds_bundle_id_bundles"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], name=op.f("fk_builds_repo_id_repos"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builds")),
    )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_builds_repo_id"), ["repo_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_builds_state"), ["state"], unique=False)

    op.create_table(
        "repo_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("source_digest", sa.String(length=64), nullable=False),
        sa.Column("package_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("signing_key", sa.String(length=64), nullable=True),
        sa.Column("gpgcheck", sa.Boolean(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_repo_versions_build_id_builds"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["repo_id"], ["repos.id"], name=op.f("fk_repo_versions_repo_id_repos"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repo_versions")),
        sa.UniqueConstraint("repo_id", "number", name=op.f("uq_repo_versions_repo_id")),
    )
    with op.batch_alter_table("repo_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_repo_versions_repo_id"), ["repo_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("repo_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repo_versions_repo_id"))

    op.drop_table("repo_versions")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_builds_state"))
        batch_op.drop_index(batch_op.f("ix_builds_repo_id"))

    op.drop_table("builds")
    op.drop_table("repos")
    op.drop_table("images")
    op.drop_table("bundles")
