"""The schema, as SQLAlchemy Core tables; migrations/versions must create exactly this.

Two column types carry the portability rules: JSON is TEXT written by orjson (one fast
serialiser for every dialect, and the same bytes the transports send), and datetimes are
timezone-aware UTC in Python whatever the database keeps (SQLite has no time zones).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

from saga.converter import dumps, loads


class JSONText(TypeDecorator[Any]):
    """JSON-shaped data stored as TEXT through orjson."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        """Serialise on the way in."""
        return None if value is None else dumps(value).decode()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        """Parse on the way out."""
        return None if value is None else loads(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python; TIMESTAMPTZ on PostgreSQL, naive UTC on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes: their time zone is a guess."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; saga stores aware UTC")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC, whatever the driver returned."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

workflows = Table(
    "workflows",
    metadata,
    Column("workflow_id", String, primary_key=True),
    Column("run_id", String, nullable=False),
    Column("workflow_type", String, nullable=False),
    Column("status", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("shard", Integer, nullable=False),
    Column("input", JSONText, nullable=False),
    Column("result", JSONText),
    Column("error", JSONText),
    Column("start_time", UTCDateTime, nullable=False),
    Column("close_time", UTCDateTime),
    Column("history_length", Integer, nullable=False),
    Column("stuck_reason", Text),
    Column("trace_context", JSONText, nullable=False),
    Column("execution_timeout", Float),
    Index("ix_workflows_start_time", "start_time", "workflow_id"),
    Index("ix_workflows_status_start_time", "status", "start_time"),
    Index("ix_workflows_type_start_time", "workflow_type", "start_time"),
)

history_events = Table(
    "history_events",
    metadata,
    Column("run_id", String, nullable=False),
    Column("event_id", Integer, nullable=False),
    Column("workflow_id", String, nullable=False),
    Column("type", String(64), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("attributes", JSONText, nullable=False),
    PrimaryKeyConstraint("run_id", "event_id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("workflow_id", String, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("run_id", String, nullable=False),
    Column("shard", Integer, nullable=False),
    Column("message", JSONText, nullable=False),
    Column("sent", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workflow_id", "seq", "attempt"),
    Index("ix_outbox_sent", "sent"),
)

timers = Table(
    "timers",
    metadata,
    Column("workflow_id", String, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("run_id", String, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("shard", Integer, nullable=False),
    PrimaryKeyConstraint("workflow_id", "kind", "seq"),
    Index("ix_timers_due_at", "due_at"),
)

inbox = Table(
    "inbox",
    metadata,
    # BIGINT on PostgreSQL; SQLite only autoincrements a column declared INTEGER.
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("workflow_id", String, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", JSONText, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_inbox_workflow_id", "workflow_id"),
)

workflow_types = Table(
    "workflow_types",
    metadata,
    Column("name", String, primary_key=True),
    Column("registered_at", UTCDateTime, nullable=False),
)

# Who owns each shard: one row per shard; ``epoch`` grows with every change of owner, so
# a write fenced by (owner, epoch) fails once anyone else has held the shard since.
shard_leases = Table(
    "shard_leases",
    metadata,
    Column("shard", Integer, primary_key=True),
    Column("owner", String),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("owner_since", UTCDateTime),
)

# Live coordinators (their own heartbeat), for load spreading and ``saga status``.
coordinators = Table(
    "coordinators",
    metadata,
    Column("identity", String, primary_key=True),
    Column("host", String, nullable=False),
    Column("node", String, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("degraded", Text),
    Column("http", String),
)

# Settings fixed when the database is created, e.g. ``shard_count`` (64).
saga_meta = Table(
    "saga_meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)
