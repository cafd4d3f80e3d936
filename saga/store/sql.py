"""SQLStore: the Store protocol for SQLite and PostgreSQL.

SQLAlchemy Core writes the statements (:mod:`saga.store._query` compiles each once per
dialect and runs it on the raw driver); each operation is a *body* of those statements
that the database runs whole: on SQLite synchronously, in one transaction, without
leaving the event loop; on PostgreSQL on one pooled connection, in autocommit unless
its statements must commit together. The group commit, the hot path of every step,
lives in :mod:`saga.store._commit`.

Example::

    async with SQLStore("sqlite+aiosqlite:///saga.db") as store:
        await store.migrate()
        record = await store.get_workflow("trip-alice")
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import (
    ClauseElement,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from saga.converter import dumps, loads
from saga.errors import (
    ConfigurationError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from saga.failure import FailureInfo
from saga.history import HistoryEvent, WorkflowStatus
from saga.messages import TaskMessage
from saga.store import _leases
from saga.store._commit import (
    MARK_SENT,
    Conflicts,
    commit_batch,
    commit_statement,
    fits_one_statement,
    sent_key,
)
from saga.store._engine import Tx, open_database
from saga.store._query import Query
from saga.store.base import (
    ClusterState,
    InboxRow,
    Member,
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
    saga_meta,
    timers,
    workflow_types,
    workflows,
)

_RUNNING = WorkflowStatus.RUNNING.value
_WF = workflows.c
_ID = bindparam("b_workflow_id", type_=String())
_LIMIT = bindparam("b_limit", type_=Integer())


def _insert(dialect: str) -> Callable[[Table], postgresql.Insert | sqlite.Insert]:
    """INSERT with ON CONFLICT clauses, which both dialects spell the same."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _upsert_workflow(dialect: str) -> ReturningInsert[Any]:
    # The conflict branch only fires when the existing row is closed.
    new = _insert(dialect)(workflows)
    return new.on_conflict_do_update(
        index_elements=[_WF.workflow_id],
        set_={c.name: new.excluded[c.name] for c in workflows.c if c.name != "workflow_id"},
        where=_WF.status != _RUNNING,
    ).returning(_WF.workflow_id)


def _start_workflow(dialect: str) -> ClauseElement:
    """PostgreSQL: the upsert and the clearing of the old run's inbox in one statement.

    Data-modifying CTEs share one snapshot and commit together, so in autocommit this
    is one round trip where a transaction would take four.
    """
    started = _upsert_workflow(dialect).cte("started")
    cleared = (
        delete(inbox)
        .where(inbox.c.workflow_id == _ID, exists(select(started.c.workflow_id)))
        .cte("cleared")
    )
    return select(started.c.workflow_id).add_cte(cleared)


# Every statement is built once here; bind names start with b_ so they never clash with
# column names (an INSERT's parameters are named after its columns).
_CREATE_WORKFLOW = Query(_upsert_workflow)
_START_WORKFLOW = Query(_start_workflow)  # PostgreSQL only
_GET_WORKFLOW = Query(select(workflows).where(_WF.workflow_id == _ID))
_RUN_ID_OF = Query(select(_WF.run_id).where(_WF.workflow_id == _ID))
_STATUS_OF = Query(select(_WF.status).where(_WF.workflow_id == _ID))
_DELETE_INBOX_OF = Query(delete(inbox).where(inbox.c.workflow_id == _ID))
_LOAD_HISTORY = Query(
    select(
        history_events.c.event_id,
        history_events.c.type,
        history_events.c.timestamp,
        history_events.c.attributes,
    )
    .where(history_events.c.run_id == bindparam("b_run_id"), history_events.c.workflow_id == _ID)
    .order_by(history_events.c.event_id)
)
_OUTBOX_ORDER = (outbox.c.created_at, outbox.c.workflow_id, outbox.c.seq, outbox.c.attempt)
_OUTBOX = Query(select(outbox.c.message, outbox.c.sent).order_by(*_OUTBOX_ORDER).limit(_LIMIT))
_OUTBOX_UNSENT = Query(
    select(outbox.c.message, outbox.c.sent)
    .where(outbox.c.sent.is_(False))
    .order_by(*_OUTBOX_ORDER)
    .limit(_LIMIT)
)
_OUTBOX_OWNED = Query(
    select(outbox.c.message, outbox.c.sent)
    .where(outbox.c.shard.in_(_leases.owned_shards()))
    .order_by(*_OUTBOX_ORDER)
    .limit(_LIMIT)
)
_OUTBOX_UNSENT_OWNED = Query(
    select(outbox.c.message, outbox.c.sent)
    .where(outbox.c.sent.is_(False), outbox.c.shard.in_(_leases.owned_shards()))
    .order_by(*_OUTBOX_ORDER)
    .limit(_LIMIT)
)
_RESET_OUTBOX = Query(update(outbox).where(outbox.c.sent.is_(True)).values(sent=False))
_TIMER_ORDER = (timers.c.due_at, timers.c.workflow_id, timers.c.kind, timers.c.seq)
_TIMERS_DUE = Query(
    select(timers)
    .where(timers.c.due_at < bindparam("b_when"))
    .order_by(*_TIMER_ORDER)
    .limit(_LIMIT)
)
_TIMERS_DUE_OWNED = Query(
    select(timers)
    .where(timers.c.due_at < bindparam("b_when"), timers.c.shard.in_(_leases.owned_shards()))
    .order_by(*_TIMER_ORDER)
    .limit(_LIMIT)
)
# Inserted by a SELECT on the running workflow: the check and the insert are one statement.
_ADD_INBOX = Query(
    insert(inbox).from_select(
        ["workflow_id", "kind", "payload", "created_at"],
        select(
            _ID,
            bindparam("b_kind", type_=String()),
            bindparam("b_payload", type_=JSONText()),
            bindparam("b_created_at", type_=UTCDateTime()),
        ).where(_WF.workflow_id == _ID, _WF.status == _RUNNING),
    )
)
_INBOX_FOR = Query(select(inbox).where(inbox.c.workflow_id == _ID).order_by(inbox.c.id))
_NEEDS_WORK = (
    _WF.status == _RUNNING,
    or_(
        _WF.version == 0,
        _WF.stuck_reason.is_not(None),
        exists().where(inbox.c.workflow_id == _WF.workflow_id),
    ),
)
_NEEDING_WORK = Query(
    select(_WF.workflow_id)
    .where(*_NEEDS_WORK)
    .order_by(_WF.start_time, _WF.workflow_id)
    .limit(_LIMIT)
)
_NEEDING_WORK_OWNED = Query(
    select(_WF.workflow_id)
    .where(*_NEEDS_WORK, _WF.shard.in_(_leases.owned_shards()))
    .order_by(_WF.start_time, _WF.workflow_id)
    .limit(_LIMIT)
)
_SHARD_COUNT = Query(select(saga_meta.c.value).where(saga_meta.c.key == "shard_count"))
_SET_SHARD_COUNT = Query(
    update(saga_meta)
    .where(saga_meta.c.key == "shard_count")
    .values(value=bindparam("b_value", type_=String()))
)
_ANY_WORKFLOW = Query(select(_WF.workflow_id).limit(1))
_OUTBOX_UNSENT_COUNT = Query(select(func.count()).where(outbox.c.sent.is_(False)))
_COUNT_BY_STATUS = Query(select(_WF.status, func.count().label("count")).group_by(_WF.status))
_REGISTER_TYPE = Query(lambda dialect: _insert(dialect)(workflow_types).on_conflict_do_nothing())
_KNOWN_TYPES = Query(select(workflow_types.c.name).order_by(workflow_types.c.name))


class SQLStore:
    """The Store for ``sqlite+aiosqlite://`` and ``postgresql+asyncpg://`` URLs.

    Args:
        url: SQLAlchemy database URL; ``sqlite+aiosqlite://`` alone is an in-memory database.
        connect_timeout: Seconds :meth:`connect` keeps retrying before raising StoreError.
        pool_size: Connections kept open to PostgreSQL.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0, pool_size: int = 10) -> None:
        self.url = url
        self._db = open_database(url, connect_timeout=connect_timeout, pool_size=pool_size)
        self._run = self._db.run
        self._shard_count: int | None = None

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
        """Open the database, retrying with backoff; raises StoreError if unreachable."""
        await self._db.connect()

    async def aclose(self) -> None:
        """Close the database; idempotent."""
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
        row = _new_workflow_row(record)
        one_statement = self._db.backend == "postgresql"

        async def body(tx: Tx) -> None:
            if one_statement:
                started = await tx.fetchrow(_START_WORKFLOW, row) is not None
            elif started := await tx.fetchrow(_CREATE_WORKFLOW, row) is not None:
                # Input queued for the previous run is not meant for this one.
                await tx.execute(_DELETE_INBOX_OF, row)
            if not started:
                running = await tx.fetchrow(_RUN_ID_OF, row)
                raise WorkflowAlreadyStartedError(
                    record.workflow_id, str(None if running is None else running.run_id)
                )

        await self._run("create_workflow", body, transaction=not one_statement)

    async def create_workflow_with_inbox(
        self, record: WorkflowRecord, inbox: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """:meth:`create_workflow` plus the new run's first inbox rows, in one transaction."""
        row = _new_workflow_row(record)
        rows = _inbox_rows(record.workflow_id, inbox)

        async def body(tx: Tx) -> None:
            if await tx.fetchrow(_CREATE_WORKFLOW, row) is None:
                running = await tx.fetchrow(_RUN_ID_OF, row)
                raise WorkflowAlreadyStartedError(
                    record.workflow_id, str(None if running is None else running.run_id)
                )
            await tx.execute(_DELETE_INBOX_OF, row)  # input for the previous run
            for params in rows:
                await tx.execute(_ADD_INBOX, params)

        await self._run("create_workflow_with_inbox", body, transaction=True)

    async def continue_as_new(
        self,
        write: WorkflowWrite,
        record: WorkflowRecord,
        inbox: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> list[str]:
        """Close a run (fenced) and start the next under the same id, in one transaction.

        Inbox rows the closed run did not apply stay, for the new run.
        """
        row = _new_workflow_row(record)
        rows = _inbox_rows(record.workflow_id, inbox)
        backend = self._db.backend
        now = datetime.now(UTC)

        async def body(tx: Tx) -> None:
            if await commit_batch(tx, WriteBatch([write]), backend, now):
                raise Conflicts([write.workflow_id])
            if await tx.fetchrow(_CREATE_WORKFLOW, row) is None:  # the write must close
                raise Conflicts([write.workflow_id])
            for params in rows:
                await tx.execute(_ADD_INBOX, params)

        try:
            await self._run("continue_as_new", body, transaction=True)
        except Conflicts as conflicts:
            return conflicts.workflow_ids
        return []

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The current run of a workflow, or None."""

        async def body(tx: Tx) -> WorkflowRecord | None:
            row = await tx.fetchrow(_GET_WORKFLOW, {"b_workflow_id": workflow_id})
            return None if row is None else _record(row)

        return await self._run("get_workflow", body)

    async def shard_count(self) -> int:
        """How many shards workflows hash into (``saga_meta``), read once and kept."""
        if self._shard_count is None:
            row = await self._run("shard_count", lambda tx: tx.fetchrow(_SHARD_COUNT))
            self._shard_count = int(row.value)
        return self._shard_count

    async def set_shard_count(self, count: int) -> None:
        """Choose the shard count while the database holds no workflow; then it is fixed."""
        if not 1 <= count <= 4096:
            raise ConfigurationError(f"shard count must be between 1 and 4096, not {count}")

        async def body(tx: Tx) -> None:
            current = int((await tx.fetchrow(_SHARD_COUNT)).value)
            if current == count:
                return
            if await tx.fetchrow(_ANY_WORKFLOW) is not None:
                raise ConfigurationError(
                    f"this database has {current} shards and holds workflows already; "
                    "the shard count is fixed once workflows exist"
                )
            await tx.execute(_SET_SHARD_COUNT, {"b_value": str(count)})

        await self._run("set_shard_count", body, transaction=True)
        self._shard_count = count

    async def load_history(self, workflow_id: str, run_id: str) -> list[HistoryEvent]:
        """All events of a run, in order."""
        params = {"b_workflow_id": workflow_id, "b_run_id": run_id}

        async def body(tx: Tx) -> list[HistoryEvent]:
            return [
                HistoryEvent.build(r.event_id, r.type, r.timestamp, r.attributes)
                for r in await tx.fetch(_LOAD_HISTORY, params)
            ]

        return await self._run("load_history", body)

    # -- the hot path --------------------------------------------------------------------

    async def commit(self, batch: WriteBatch) -> list[str]:
        """Apply every write whose fence holds, in one transaction; see :meth:`Store.commit`.

        On PostgreSQL most batches are one statement (:func:`commit_statement`).
        """
        if not batch.writes and not batch.mark_sent:
            return []
        now = datetime.now(UTC)
        backend = self._db.backend
        if backend == "postgresql" and fits_one_statement(batch):
            return await self._run("commit", lambda tx: commit_statement(tx, batch, now))
        return await self._run(
            "commit", lambda tx: commit_batch(tx, batch, backend, now), transaction=True
        )

    # -- outbox and timers -------------------------------------------------------------

    async def outbox(
        self, *, only_unsent: bool, limit: int = 1000, owner: str | None = None
    ) -> list[OutboxRow]:
        """Outbox rows, oldest first; with ``owner``, only of the shards it holds."""
        if owner is None:
            query = _OUTBOX_UNSENT if only_unsent else _OUTBOX
        else:
            query = _OUTBOX_UNSENT_OWNED if only_unsent else _OUTBOX_OWNED
        params = {"b_limit": limit, "b_owner": owner}

        async def body(tx: Tx) -> list[OutboxRow]:
            rows = await tx.fetch(query, params)
            return [OutboxRow(TaskMessage.model_validate(r.message), r.sent) for r in rows]

        return await self._run("outbox", body)

    async def mark_sent(self, keys: Sequence[tuple[str, int, int]]) -> None:
        """Record that these tasks reached the broker; keys of deleted rows are ignored."""
        if not keys:
            return
        rows = [sent_key(key) for key in sorted(keys)]
        await self._run("mark_sent", lambda tx: tx.executemany(MARK_SENT, rows))

    async def reset_outbox(self) -> int:
        """Mark every row unsent (after a restart over a non-durable transport)."""
        return await self._run("reset_outbox", lambda tx: tx.execute(_RESET_OUTBOX))

    async def timers_due_before(
        self, when: datetime, limit: int = 1000, owner: str | None = None
    ) -> list[TimerRow]:
        """Timers due before ``when``, soonest first; with ``owner``, of its shards only."""
        query = _TIMERS_DUE if owner is None else _TIMERS_DUE_OWNED
        params = {"b_when": when, "b_limit": limit, "b_owner": owner}

        async def body(tx: Tx) -> list[TimerRow]:
            rows = await tx.fetch(query, params)
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

        return await self._run("timers_due_before", body)

    # -- inbox -------------------------------------------------------------------------

    async def add_inbox(self, workflow_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Queue input for a RUNNING workflow; raises WorkflowNotFoundError otherwise."""
        params = {
            "b_workflow_id": workflow_id,
            "b_kind": kind,
            "b_payload": payload,
            "b_created_at": datetime.now(UTC),
        }

        async def body(tx: Tx) -> str | None:
            if await tx.execute(_ADD_INBOX, params) == 1:
                return None
            row = await tx.fetchrow(_STATUS_OF, params)
            return "" if row is None else f"it is {row.status}"

        refusal = await self._run("add_inbox", body)
        if refusal is not None:
            raise WorkflowNotFoundError(workflow_id, refusal)

    async def inbox_for(self, workflow_id: str) -> list[InboxRow]:
        """Pending inbox rows of a workflow, oldest first."""

        async def body(tx: Tx) -> list[InboxRow]:
            rows = await tx.fetch(_INBOX_FOR, {"b_workflow_id": workflow_id})
            return [InboxRow(r.id, r.workflow_id, r.kind, r.payload, r.created_at) for r in rows]

        return await self._run("inbox_for", body)

    async def workflows_needing_work(
        self, limit: int = 1000, owner: str | None = None
    ) -> list[str]:
        """RUNNING workflows never activated (version 0), with inbox rows, or stuck.

        With ``owner``, only those of the shards it holds.
        """
        query = _NEEDING_WORK if owner is None else _NEEDING_WORK_OWNED
        params = {"b_limit": limit, "b_owner": owner}

        async def body(tx: Tx) -> list[str]:
            return [r.workflow_id for r in await tx.fetch(query, params)]

        return await self._run("workflows_needing_work", body)

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
        after = _decode_cursor(cursor) if cursor is not None else None
        query = _list_query(
            status is not None,
            workflow_type is not None,
            bool(id_prefix),
            started_after is not None,
            started_before is not None,
            after is not None,
        )
        params = {
            "b_status": None if status is None else status.value,
            "b_type": workflow_type,
            "b_prefix": _like_prefix(id_prefix or ""),
            "b_after": started_after,
            "b_before": started_before,
            "b_last_start": None if after is None else after[0],
            "b_last_id": None if after is None else after[1],
            "b_limit": limit + 1,
        }

        async def body(tx: Tx) -> list[WorkflowRecord]:
            return [_record(r) for r in await tx.fetch(query, params)]

        records = await self._run("list_workflows", body)
        more = len(records) > limit
        records = records[:limit]
        next_cursor = _encode_cursor(records[-1]) if more and records else None
        return WorkflowPage(records, next_cursor)

    async def count_by_status(self) -> dict[str, int]:
        """How many workflows have each status (statuses with none are left out)."""

        async def body(tx: Tx) -> dict[str, int]:
            return {r.status: r.count for r in await tx.fetch(_COUNT_BY_STATUS)}

        return await self._run("count_by_status", body)

    async def register_workflow_types(self, names: Sequence[str]) -> None:
        """Record workflow types some coordinator can run; known names are kept as they are."""
        if not names:
            return
        now = datetime.now(UTC)
        rows = [{"name": n, "registered_at": now} for n in sorted(set(names))]
        await self._run("register_workflow_types", lambda tx: tx.executemany(_REGISTER_TYPE, rows))

    async def known_workflow_types(self) -> list[str]:
        """Every workflow type ever registered, sorted."""

        async def body(tx: Tx) -> list[str]:
            return [r.name for r in await tx.fetch(_KNOWN_TYPES)]

        return await self._run("known_workflow_types", body)

    # -- shard leases --------------------------------------------------------------------

    async def heartbeat(self, member: Member, ttl: float, shard_count: int) -> None:
        """Announce ``member`` alive for ``ttl`` seconds (and create missing lease rows)."""
        await self._run(
            "heartbeat",
            lambda tx: _leases.heartbeat(tx, member, ttl, shard_count),
            transaction=True,
        )

    async def renew_leases(self, owner: str, ttl: float) -> dict[int, int]:
        """Extend every lease ``owner`` still holds; {shard: epoch}."""
        return await self._run("renew_leases", lambda tx: _leases.renew(tx, owner, ttl))

    async def claim_shards(
        self, owner: str, shards: Sequence[int], ttl: float, *, force: bool = False
    ) -> dict[int, int]:
        """Take the free or expired ones of ``shards`` (all, with ``force``); {shard: epoch}."""
        return await self._run(
            "claim_shards",
            lambda tx: _leases.claim(tx, owner, shards, ttl, force=force),
            transaction=True,
        )

    async def release_shards(self, owner: str, shards: Sequence[int]) -> None:
        """Give up ``shards`` at once (only leases ``owner`` holds)."""
        await self._run("release_shards", lambda tx: _leases.release(tx, owner, shards))

    async def leave(self, owner: str) -> None:
        """Release every lease of ``owner`` and delete its heartbeat row."""
        await self._run("leave", lambda tx: _leases.leave(tx, owner), transaction=True)

    async def cluster(self) -> ClusterState:
        """Members, leases and outbox backlog, with the database's current time."""
        count = await self.shard_count()
        backend = self._db.backend

        async def body(tx: Tx) -> ClusterState:
            return ClusterState(
                now=await _leases.now(tx, backend),
                shard_count=count,
                members=await _leases.members(tx),
                leases=await _leases.leases(tx),
                outbox_unsent=(await tx.fetchrow(_OUTBOX_UNSENT_COUNT))[0],
            )

        return await self._run("cluster", body)


@functools.cache
def _list_query(
    status: bool, workflow_type: bool, prefix: bool, after: bool, before: bool, cursor: bool
) -> Query:
    """The listing statement for one combination of filters (64 at most)."""
    query = select(workflows).order_by(_WF.start_time.desc(), _WF.workflow_id.desc())
    if status:
        query = query.where(_WF.status == bindparam("b_status", type_=String()))
    if workflow_type:
        query = query.where(_WF.workflow_type == bindparam("b_type", type_=String()))
    if prefix:
        query = query.where(_WF.workflow_id.like(bindparam("b_prefix", type_=String()), "/"))
    if after:
        query = query.where(_WF.start_time > bindparam("b_after", type_=UTCDateTime()))
    if before:
        query = query.where(_WF.start_time < bindparam("b_before", type_=UTCDateTime()))
    if cursor:
        last_start = bindparam("b_last_start", type_=UTCDateTime())
        query = query.where(
            or_(
                _WF.start_time < last_start,
                (_WF.start_time == last_start)
                & (_WF.workflow_id < bindparam("b_last_id", type_=String())),
            )
        )
    return Query(query.limit(_LIMIT))


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape character "/") matching ids that start with ``prefix``."""
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


def _new_workflow_row(record: WorkflowRecord) -> dict[str, Any]:
    """The workflows row of a new RUNNING run (version 0, no history)."""
    return {
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
        "b_workflow_id": record.workflow_id,
    }


def _inbox_rows(
    workflow_id: str, inbox: Sequence[tuple[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {"b_workflow_id": workflow_id, "b_kind": kind, "b_payload": payload, "b_created_at": now}
        for kind, payload in inbox
    ]


def _record(row: Any) -> WorkflowRecord:
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
