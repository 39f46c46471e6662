"""kernel feeds: the feeds' state, and builds' priority and the feed that queued them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kernel_feeds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("etag", sa.String(length=256), nullable=True),
        sa.Column("last_modified", sa.String(length=64), nullable=True),
        sa.Column("primary_checksum", sa.String(length=128), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("kernels", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("builds_queued", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kernel_feeds")),
        sa.UniqueConstraint("url", name=op.f("uq_kernel_feeds_url")),
    )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default=sa.text("10"), nullable=False))
        batch_op.add_column(sa.Column("feed_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_builds_feed_id_kernel_feeds"), "kernel_feeds", ["feed_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_builds_feed_id_kernel_feeds"), type_="foreignkey")
        batch_op.drop_column("feed_id")
        batch_op.drop_column("priority")
    op.drop_table("kernel_feeds")
