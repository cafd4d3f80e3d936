"""Shard leases and the coordinators' heartbeat rows (many coordinators, issue 5).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shard_leases",
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String()),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", _when(), nullable=False),
        sa.Column("owner_since", _when()),
    )
    op.create_table(
        "coordinators",
        sa.Column("identity", sa.String(), primary_key=True),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", _when(), nullable=False),
        sa.Column("heartbeat_at", _when(), nullable=False),
        sa.Column("expires_at", _when(), nullable=False),
        sa.Column("degraded", sa.Text()),
        sa.Column("http", sa.String()),
    )


def downgrade() -> None:
    op.drop_table("coordinators")
    op.drop_table("shard_leases")
