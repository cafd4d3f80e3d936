"""The initial schema.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Types are spelled out rather than imported from saga.store.tables so this revision
stays what it was when later ones change the tables: JSON columns are TEXT, datetimes
are TIMESTAMP WITH TIME ZONE (naive UTC on SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

SHARD_COUNT = 64


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("workflow_id", sa.String(), primary_key=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("workflow_type", sa.String(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("result", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("start_time", _when(), nullable=False),
        sa.Column("close_time", _when()),
        sa.Column("history_length", sa.Integer(), nullable=False),
        sa.Column("stuck_reason", sa.Text()),
        sa.Column("trace_context", sa.Text(), nullable=False),
        sa.Column("execution_timeout", sa.Float()),
    )
    op.create_index("ix_workflows_start_time", "workflows", ["start_time", "workflow_id"])
    op.create_index("ix_workflows_status_start_time", "workflows", ["status", "start_time"])
    op.create_index("ix_workflows_type_start_time", "workflows", ["workflow_type", "start_time"])

    op.create_table(
        "history_events",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("timestamp", _when(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "event_id"),
    )

    op.create_table(
        "outbox",
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "seq", "attempt"),
    )
    op.create_index("ix_outbox_sent", "outbox", ["sent"])

    op.create_table(
        "timers",
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("due_at", _when(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("workflow_id", "kind", "seq"),
    )
    op.create_index("ix_timers_due_at", "timers", ["due_at"])

    op.create_table(
        "inbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", _when(), nullable=False),
    )
    op.create_index("ix_inbox_workflow_id", "inbox", ["workflow_id"])

    op.create_table(
        "workflow_types",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("registered_at", _when(), nullable=False),
    )

    meta = op.create_table(
        "saga_meta",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.bulk_insert(meta, [{"key": "shard_count", "value": str(SHARD_COUNT)}])


def downgrade() -> None:
    for table in (
        "saga_meta",
        "workflow_types",
        "inbox",
        "timers",
        "outbox",
        "history_events",
        "workflows",
    ):
        op.drop_table(table)
