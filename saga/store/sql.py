"""SQLStore: the Store protocol on SQLAlchemy Core, for SQLite and PostgreSQL.

Core rather than the ORM because :meth:`SQLStore.commit` is the hot path of every step:
one transaction holding a fenced UPDATE per workflow and then one executemany per table,
with nothing to track, flush or refresh.

Example::

    async with SQLStore("sqlite+aiosqlite:///saga.db") as store:
        await store.migrate()
        record = await store.get_workflow("trip-alice")
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Executable,
    Integer,
    Row,
    String,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from saga.converter import dumps, loads
from saga.errors import (
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from saga.failure import FailureInfo
from saga.history import HistoryEvent, WorkflowStatus
from saga.messages import TaskMessage
from saga.store._engine import Database
from saga.store.base import (
    InboxRow,
    OutboxRow,
    TimerKind,
    TimerRow,
    WorkflowPage,
    WorkflowRecord,
    WorkflowWrite,
    WriteBatch,
)
from saga.store.tables import (
    JSONText,
    UTCDateTime,
    history_events,
    inbox,
    outbox,
    timers,
    workflow_types,
    workflows,
)

_RUNNING = WorkflowStatus.RUNNING.value

# commit() runs only these prebuilt statements, so SQLAlchemy never rebuilds or recompiles
# one on the hot path. Bind names start with b_ so they never clash with column names.
_INSERT_EVENTS = insert(history_events)
_INSERT_OUTBOX = insert(outbox)  # plain inserts: SQLAlchemy 2.0 cannot cache dialect upserts
_INSERT_TIMERS = insert(timers)
_DELETE_CLOSED_OUTBOX = delete(outbox).where(
    outbox.c.workflow_id.in_(bindparam("b_ids", expanding=True))
)
_DELETE_CLOSED_TIMERS = delete(timers).where(
    timers.c.workflow_id.in_(bindparam("b_ids", expanding=True))
)
_DELETE_INBOX = delete(inbox).where(inbox.c.id.in_(bindparam("b_ids", expanding=True)))
_DELETE_OUTBOX_SEQ = delete(outbox).where(
    outbox.c.workflow_id == bindparam("b_workflow_id"), outbox.c.seq == bindparam("b_seq")
)
_DELETE_TIMER = delete(timers).where(
    timers.c.workflow_id == bindparam("b_workflow_id"),
    timers.c.kind == bindparam("b_kind"),
    timers.c.seq == bindparam("b_seq"),
)
_MARK_SENT = (
    update(outbox)
    .where(
        outbox.c.workflow_id == bindparam("b_workflow_id"),
        outbox.c.seq == bindparam("b_seq"),
        outbox.c.attempt == bindparam("b_attempt"),
    )
    .values(sent=True)
)


class SQLStore:
    """The Store for ``sqlite+aiosqlite://`` and ``postgresql+asyncpg://`` URLs.

    Args:
        url: SQLAlchemy database URL; ``sqlite+aiosqlite://`` alone is an in-memory database.
        connect_timeout: Seconds :meth:`connect` keeps retrying before raising StoreError.
        pool_size: Connections kept open to PostgreSQL.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0, pool_size: int = 10) -> None:
        self.url = url
        self._db = Database(url, connect_timeout=connect_timeout, pool_size=pool_size)
        self._tx = self._db.transaction

    async def __aenter__(self) -> SQLStore:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the engine, retrying with backoff; raises StoreError if unreachable."""
        await self._db.connect()

    async def aclose(self) -> None:
        """Dispose of the engine; idempotent."""
        await self._db.aclose()

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision; harmless when already there."""
        await self._db.migrate()

    # -- workflows ---------------------------------------------------------------------

    async def create_workflow(self, record: WorkflowRecord) -> None:
        """Insert a new RUNNING workflow, or replace a closed one with the same id.

        One upsert decides atomically: the primary key serialises concurrent starts and
        the conflict branch only fires when the existing row is closed.
        """
        row = {
            "workflow_id": record.workflow_id,
            "run_id": record.run_id,
            "workflow_type": record.workflow_type,
            "status": _RUNNING,
            "version": 0,
            "shard": record.shard,
            "input": record.input,
            "result": None,
            "error": None,
            "start_time": record.start_time,
            "close_time": None,
            "history_length": 0,
            "stuck_reason": None,
            "trace_context": record.trace_context,
            "execution_timeout": record.execution_timeout,
        }
        new = self._db.insert(workflows).values(row)
        stmt = new.on_conflict_do_update(
            index_elements=[workflows.c.workflow_id],
            set_={name: new.excluded[name] for name in row if name != "workflow_id"},
            where=workflows.c.status != _RUNNING,
        ).returning(workflows.c.workflow_id)
        async with self._tx("create_workflow", write=True) as conn:
            if (await conn.execute(stmt)).first() is None:
                running = await conn.scalar(
                    select(workflows.c.run_id).where(workflows.c.workflow_id == record.workflow_id)
                )
                raise WorkflowAlreadyStartedError(record.workflow_id, str(running))
            # Input queued for the previous run is not meant for this one.
            await conn.execute(delete(inbox).where(inbox.c.workflow_id == record.workflow_id))

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The current run of a workflow, or None."""
        async with self._tx("get_workflow") as conn:
            result = await conn.execute(
                select(workflows).where(workflows.c.workflow_id == workflow_id)
            )
            row = result.first()
        return None if row is None else _record(row)

    async def load_history(self, workflow_id: str, run_id: str) -> list[HistoryEvent]:
        """All events of a run, in order."""
        t = history_events
        query = (
            select(t.c.event_id, t.c.type, t.c.timestamp, t.c.attributes)
            .where(t.c.run_id == run_id, t.c.workflow_id == workflow_id)
            .order_by(t.c.event_id)
        )
        async with self._tx("load_history") as conn:
            rows = (await conn.execute(query)).all()
        return [HistoryEvent.build(r.event_id, r.type, r.timestamp, r.attributes) for r in rows]

    # -- the hot path --------------------------------------------------------------------

    async def commit(self, batch: WriteBatch) -> list[str]:
        """Apply the batch in one transaction; on any fence conflict write nothing.

        Returns the ids of the workflows whose version had moved on.
        """
        if not batch.writes and not batch.mark_sent:
            return []
        now = datetime.now(UTC)
        async with self._tx("commit", write=True) as conn:
            shards: dict[str, int] = {}
            conflicts: list[str] = []
            # Rows locked in one global order: two group commits cannot deadlock.
            for write in sorted(batch.writes, key=lambda w: w.workflow_id):
                fence, params = _fence(write, now)
                shard = (await conn.execute(fence, params)).scalar_one_or_none()
                if shard is None:
                    conflicts.append(write.workflow_id)
                else:
                    shards[write.workflow_id] = shard
            if conflicts:
                await conn.rollback()
                return conflicts
            for stmt, rows in _batch_statements(batch, shards, now):
                if rows:
                    await conn.execute(stmt, rows)
        return []

    # -- outbox and timers -------------------------------------------------------------

    async def outbox(self, *, only_unsent: bool, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows, oldest first."""
        c = outbox.c
        query = select(c.message, c.sent).order_by(c.created_at, c.workflow_id, c.seq, c.attempt)
        if only_unsent:
            query = query.where(c.sent.is_(False))
        async with self._tx("outbox") as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [OutboxRow(TaskMessage.model_validate(r.message), bool(r.sent)) for r in rows]

    async def mark_sent(self, keys: Sequence[tuple[str, int, int]]) -> None:
        """Record that these tasks reached the broker; keys of deleted rows are ignored."""
        if not keys:
            return
        async with self._tx("mark_sent", write=True) as conn:
            await conn.execute(_MARK_SENT, [_sent_key(key) for key in sorted(keys)])

    async def reset_outbox(self) -> int:
        """Mark every row unsent (after a restart over a non-durable transport)."""
        async with self._tx("reset_outbox", write=True) as conn:
            result = await conn.execute(
                update(outbox).where(outbox.c.sent.is_(True)).values(sent=False)
            )
        return int(result.rowcount)

    async def timers_due_before(self, when: datetime, limit: int = 1000) -> list[TimerRow]:
        """Timers due before ``when``, soonest first."""
        c = timers.c
        query = (
            select(timers)
            .where(c.due_at < when)
            .order_by(c.due_at, c.workflow_id, c.kind, c.seq)
            .limit(limit)
        )
        async with self._tx("timers_due_before") as conn:
            rows = (await conn.execute(query)).all()
        return [
            TimerRow(
                workflow_id=r.workflow_id,
                run_id=r.run_id,
                kind=TimerKind(r.kind),
                seq=r.seq,
                due_at=r.due_at,
                attempt=r.attempt,
                shard=r.shard,
            )
            for r in rows
        ]

    # -- inbox -------------------------------------------------------------------------

    async def add_inbox(self, workflow_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Queue input for a RUNNING workflow; raises WorkflowNotFoundError otherwise.

        The row is inserted by a SELECT on the running workflow, so the check and the
        insert are one statement.
        """
        source = select(
            literal(workflow_id, String()),
            literal(kind, String()),
            literal(payload, JSONText()),
            literal(datetime.now(UTC), UTCDateTime()),
        ).where(workflows.c.workflow_id == workflow_id, workflows.c.status == _RUNNING)
        stmt = insert(inbox).from_select(["workflow_id", "kind", "payload", "created_at"], source)
        async with self._tx("add_inbox", write=True) as conn:
            if (await conn.execute(stmt)).rowcount == 1:
                return
            status = await conn.scalar(
                select(workflows.c.status).where(workflows.c.workflow_id == workflow_id)
            )
        raise WorkflowNotFoundError(workflow_id, f"it is {status}" if status else "")

    async def inbox_for(self, workflow_id: str) -> list[InboxRow]:
        """Pending inbox rows of a workflow, oldest first."""
        query = select(inbox).where(inbox.c.workflow_id == workflow_id).order_by(inbox.c.id)
        async with self._tx("inbox_for") as conn:
            rows = (await conn.execute(query)).all()
        return [InboxRow(r.id, r.workflow_id, r.kind, r.payload, r.created_at) for r in rows]

    async def workflows_needing_work(self, limit: int = 1000) -> list[str]:
        """RUNNING workflows never activated (version 0), with inbox rows, or stuck."""
        c = workflows.c
        query = (
            select(c.workflow_id)
            .where(
                c.status == _RUNNING,
                or_(
                    c.version == 0,
                    c.stuck_reason.is_not(None),
                    exists().where(inbox.c.workflow_id == c.workflow_id),
                ),
            )
            .order_by(c.start_time, c.workflow_id)
            .limit(limit)
        )
        async with self._tx("workflows_needing_work") as conn:
            return list((await conn.scalars(query)).all())

    # -- listing -----------------------------------------------------------------------

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | None = None,
        workflow_type: str | None = None,
        id_prefix: str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> WorkflowPage:
        """Workflows newest first by (start_time, workflow_id), paged by an opaque cursor.

        Raises ValueError for a cursor this method did not produce.
        """
        c = workflows.c
        query = select(workflows).order_by(c.start_time.desc(), c.workflow_id.desc())
        if status is not None:
            query = query.where(c.status == status.value)
        if workflow_type is not None:
            query = query.where(c.workflow_type == workflow_type)
        if id_prefix:
            query = query.where(c.workflow_id.startswith(id_prefix, autoescape=True))
        if started_after is not None:
            query = query.where(c.start_time > started_after)
        if started_before is not None:
            query = query.where(c.start_time < started_before)
        if cursor is not None:
            last_start, last_id = _decode_cursor(cursor)
            query = query.where(
                or_(
                    c.start_time < last_start,
                    (c.start_time == last_start) & (c.workflow_id < last_id),
                )
            )
        async with self._tx("list_workflows") as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
        records = [_record(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = _encode_cursor(records[-1]) if more and records else None
        return WorkflowPage(records, next_cursor)

    async def count_by_status(self) -> dict[str, int]:
        """How many workflows have each status (statuses with none are left out)."""
        query = select(workflows.c.status, func.count()).group_by(workflows.c.status)
        async with self._tx("count_by_status") as conn:
            rows = (await conn.execute(query)).all()
        return {status: count for status, count in rows}

    async def register_workflow_types(self, names: Sequence[str]) -> None:
        """Record workflow types some coordinator can run; known names are kept as they are."""
        if not names:
            return
        now = datetime.now(UTC)
        stmt = self._db.insert(workflow_types).on_conflict_do_nothing()
        async with self._tx("register_workflow_types", write=True) as conn:
            await conn.execute(stmt, [{"name": n, "registered_at": now} for n in set(names)])

    async def known_workflow_types(self) -> list[str]:
        """Every workflow type ever registered, sorted."""
        query = select(workflow_types.c.name).order_by(workflow_types.c.name)
        async with self._tx("known_workflow_types") as conn:
            return list((await conn.scalars(query)).all())


def _fence(write: WorkflowWrite, now: datetime) -> tuple[Executable, dict[str, Any]]:
    """The conditional UPDATE that keeps a stale writer out, and its parameters."""
    stuck = "set" if write.stuck_reason is not None else "clear" if write.clear_stuck else "keep"
    params: dict[str, Any] = {
        "b_workflow_id": write.workflow_id,
        "b_run_id": write.run_id,
        "b_expected": write.expected_version,
        "b_version": write.expected_version + 1,
        "b_added": len(write.events),
    }
    if write.status is not None:
        params["b_status"] = write.status.value
    if write.stuck_reason is not None:
        params["b_stuck"] = write.stuck_reason
    if write.closes:
        params["b_result"] = write.result
        params["b_error"] = None if write.error is None else write.error.model_dump(mode="json")
        params["b_close_time"] = write.close_time or now
    return _fence_statement(write.status is not None, write.closes, stuck), params


@functools.cache
def _fence_statement(sets_status: bool, closes: bool, stuck: str) -> Executable:
    """One prebuilt UPDATE per shape of write; returns the row's shard when the fence holds."""
    c = workflows.c
    values: dict[str, Any] = {
        "version": bindparam("b_version"),
        "history_length": c.history_length + bindparam("b_added", type_=Integer()),
    }
    if sets_status:
        values["status"] = bindparam("b_status")
    if closes:
        values["result"] = bindparam("b_result", type_=JSONText())
        values["error"] = bindparam("b_error", type_=JSONText())
        values["close_time"] = bindparam("b_close_time", type_=UTCDateTime())
    if stuck == "set":
        values["stuck_reason"] = bindparam("b_stuck")
    elif stuck == "clear":
        values["stuck_reason"] = None
    return (
        update(workflows)
        .where(
            c.workflow_id == bindparam("b_workflow_id"),
            c.run_id == bindparam("b_run_id"),
            c.version == bindparam("b_expected"),
        )
        .values(values)
        .returning(c.shard)
    )


def _batch_statements(
    batch: WriteBatch, shards: dict[str, int], now: datetime
) -> Iterator[tuple[Executable, dict[str, Any] | list[dict[str, Any]]]]:
    """Each table's changes as one statement: a dict runs it once, a list as executemany.

    Deletes come before inserts, so a key may be deleted and added in one write.
    """
    writes = batch.writes
    closing = [w.workflow_id for w in writes if w.closes]
    open_writes = [w for w in writes if not w.closes]
    if closing:
        yield _DELETE_CLOSED_OUTBOX, {"b_ids": closing}
        yield _DELETE_CLOSED_TIMERS, {"b_ids": closing}
    yield (
        _DELETE_OUTBOX_SEQ,
        [
            {"b_workflow_id": w.workflow_id, "b_seq": seq}
            for w in open_writes
            for seq in w.outbox_delete_seqs
        ],
    )
    # A timer added under an existing key replaces it (a rescheduled retry, say).
    yield (
        _DELETE_TIMER,
        [
            {"b_workflow_id": w.workflow_id, "b_kind": kind.value, "b_seq": seq}
            for w in open_writes
            for kind, seq in [*w.timers_delete, *((t.kind, t.seq) for t in w.timers_add)]
        ],
    )
    inbox_ids = [i for w in writes for i in w.inbox_delete]
    if inbox_ids:
        yield _DELETE_INBOX, {"b_ids": inbox_ids}
    yield _INSERT_EVENTS, [_event_row(w, e) for w in writes for e in w.events]
    yield (
        _INSERT_OUTBOX,
        [_outbox_row(m, shards[w.workflow_id], now) for w in open_writes for m in w.outbox_add],
    )
    yield (
        _INSERT_TIMERS,
        [_timer_row(t, shards[w.workflow_id]) for w in open_writes for t in w.timers_add],
    )
    yield _MARK_SENT, [_sent_key(key) for key in sorted(batch.mark_sent)]


def _event_row(write: WorkflowWrite, event: HistoryEvent) -> dict[str, Any]:
    return {
        "run_id": write.run_id,
        "event_id": event.event_id,
        "workflow_id": write.workflow_id,
        "type": event.type,
        "timestamp": event.timestamp,
        "attributes": event.attributes.model_dump(mode="json"),
    }


def _outbox_row(message: TaskMessage, shard: int, now: datetime) -> dict[str, Any]:
    return {
        "workflow_id": message.workflow_id,
        "seq": message.seq,
        "attempt": message.attempt,
        "run_id": message.run_id,
        "shard": shard,
        "message": message.model_dump(mode="json"),
        "sent": False,
        "created_at": now,
    }


def _timer_row(timer: TimerRow, shard: int) -> dict[str, Any]:
    """A timer takes its workflow's shard, whatever ``timer.shard`` says."""
    return {
        "workflow_id": timer.workflow_id,
        "kind": timer.kind.value,
        "seq": timer.seq,
        "run_id": timer.run_id,
        "attempt": timer.attempt,
        "due_at": timer.due_at,
        "shard": shard,
    }


def _sent_key(key: tuple[str, int, int]) -> dict[str, Any]:
    workflow_id, seq, attempt = key
    return {"b_workflow_id": workflow_id, "b_seq": seq, "b_attempt": attempt}


def _record(row: Row[Any]) -> WorkflowRecord:
    return WorkflowRecord(
        workflow_id=row.workflow_id,
        run_id=row.run_id,
        workflow_type=row.workflow_type,
        status=WorkflowStatus(row.status),
        version=row.version,
        shard=row.shard,
        input=row.input,
        start_time=row.start_time,
        close_time=row.close_time,
        result=row.result,
        error=None if row.error is None else FailureInfo.model_validate(row.error),
        history_length=row.history_length,
        stuck_reason=row.stuck_reason,
        trace_context=row.trace_context,
        execution_timeout=row.execution_timeout,
    )


def _encode_cursor(last: WorkflowRecord) -> str:
    raw = dumps([last.start_time.isoformat(), last.workflow_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        start, workflow_id = loads(raw)
        when = datetime.fromisoformat(start)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"invalid list cursor {cursor!r}") from exc
    if when.tzinfo is None or not isinstance(workflow_id, str):
        raise ValueError(f"invalid list cursor {cursor!r}")
    return when, workflow_id
