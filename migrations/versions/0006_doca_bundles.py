"""DOCA-OFED bundles: a bundle's kind, its DOCA version and the checksum of its rebuild tool

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), server_default=sa.text("'mlnx_ofed'"), nullable=False))
        batch.add_column(sa.Column("doca_version", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("tool_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bundles") as batch:
        batch.drop_column("tool_sha256")
        batch.drop_column("doca_version")
        batch.drop_column("kind")
