"""The group commit: every workflow write of a batch, fenced, in one transaction.

This is the hot path of every step, so its statements are few and fixed: one fence
per batch on PostgreSQL (an UPDATE joined to ``unnest`` of the batch's arrays, one round
trip whatever the batch) or one per write on SQLite (where a statement costs
microseconds, not a round trip), then one executemany per table. Both fences are
built by :func:`_fence` and return the shards of the workflows whose version held; a
write missing from that answer is a conflict, and rolls the whole transaction back.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Integer,
    String,
    Text,
    Update,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from saga.converter import dumps
from saga.history import HistoryEvent
from saga.messages import TaskMessage
from saga.store._engine import Tx
from saga.store._leases import check as check_leases
from saga.store._query import ParameterError, Query, aware_utc
from saga.store.base import TimerRow, WorkflowWrite, WriteBatch
from saga.store.tables import (
    UTCDateTime,
    history_events,
    inbox,
    outbox,
    timers,
    workflows,
)

# The values of one write's fence, in the order of unnest's columns.
_FENCE_TYPES: dict[str, Any] = {
    "id": String(),
    "run": String(),
    "expected": Integer(),
    "added": Integer(),
    "status": String(),  # None: unchanged
    "closes": Boolean(),
    "result": Text(),  # JSON text, already serialised
    "error": Text(),
    "close_time": DateTime(timezone=True),
    "keep_stuck": Boolean(),
    "stuck": Text(),  # the new stuck_reason unless keep_stuck; None clears it
}


class Conflicts(Exception):  # noqa: N818 - an outcome of commit, not a failure
    """Raised inside the transaction to roll it back; carries the stale workflows."""

    def __init__(self, workflow_ids: list[str]) -> None:
        super().__init__(workflow_ids)
        self.workflow_ids = workflow_ids


def _fence(
    source: Mapping[str, ColumnElement[Any]], values: dict[str, Any], *where: ColumnElement[bool]
) -> Update:
    """The conditional UPDATE that keeps a stale writer out; returns the shard if it held."""
    c = workflows.c
    return (
        update(workflows)
        .where(
            c.workflow_id == source["id"],
            c.run_id == source["run"],
            c.version == source["expected"],
            *where,
        )
        .values(version=c.version + 1, history_length=c.history_length + source["added"], **values)
        .returning(c.workflow_id, c.shard)
    )


@functools.cache
def _fence_one(sets_status: bool, closes: bool, stuck: str) -> Query:
    """One write's fence, setting only the columns this shape of write changes.

    On SQLite, assigning an indexed column (status) costs index upkeep even when the
    value stays the same, so the common step (version and length only) touches no index.
    """
    types = {**_FENCE_TYPES, "close_time": UTCDateTime()}
    source = {name: bindparam(f"b_{name}", type_=t) for name, t in types.items()}
    values: dict[str, Any] = {}
    if sets_status:
        values["status"] = source["status"]
    if closes:
        values.update(result=source["result"], error=source["error"])
        values["close_time"] = source["close_time"]
    if stuck == "set":
        values["stuck_reason"] = source["stuck"]
    elif stuck == "clear":
        values["stuck_reason"] = None
    return Query(_fence(source, values))


def _fence_many() -> Update:
    """Every write of a batch in one statement, whatever its shape (PostgreSQL only)."""
    arrays = {name: bindparam(f"b_{name}", type_=ARRAY(t)) for name, t in _FENCE_TYPES.items()}
    batch = func.unnest(*arrays.values()).table_valued(*_FENCE_TYPES).render_derived()
    v = {name: batch.c[name] for name in _FENCE_TYPES}
    c = workflows.c
    # = ANY(ids) lets the planner find the rows through the primary key (in key order,
    # which is also the order they are locked in) rather than join a whole-table scan.
    return _fence(
        v,
        {
            "status": func.coalesce(v["status"], c.status),
            "result": case((v["closes"], v["result"]), else_=c.result),
            "error": case((v["closes"], v["error"]), else_=c.error),
            "close_time": case((v["closes"], v["close_time"]), else_=c.close_time),
            "stuck_reason": case((v["keep_stuck"], c.stuck_reason), else_=v["stuck"]),
        },
        c.workflow_id == any_(arrays["id"]),
    )


_FENCE_MANY = Query(lambda dialect: _fence_many())


_INSERT_EVENTS = Query(insert(history_events))
_INSERT_OUTBOX = Query(insert(outbox))
_INSERT_TIMERS = Query(insert(timers))
_DELETE_OUTBOX_OF = Query(delete(outbox).where(outbox.c.workflow_id == bindparam("b_workflow_id")))
_DELETE_TIMERS_OF = Query(delete(timers).where(timers.c.workflow_id == bindparam("b_workflow_id")))
_DELETE_INBOX_ROW = Query(delete(inbox).where(inbox.c.id == bindparam("b_id")))
_DELETE_OUTBOX_SEQ = Query(
    delete(outbox).where(
        outbox.c.workflow_id == bindparam("b_workflow_id"), outbox.c.seq == bindparam("b_seq")
    )
)
_DELETE_TIMER = Query(
    delete(timers).where(
        timers.c.workflow_id == bindparam("b_workflow_id"),
        timers.c.kind == bindparam("b_kind"),
        timers.c.seq == bindparam("b_seq"),
    )
)
MARK_SENT = Query(
    update(outbox)
    .where(
        outbox.c.workflow_id == bindparam("b_workflow_id"),
        outbox.c.seq == bindparam("b_seq"),
        outbox.c.attempt == bindparam("b_attempt"),
    )
    .values(sent=True)
)


async def commit_batch(tx: Tx, batch: WriteBatch, backend: str, now: datetime) -> None:
    """Apply ``batch`` inside the caller's transaction; raises Conflicts on a stale write.

    A batch with a lease fence raises LeaseLostError first if a lease it relies on moved.
    """
    if batch.fence is not None and batch.fence.epochs:
        await check_leases(tx, batch.fence)
    # Rows locked in one global order: two group commits cannot deadlock.
    writes = sorted(batch.writes, key=lambda w: w.workflow_id)
    fences = [_fence_params(w, now) for w in writes]
    shards: dict[str, int] = {}
    if backend == "postgresql" and len({w.workflow_id for w in writes}) == len(writes) > 1:
        arrays = {key: [f[key] for f in fences] for key in fences[0]}
        for row in await tx.fetch(_FENCE_MANY, arrays):
            shards[row.workflow_id] = row.shard
    else:  # SQLite, a single write, or one workflow written twice (the second is stale)
        for write, params in zip(writes, fences, strict=True):
            row = await tx.fetchrow(_fence_one(*_shape(write)), params)
            if row is not None:
                shards[row.workflow_id] = row.shard
    conflicts = [w.workflow_id for w in writes if w.workflow_id not in shards]
    if conflicts:
        raise Conflicts(conflicts)
    for query, rows in _table_rows(batch, shards, now):
        await tx.executemany(query, rows)


def _shape(write: WorkflowWrite) -> tuple[bool, bool, str]:
    stuck = "set" if write.stuck_reason is not None else "clear" if write.clear_stuck else "keep"
    return write.status is not None, write.closes, stuck


def _fence_params(write: WorkflowWrite, now: datetime) -> dict[str, Any]:
    closes = write.closes
    error = write.error.model_dump(mode="json") if closes and write.error is not None else None
    return {
        "b_id": write.workflow_id,
        "b_run": write.run_id,
        "b_expected": write.expected_version,
        "b_added": len(write.events),
        "b_status": None if write.status is None else write.status.value,
        "b_closes": closes,
        "b_result": _json(write.result) if closes else None,
        "b_error": _json(error),
        "b_close_time": _close_time(write, now) if closes else None,
        "b_keep_stuck": write.stuck_reason is None and not write.clear_stuck,
        "b_stuck": write.stuck_reason,
    }


def _close_time(write: WorkflowWrite, now: datetime) -> datetime:
    try:
        return aware_utc(write.close_time or now)
    except ValueError as exc:
        raise ParameterError(f"close_time of {write.workflow_id!r}: {exc}") from exc


def _json(value: Any) -> str | None:
    return None if value is None else dumps(value).decode()


def _table_rows(
    batch: WriteBatch, shards: dict[str, int], now: datetime
) -> Iterator[tuple[Query, list[dict[str, Any]]]]:
    """Each table's changes as one executemany; deletes first, so a key may be re-added."""
    writes = batch.writes
    closing = [{"b_workflow_id": w.workflow_id} for w in writes if w.closes]
    open_writes = [w for w in writes if not w.closes]
    # Closing writes delete every outbox row and timer of the workflow.
    yield _DELETE_OUTBOX_OF, closing
    yield _DELETE_TIMERS_OF, closing
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
    yield _DELETE_INBOX_ROW, [{"b_id": i} for w in writes for i in w.inbox_delete]
    yield _INSERT_EVENTS, [_event_row(w, e) for w in writes for e in w.events]
    yield (
        _INSERT_OUTBOX,
        [_outbox_row(m, shards[w.workflow_id], now) for w in open_writes for m in w.outbox_add],
    )
    yield (
        _INSERT_TIMERS,
        [_timer_row(t, shards[w.workflow_id]) for w in open_writes for t in w.timers_add],
    )
    yield MARK_SENT, [sent_key(key) for key in sorted(batch.mark_sent)]


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


def sent_key(key: tuple[str, int, int]) -> dict[str, Any]:
    """MARK_SENT's parameters for an outbox key."""
    workflow_id, seq, attempt = key
    return {"b_workflow_id": workflow_id, "b_seq": seq, "b_attempt": attempt}
