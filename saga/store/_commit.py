"""The group commit: every workflow write of a batch, fenced, in one transaction.

This is the hot path of every step. On PostgreSQL a batch is usually one statement
(:data:`_ONE_STATEMENT`, one round trip with no BEGIN or COMMIT); otherwise, and on
SQLite (where a statement costs microseconds, not a round trip), it is a fence per batch
or per write (built by :func:`_fence`, returning the shards of the workflows whose
version held) and then one executemany per table. Either way each write is atomic on
its own: a stale one writes nothing and is reported, the others commit.
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
    column,
    delete,
    func,
    insert,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from saga.converter import dumps
from saga.errors import LeaseLostError
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


async def commit_batch(tx: Tx, batch: WriteBatch, backend: str, now: datetime) -> list[str]:
    """Apply every write of ``batch`` whose fence holds, inside the caller's transaction.

    Returns the ids of the stale writes, of which nothing is written. A batch with a
    lease fence raises LeaseLostError first, writing nothing, if a lease it relies on moved.
    """
    if batch.fence is not None and batch.fence.epochs:
        await check_leases(tx, batch.fence)
    # Rows locked in one global order: two group commits cannot deadlock.
    writes = sorted(batch.writes, key=lambda w: w.workflow_id)
    fences = [_fence_params(w, now) for w in writes]
    shards: dict[str, int] = {}
    if backend == "postgresql" and len({w.workflow_id for w in writes}) == len(writes) > 1:
        for row in await tx.fetch(_FENCE_MANY, _fence_arrays(fences)):
            shards[row.workflow_id] = row.shard
        held = [w for w in writes if w.workflow_id in shards]
    else:  # SQLite, a single write, or one workflow written twice (the second is stale)
        held = []
        for write, params in zip(writes, fences, strict=True):
            row = await tx.fetchrow(_fence_one(*_shape(write)), params)
            if row is not None:
                shards[row.workflow_id] = row.shard
                held.append(write)
    for query, rows in _table_rows(WriteBatch(held, batch.mark_sent), shards, now):
        await tx.executemany(query, rows)
    kept = {id(w) for w in held}
    return [w.workflow_id for w in writes if id(w) not in kept]


# The whole group commit as one PostgreSQL statement, run outside any explicit
# transaction: one round trip instead of BEGIN, lease check, fence, a statement per table
# and COMMIT. Every table's change is gated on its workflow's row in ``fenced``, so a
# stale write leaves nothing behind while the others commit; the lease check gates the
# fence itself, so a lost lease writes nothing at all. The sub-statements of one
# statement share a snapshot and cannot see each other's rows, so the batches that
# delete and re-add one key take the transaction path (see :func:`fits_one_statement`);
# ``sent`` skips the rows this statement deletes.
_ONE_STATEMENT = Query(
    text(
        """
WITH held AS (
    SELECT l.shard FROM shard_leases l
    JOIN unnest(:l_shard ::int[], :l_epoch ::bigint[]) AS f(shard, epoch)
        ON l.shard = f.shard AND l.epoch = f.epoch
    WHERE l.owner = :l_owner AND l.expires_at > clock_timestamp()
),
fenced AS (
    UPDATE workflows w SET
        version = w.version + 1,
        history_length = w.history_length + b.added,
        status = coalesce(b.status, w.status),
        result = CASE WHEN b.closes THEN b.result ELSE w.result END,
        error = CASE WHEN b.closes THEN b.error ELSE w.error END,
        close_time = CASE WHEN b.closes THEN b.close_time ELSE w.close_time END,
        stuck_reason = CASE WHEN b.keep_stuck THEN w.stuck_reason ELSE b.stuck END
    FROM unnest(
        :b_id ::varchar[], :b_run ::varchar[], :b_expected ::int[], :b_added ::int[],
        :b_status ::varchar[], :b_closes ::bool[], :b_result ::text[], :b_error ::text[],
        :b_close_time ::timestamptz[], :b_keep_stuck ::bool[], :b_stuck ::text[]
    ) AS b(id, run, expected, added, status, closes, result, error, close_time,
           keep_stuck, stuck)
    WHERE w.workflow_id = ANY(:b_id ::varchar[]) AND w.workflow_id = b.id
        AND w.run_id = b.run AND w.version = b.expected
        AND (SELECT count(*) FROM held) = :l_count
    RETURNING w.workflow_id, w.shard, b.closes
),
closing AS (SELECT workflow_id FROM fenced WHERE closes),
done_outbox AS (
    SELECT d.wf, d.seq FROM unnest(:do_wf ::varchar[], :do_seq ::int[]) AS d(wf, seq)
    WHERE d.wf IN (SELECT workflow_id FROM fenced)
),
del_outbox_of AS (DELETE FROM outbox WHERE workflow_id IN (SELECT workflow_id FROM closing)),
del_timers_of AS (DELETE FROM timers WHERE workflow_id IN (SELECT workflow_id FROM closing)),
del_outbox AS (
    DELETE FROM outbox o USING done_outbox d WHERE o.workflow_id = d.wf AND o.seq = d.seq
),
del_timers AS (
    DELETE FROM timers t
    USING unnest(:dt_wf ::varchar[], :dt_kind ::varchar[], :dt_seq ::int[]) AS d(wf, kind, seq)
    WHERE t.workflow_id = d.wf AND t.kind = d.kind AND t.seq = d.seq
        AND d.wf IN (SELECT workflow_id FROM fenced)
),
del_inbox AS (
    DELETE FROM inbox i USING unnest(:di_id ::bigint[], :di_wf ::varchar[]) AS d(id, wf)
    WHERE i.id = d.id AND d.wf IN (SELECT workflow_id FROM fenced)
),
ins_events AS (
    INSERT INTO history_events (run_id, event_id, workflow_id, type, timestamp, attributes)
    SELECT e.run, e.id, e.wf, e.type, e.ts, e.attributes
    FROM unnest(
        :e_run ::varchar[], :e_id ::int[], :e_wf ::varchar[], :e_type ::varchar[],
        :e_ts ::timestamptz[], :e_attributes ::text[]
    ) AS e(run, id, wf, type, ts, attributes)
    WHERE e.wf IN (SELECT workflow_id FROM fenced)
),
ins_outbox AS (
    INSERT INTO outbox (workflow_id, seq, attempt, run_id, shard, message, sent, created_at)
    SELECT o.wf, o.seq, o.attempt, o.run, f.shard, o.message, false, :now ::timestamptz
    FROM unnest(
        :o_wf ::varchar[], :o_seq ::int[], :o_attempt ::int[], :o_run ::varchar[],
        :o_message ::text[]
    ) AS o(wf, seq, attempt, run, message)
    JOIN fenced f ON f.workflow_id = o.wf AND NOT f.closes
),
ins_timers AS (
    INSERT INTO timers (workflow_id, kind, seq, run_id, attempt, due_at, shard)
    SELECT t.wf, t.kind, t.seq, t.run, t.attempt, t.due_at, f.shard
    FROM unnest(
        :t_wf ::varchar[], :t_kind ::varchar[], :t_seq ::int[], :t_run ::varchar[],
        :t_attempt ::int[], :t_due_at ::timestamptz[]
    ) AS t(wf, kind, seq, run, attempt, due_at)
    JOIN fenced f ON f.workflow_id = t.wf AND NOT f.closes
    ON CONFLICT (workflow_id, kind, seq) DO UPDATE SET
        run_id = excluded.run_id, attempt = excluded.attempt,
        due_at = excluded.due_at, shard = excluded.shard
),
sent AS (
    UPDATE outbox o SET sent = true
    FROM unnest(:s_wf ::varchar[], :s_seq ::int[], :s_attempt ::int[]) AS s(wf, seq, attempt)
    WHERE o.workflow_id = s.wf AND o.seq = s.seq AND o.attempt = s.attempt
        AND o.workflow_id NOT IN (SELECT workflow_id FROM closing)
        AND (o.workflow_id, o.seq) NOT IN (SELECT wf, seq FROM done_outbox)
)
SELECT ARRAY(SELECT workflow_id FROM fenced) AS written, ARRAY(SELECT shard FROM held) AS held
"""
    ).columns(column("written", ARRAY(String())), column("held", ARRAY(Integer())))
)


def fits_one_statement(batch: WriteBatch) -> bool:
    """Whether :func:`commit_statement` can apply ``batch`` (PostgreSQL only).

    Not when a workflow is written twice, nor when a write deletes and adds the same
    outbox seq or timer key: one statement cannot order its own delete and insert.
    """
    writes = batch.writes
    if len({w.workflow_id for w in writes}) != len(writes):
        return False
    return not any(
        any(m.seq in w.outbox_delete_seqs for m in w.outbox_add)
        or any((t.kind, t.seq) in w.timers_delete for t in w.timers_add)
        for w in writes
        if not w.closes
    )


async def commit_statement(tx: Tx, batch: WriteBatch, now: datetime) -> list[str]:
    """:func:`commit_batch` as one statement; see ``_ONE_STATEMENT``."""
    writes = sorted(batch.writes, key=lambda w: w.workflow_id)  # lock order, as above
    open_writes = [w for w in writes if not w.closes]
    fence = batch.fence
    epochs = sorted(fence.epochs.items()) if fence is not None else []
    params: dict[str, Any] = {
        "l_owner": fence.owner if fence is not None else "",
        "l_shard": [s for s, _ in epochs],
        "l_epoch": [e for _, e in epochs],
        "l_count": len(epochs),
        "now": now,
    }
    fences = [_fence_params(w, now) for w in writes]
    params.update(_fence_arrays(fences))
    _columns(params, "do", [(w.workflow_id, s) for w in open_writes for s in w.outbox_delete_seqs])
    _columns(
        params,
        "dt",
        [(w.workflow_id, k.value, s) for w in open_writes for k, s in w.timers_delete],
    )
    _columns(params, "di", [(i, w.workflow_id) for w in writes for i in w.inbox_delete])
    _columns(
        params,
        "e",
        [
            (w.run_id, e.event_id, w.workflow_id, e.type, aware_utc(e.timestamp), _attributes(e))
            for w in writes
            for e in w.events
        ],
    )
    _columns(
        params,
        "o",
        [
            (m.workflow_id, m.seq, m.attempt, m.run_id, m.model_dump_json())
            for w in open_writes
            for m in w.outbox_add
        ],
    )
    _columns(
        params,
        "t",
        [
            (t.workflow_id, t.kind.value, t.seq, t.run_id, t.attempt, aware_utc(t.due_at))
            for w in open_writes
            for t in w.timers_add
        ],
    )
    _columns(params, "s", sorted(batch.mark_sent))
    row = await tx.fetchrow(_ONE_STATEMENT, params)
    written = set(row.written)
    if fence is not None and len(row.held) != len(epochs):
        raise LeaseLostError(sorted(set(fence.epochs) - set(row.held)))
    return [w.workflow_id for w in writes if w.workflow_id not in written]


_FENCE_KEYS = tuple(f"b_{name}" for name in _FENCE_TYPES)


def _fence_arrays(fences: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The writes' fence parameters as one array per column, for ``unnest``."""
    return {key: [f[key] for f in fences] for key in _FENCE_KEYS}


_COLUMNS = {
    "do": ("wf", "seq"),
    "dt": ("wf", "kind", "seq"),
    "di": ("id", "wf"),
    "e": ("run", "id", "wf", "type", "ts", "attributes"),
    "o": ("wf", "seq", "attempt", "run", "message"),
    "t": ("wf", "kind", "seq", "run", "attempt", "due_at"),
    "s": ("wf", "seq", "attempt"),
}


def _attributes(event: HistoryEvent) -> str:
    return event.attributes.model_dump_json()


def _columns(params: dict[str, Any], prefix: str, rows: list[tuple[Any, ...]]) -> None:
    """Rows as one array parameter per column, named ``<prefix>_<column>``."""
    names = _COLUMNS[prefix]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    for name, values in zip(names, columns, strict=True):
        params[f"{prefix}_{name}"] = list(values)


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
