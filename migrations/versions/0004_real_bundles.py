"""real bundles: a bundle's supported kernels, builds that need no rebuild, a version's package names

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bundles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("supported_kernels", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rebuild", sa.Boolean(), server_default=sa.true(), nullable=False))
    with op.batch_alter_table("repo_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("package_names", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repo_versions", schema=None) as batch_op:
        batch_op.drop_column("package_names")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_column("rebuild")
    with op.batch_alter_table("bundles", schema=None) as batch_op:
        batch_op.drop_column("supported_kernels")
