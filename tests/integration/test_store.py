"""SQLStore against SQLite and PostgreSQL: every Store method, the fence, and the races."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, make_url, select

from saga.errors import (
    ConfigurationError,
    StoreError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from saga.failure import FailureInfo
from saga.history import (
    ActivityCompleted,
    ActivityScheduled,
    HistoryEvent,
    TimerFired,
    WorkflowCompleted,
    WorkflowStarted,
    WorkflowStatus,
)
from saga.messages import TaskMessage
from saga.store._query import Query
from saga.store.base import TimerKind, TimerRow, WorkflowRecord, WorkflowWrite, WriteBatch
from saga.store.sql import SQLStore
from tests.fixtures.database import asyncpg_dsn, with_database

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RUN = "wf.1"  # run ids are unique across workflows (uuid4 in real use)


def run_of(workflow_id: str) -> str:
    return f"{workflow_id}.1"


def record(
    workflow_id: str = "wf",
    run_id: str | None = None,
    *,
    workflow_type: str = "Trip",
    start_time: datetime = T0,
    shard: int = 7,
) -> WorkflowRecord:
    return WorkflowRecord(
        workflow_id=workflow_id,
        run_id=run_id or run_of(workflow_id),
        workflow_type=workflow_type,
        status=WorkflowStatus.RUNNING,
        version=0,
        shard=shard,
        input=["alice", {"nights": 2}],
        start_time=start_time,
        trace_context={"traceparent": "00-abc-def-01"},
        execution_timeout=3600.0,
    )


def started(run_id: str = RUN) -> HistoryEvent:
    attrs = WorkflowStarted(workflow_type="Trip", args=["alice"], run_id=run_id)
    return HistoryEvent(event_id=1, timestamp=T0, attributes=attrs)


def scheduled(event_id: int, seq: int) -> HistoryEvent:
    attrs = ActivityScheduled(seq=seq, activity="reserve_car", queue="cars", args=["alice"])
    return HistoryEvent(
        event_id=event_id, timestamp=T0 + timedelta(seconds=event_id), attributes=attrs
    )


def task(seq: int, attempt: int = 1, workflow_id: str = "wf", run_id: str = RUN) -> TaskMessage:
    return TaskMessage(
        workflow_id=workflow_id,
        run_id=run_id,
        workflow_type="Trip",
        seq=seq,
        attempt=attempt,
        activity="reserve_car",
        queue="cars",
        args=["alice"],
        scheduled_at=T0,
        headers={"traceparent": "00-abc-def-01"},
    )


def timer(seq: int, due: datetime, kind: TimerKind = TimerKind.TIMER, attempt: int = 0) -> TimerRow:
    return TimerRow(workflow_id="wf", run_id=RUN, kind=kind, seq=seq, due_at=due, attempt=attempt)


async def started_workflow(
    store: SQLStore, workflow_id: str = "wf", run_id: str | None = None
) -> None:
    """A workflow whose first activation (version 0 -> 1) has been committed."""
    run_id = run_id or run_of(workflow_id)
    await store.create_workflow(record(workflow_id, run_id))
    write = WorkflowWrite(workflow_id, run_id, 0, events=[started(run_id)])
    assert await store.commit(WriteBatch([write])) == []


async def close(store: SQLStore, workflow_id: str = "wf", run_id: str | None = None) -> None:
    run_id = run_id or run_of(workflow_id)
    current = await store.get_workflow(workflow_id)
    assert current is not None
    event = HistoryEvent(
        event_id=current.history_length + 1,
        timestamp=T0,
        attributes=WorkflowCompleted(result={"car": "c-1"}),
    )
    write = WorkflowWrite(
        workflow_id,
        run_id,
        current.version,
        events=[event],
        status=WorkflowStatus.COMPLETED,
        result={"car": "c-1"},
        close_time=T0 + timedelta(minutes=5),
    )
    assert await store.commit(WriteBatch([write])) == []


# -- workflows -------------------------------------------------------------------------


async def test_create_then_get_round_trips_every_field(store: SQLStore) -> None:
    await store.create_workflow(record())

    got = await store.get_workflow("wf")

    assert got == record()
    assert got.start_time.tzinfo is UTC
    assert await store.get_workflow("missing") is None


async def test_create_refuses_a_running_workflow(store: SQLStore) -> None:
    await store.create_workflow(record())

    with pytest.raises(WorkflowAlreadyStartedError) as info:
        await store.create_workflow(record(run_id="run-2"))

    assert (info.value.workflow_id, info.value.run_id) == ("wf", RUN)
    got = await store.get_workflow("wf")
    assert got is not None and got.run_id == RUN


async def test_create_replaces_a_closed_workflow_and_keeps_its_history(store: SQLStore) -> None:
    await started_workflow(store)
    await close(store)
    closed = await store.get_workflow("wf")
    assert closed is not None and closed.status is WorkflowStatus.COMPLETED
    assert (closed.result, closed.close_time) == ({"car": "c-1"}, T0 + timedelta(minutes=5))

    await store.create_workflow(record(run_id="run-2", start_time=T0 + timedelta(hours=1)))

    got = await store.get_workflow("wf")
    assert got == record(run_id="run-2", start_time=T0 + timedelta(hours=1))
    assert got.close_time is None and got.result is None and got.history_length == 0
    assert [e.type for e in await store.load_history("wf", RUN)] == [
        "WorkflowStarted",
        "WorkflowCompleted",
    ]
    assert await store.load_history("wf", "run-2") == []


@pytest.mark.parametrize("closed_before", [False, True], ids=["new", "replacing-closed"])
async def test_concurrent_starts_of_one_id_let_exactly_one_win(
    store: SQLStore, closed_before: bool
) -> None:
    if closed_before:
        await started_workflow(store, run_id="old")
        await close(store, run_id="old")

    results = await asyncio.gather(
        *(store.create_workflow(record(run_id=f"run-{i}")) for i in range(8)),
        return_exceptions=True,
    )

    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(
        isinstance(r, WorkflowAlreadyStartedError) and r.run_id == f"run-{winners[0]}"
        for r in results
        if r is not None
    )
    got = await store.get_workflow("wf")
    assert got is not None and got.run_id == f"run-{winners[0]}" and got.version == 0


# -- commit and the fence --------------------------------------------------------------


async def test_commit_appends_events_in_order_and_advances_version(store: SQLStore) -> None:
    await store.create_workflow(record())

    first = WorkflowWrite("wf", RUN, 0, events=[started(), scheduled(2, 1)])
    completed = HistoryEvent(
        event_id=3, timestamp=T0, attributes=ActivityCompleted(seq=1, attempt=1, result="c-1")
    )
    second = WorkflowWrite("wf", RUN, 1, events=[completed, scheduled(4, 2), scheduled(5, 3)])
    assert await store.commit(WriteBatch([first])) == []
    assert await store.commit(WriteBatch([second])) == []

    history = await store.load_history("wf", RUN)
    assert [e.event_id for e in history] == [1, 2, 3, 4, 5]
    assert history[0] == started()
    assert history[2].attributes == ActivityCompleted(seq=1, attempt=1, result="c-1")
    assert history[3] == scheduled(4, 2)
    got = await store.get_workflow("wf")
    assert got is not None and (got.version, got.history_length) == (2, 5)


async def test_stale_writes_conflict_and_write_nothing_while_the_fresh_one_commits(
    store: SQLStore,
) -> None:
    await started_workflow(store, "a")
    await started_workflow(store, "b")
    await started_workflow(store, "c")
    fresh = WorkflowWrite(
        "a",
        run_of("a"),
        1,
        events=[scheduled(2, 1)],
        outbox_add=[task(1, workflow_id="a", run_id=run_of("a"))],
        timers_add=[TimerRow("a", run_of("a"), TimerKind.TIMER, 2, T0)],
    )
    stale_version = WorkflowWrite(
        "b",
        run_of("b"),
        0,
        events=[scheduled(2, 1)],
        outbox_add=[task(1, workflow_id="b", run_id=run_of("b"))],
        timers_add=[TimerRow("b", run_of("b"), TimerKind.TIMER, 2, T0)],
    )
    stale_run = WorkflowWrite("c", "c.0", 1, events=[scheduled(2, 1)])

    conflicts = await store.commit(WriteBatch([fresh, stale_version, stale_run]))

    assert conflicts == ["b", "c"]
    assert [e.event_id for e in await store.load_history("a", run_of("a"))] == [1, 2]
    got_a = await store.get_workflow("a")
    assert got_a is not None and (got_a.version, got_a.history_length) == (2, 2)
    for workflow_id in "bc":
        assert len(await store.load_history(workflow_id, run_of(workflow_id))) == 1
        got = await store.get_workflow(workflow_id)
        assert got is not None and (got.version, got.history_length) == (1, 1)
    assert [r.message.workflow_id for r in await store.outbox(only_unsent=False)] == ["a"]
    assert [t.workflow_id for t in await store.timers_due_before(T0 + timedelta(days=1))] == ["a"]


async def test_two_writers_from_one_version_only_one_commits(store: SQLStore) -> None:
    await started_workflow(store)
    writes = [WorkflowWrite("wf", RUN, 1, events=[scheduled(2, seq)]) for seq in (1, 2)]

    results = await asyncio.gather(*(store.commit(WriteBatch([w])) for w in writes))

    assert sorted(results) == [[], ["wf"]]
    history = await store.load_history("wf", RUN)
    assert len(history) == 2
    got = await store.get_workflow("wf")
    assert got is not None and (got.version, got.history_length) == (2, 2)


async def test_closing_write_records_result_error_and_close_time(store: SQLStore) -> None:
    await started_workflow(store)
    failure = FailureInfo(
        message="no cars", type="NoCars", cause=FailureInfo(message="x", type="X")
    )
    write = WorkflowWrite(
        "wf",
        RUN,
        1,
        status=WorkflowStatus.COMPENSATED,
        error=failure,
        close_time=T0 + timedelta(hours=2),
    )

    assert await store.commit(WriteBatch([write])) == []

    got = await store.get_workflow("wf")
    assert got is not None
    assert got.status is WorkflowStatus.COMPENSATED
    assert got.error == failure
    assert got.close_time == T0 + timedelta(hours=2)


async def test_stuck_reason_is_set_and_cleared(store: SQLStore) -> None:
    await started_workflow(store)

    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 1, stuck_reason="nondeterminism")]))
    stuck = await store.get_workflow("wf")
    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 2)]))
    still_stuck = await store.get_workflow("wf")
    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 3, clear_stuck=True)]))
    cleared = await store.get_workflow("wf")

    assert stuck is not None and stuck.stuck_reason == "nondeterminism"
    assert still_stuck is not None and still_stuck.stuck_reason == "nondeterminism"
    assert cleared is not None and cleared.stuck_reason is None


async def test_empty_batch_is_a_no_op(store: SQLStore) -> None:
    assert await store.commit(WriteBatch()) == []


# -- outbox ----------------------------------------------------------------------------


async def test_outbox_add_mark_sent_and_reset(store: SQLStore) -> None:
    await started_workflow(store)
    write = WorkflowWrite("wf", RUN, 1, outbox_add=[task(1), task(2), task(3)])
    await store.commit(WriteBatch([write]))

    unsent = await store.outbox(only_unsent=True)
    assert [row.message for row in unsent] == [task(1), task(2), task(3)]
    assert unsent[0].key == ("wf", 1, 1)

    await store.mark_sent([("wf", 1, 1), ("wf", 99, 1)])
    await store.commit(WriteBatch(mark_sent=[("wf", 2, 1)]))
    assert [row.message.seq for row in await store.outbox(only_unsent=True)] == [3]
    everything = await store.outbox(only_unsent=False)
    assert [(row.message.seq, row.sent) for row in everything] == [(1, True), (2, True), (3, False)]
    assert len(await store.outbox(only_unsent=False, limit=2)) == 2

    assert await store.reset_outbox() == 2
    assert len(await store.outbox(only_unsent=True)) == 3


async def test_outbox_rows_are_deleted_by_seq_and_all_on_close(store: SQLStore) -> None:
    await started_workflow(store)
    await store.commit(
        WriteBatch([WorkflowWrite("wf", RUN, 1, outbox_add=[task(1), task(2), task(2, 2)])])
    )

    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 2, outbox_delete_seqs=[2])]))
    assert [row.key for row in await store.outbox(only_unsent=False)] == [("wf", 1, 1)]

    await close(store)
    assert await store.outbox(only_unsent=False) == []


async def test_a_write_may_delete_and_re_add_a_key_and_rows_it_deletes_may_be_marked_sent(
    store: SQLStore,
) -> None:
    await started_workflow(store)
    soon, later = T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)
    await store.commit(
        WriteBatch(
            [
                WorkflowWrite(
                    "wf", RUN, 1, outbox_add=[task(1), task(2)], timers_add=[timer(1, soon)]
                )
            ]
        )
    )

    again = WorkflowWrite(
        "wf",
        RUN,
        2,
        outbox_delete_seqs=[1, 2],
        outbox_add=[task(2, 2)],
        timers_delete=[(TimerKind.TIMER, 1)],
        timers_add=[timer(1, later)],
    )
    assert await store.commit(WriteBatch([again], mark_sent=[("wf", 1, 1)])) == []
    assert [(r.key, r.sent) for r in await store.outbox(only_unsent=False)] == [
        (("wf", 2, 2), False)
    ]
    assert [t.due_at for t in await store.timers_due_before(T0 + timedelta(hours=1))] == [later]

    done = WorkflowWrite("wf", RUN, 3, outbox_delete_seqs=[2])
    assert await store.commit(WriteBatch([done], mark_sent=[("wf", 2, 2)])) == []
    assert await store.outbox(only_unsent=False) == []


# -- timers ----------------------------------------------------------------------------


async def test_timers_come_due_soonest_first_and_are_deleted(store: SQLStore) -> None:
    await started_workflow(store)
    timers = [
        timer(1, T0 + timedelta(minutes=3)),
        timer(2, T0 + timedelta(minutes=1)),
        timer(1, T0 + timedelta(minutes=2), TimerKind.RETRY, attempt=2),
        timer(3, T0 + timedelta(hours=1)),
    ]
    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 1, timers_add=timers)]))

    due = await store.timers_due_before(T0 + timedelta(minutes=10))

    assert [(t.kind, t.seq) for t in due] == [
        (TimerKind.TIMER, 2),
        (TimerKind.RETRY, 1),
        (TimerKind.TIMER, 1),
    ]
    assert due[1] == TimerRow("wf", RUN, TimerKind.RETRY, 1, T0 + timedelta(minutes=2), 2, 7)
    assert len(await store.timers_due_before(T0 + timedelta(minutes=10), limit=1)) == 1
    assert await store.timers_due_before(T0 + timedelta(minutes=1)) == []

    fired = WorkflowWrite(
        "wf",
        RUN,
        2,
        events=[HistoryEvent(event_id=2, timestamp=T0, attributes=TimerFired(seq=2))],
        timers_delete=[(TimerKind.TIMER, 2)],
    )
    await store.commit(WriteBatch([fired]))
    assert [t.seq for t in await store.timers_due_before(T0 + timedelta(minutes=10))] == [1, 1]

    await close(store)
    assert await store.timers_due_before(T0 + timedelta(days=1)) == []


async def test_adding_a_timer_again_reschedules_it(store: SQLStore) -> None:
    await started_workflow(store)
    first = timer(1, T0 + timedelta(minutes=1), TimerKind.RETRY, attempt=2)
    again = timer(1, T0 + timedelta(minutes=5), TimerKind.RETRY, attempt=3)
    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 1, timers_add=[first])]))
    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 2, timers_add=[again])]))

    due = await store.timers_due_before(T0 + timedelta(hours=1))

    assert [(t.due_at, t.attempt) for t in due] == [(T0 + timedelta(minutes=5), 3)]


# -- inbox -----------------------------------------------------------------------------


async def test_inbox_refuses_unknown_and_closed_workflows(store: SQLStore) -> None:
    with pytest.raises(WorkflowNotFoundError):
        await store.add_inbox("missing", "signal", {})
    await started_workflow(store)
    await close(store)

    with pytest.raises(WorkflowNotFoundError, match="COMPLETED"):
        await store.add_inbox("wf", "signal", {"name": "late"})
    assert await store.inbox_for("wf") == []


async def test_inbox_rows_are_kept_in_order_until_a_commit_deletes_them(store: SQLStore) -> None:
    await started_workflow(store)
    await store.add_inbox("wf", "signal", {"name": "approve", "args": [1]})
    await store.add_inbox("wf", "cancel", {"reason": "user"})

    rows = await store.inbox_for("wf")

    assert [(r.kind, r.payload) for r in rows] == [
        ("signal", {"name": "approve", "args": [1]}),
        ("cancel", {"reason": "user"}),
    ]
    assert all(r.workflow_id == "wf" and r.created_at.tzinfo is UTC for r in rows)
    await store.commit(WriteBatch([WorkflowWrite("wf", RUN, 1, inbox_delete=[rows[0].id])]))
    assert [r.kind for r in await store.inbox_for("wf")] == ["cancel"]


async def test_a_new_run_does_not_inherit_input_left_for_the_old_one(store: SQLStore) -> None:
    await started_workflow(store)
    await store.add_inbox("wf", "signal", {"name": "for-run-1"})
    await close(store)

    await store.create_workflow(record(run_id="run-2"))

    assert await store.inbox_for("wf") == []


async def test_workflows_needing_work(store: SQLStore) -> None:
    await store.create_workflow(record("fresh", start_time=T0))
    await started_workflow(store, "idle")
    await started_workflow(store, "signalled")
    await store.add_inbox("signalled", "signal", {})
    await started_workflow(store, "stuck")
    await store.commit(
        WriteBatch([WorkflowWrite("stuck", run_of("stuck"), 1, stuck_reason="changed")])
    )
    await started_workflow(store, "done")
    await close(store, "done")

    needing = await store.workflows_needing_work()

    assert sorted(needing) == ["fresh", "signalled", "stuck"]
    assert len(await store.workflows_needing_work(limit=2)) == 2


# -- listing ---------------------------------------------------------------------------


async def test_list_pages_newest_first_through_a_cursor(store: SQLStore) -> None:
    # Pairs share a start time so the id must break ties consistently across pages.
    for i in range(25):
        await store.create_workflow(record(f"wf-{i:02d}", start_time=T0 + timedelta(i // 2)))
    expected = sorted(
        (f"wf-{i:02d}" for i in range(25)), key=lambda w: (int(w[3:]) // 2, w), reverse=True
    )

    pages, cursor = [], None
    while True:
        page = await store.list_workflows(limit=10, cursor=cursor)
        pages.append([w.workflow_id for w in page.workflows])
        cursor = page.next_cursor
        if cursor is None:
            break

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [w for p in pages for w in p] == expected


async def test_list_filters(store: SQLStore) -> None:
    await store.create_workflow(record("trip-1", workflow_type="Trip", start_time=T0))
    await store.create_workflow(
        record("trip-2", workflow_type="Trip", start_time=T0 + timedelta(1))
    )
    await store.create_workflow(record("pay_1", workflow_type="Pay", start_time=T0 + timedelta(2)))
    await store.create_workflow(record("payx1", workflow_type="Pay", start_time=T0 + timedelta(3)))
    await started_workflow(store, "trip-3")
    await close(store, "trip-3")

    async def ids(**filters: Any) -> list[str]:
        page = await store.list_workflows(**filters)
        return [w.workflow_id for w in page.workflows]

    assert await ids(status=WorkflowStatus.COMPLETED) == ["trip-3"]
    assert await ids(workflow_type="Pay") == ["payx1", "pay_1"]
    assert await ids(id_prefix="pay_") == ["pay_1"]  # "_" is not a wildcard
    assert await ids(started_after=T0, started_before=T0 + timedelta(3)) == ["pay_1", "trip-2"]
    assert await ids(workflow_type="Trip", status=WorkflowStatus.RUNNING) == ["trip-2", "trip-1"]
    with pytest.raises(ValueError, match="cursor"):
        await store.list_workflows(cursor="not-a-cursor")


async def test_count_by_status(store: SQLStore) -> None:
    assert await store.count_by_status() == {}
    for workflow_id in ("a", "b", "c"):
        await started_workflow(store, workflow_id)
    await close(store, "c")

    assert await store.count_by_status() == {"RUNNING": 2, "COMPLETED": 1}


async def test_workflow_types_are_registered_once_and_listed_sorted(store: SQLStore) -> None:
    await store.register_workflow_types(["Trip", "Pay"])
    await store.register_workflow_types(["Trip", "Refund", "Refund"])
    await store.register_workflow_types([])

    assert await store.known_workflow_types() == ["Pay", "Refund", "Trip"]


# -- errors and connections ------------------------------------------------------------


async def test_naive_datetimes_are_refused(store: SQLStore) -> None:
    naive = record(start_time=datetime(2024, 1, 1))

    with pytest.raises(StoreError, match="naive datetime"):
        await store.create_workflow(naive)


async def test_unreachable_postgres_raises_store_error_without_password() -> None:
    store = SQLStore("postgresql+asyncpg://saga:s3cret@127.0.0.1:1/saga", connect_timeout=0.3)

    with pytest.raises(StoreError) as info:
        await store.connect()

    message = str(info.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message
    assert "\n" not in message
    await store.aclose()


@pytest.mark.integration
async def test_missing_postgres_database_raises_store_error(postgres_admin_url: str) -> None:
    store = SQLStore(with_database(postgres_admin_url, "saga_no_such_db"), connect_timeout=0.2)

    with pytest.raises(StoreError, match='"saga_no_such_db" does not exist'):
        await store.connect()


async def test_unsupported_url_and_unconnected_use_are_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="unsupported"):
        SQLStore("mysql+aiomysql://127.0.0.1/saga")
    with pytest.raises(ConfigurationError, match="invalid"):
        SQLStore("not a url")
    with pytest.raises(StoreError, match="not connected"):
        await SQLStore("sqlite+aiosqlite://").get_workflow("wf")


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
async def test_in_memory_sqlite_is_one_database_for_concurrent_callers(url: str) -> None:
    async with SQLStore(url) as store:
        await store.migrate()

        await asyncio.gather(*(store.create_workflow(record(f"wf-{i}")) for i in range(10)))
        counts, listed = await asyncio.gather(store.count_by_status(), store.list_workflows())

    assert counts == {"RUNNING": 10}
    assert len(listed.workflows) == 10


# -- how each database is driven -------------------------------------------------------


async def test_more_callers_than_connections_all_get_served(database_url: str) -> None:
    async with SQLStore(database_url, pool_size=2) as store:
        await store.migrate()

        await asyncio.gather(*(started_workflow(store, f"wf-{i}") for i in range(20)))
        got = await asyncio.gather(*(store.get_workflow(f"wf-{i}") for i in range(20)))

    assert all(r is not None and r.version == 1 for r in got)


async def test_sqlite_waits_for_another_process_writing_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    async with SQLStore(f"sqlite+aiosqlite:///{path}") as store:
        await store.migrate()
        await store.create_workflow(record("before"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        create = asyncio.create_task(store.create_workflow(record()))
        loop = asyncio.get_running_loop()
        began = loop.time()
        for _ in range(10):
            await asyncio.sleep(0.01)
        responsive = loop.time() - began < 1.0
        still_waiting = not create.done()
        readable = await store.get_workflow("before")  # WAL: readers never wait
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(create, 5)

        assert responsive and still_waiting and readable is not None
        assert await store.get_workflow("wf") == record()


async def test_sqlite_copies_the_wal_into_the_database_file_in_the_background(
    tmp_path: Path,
) -> None:
    path = tmp_path / "checkpointed.db"

    def in_main_file() -> int:
        # immutable=1 reads the database file alone, ignoring the WAL.
        main_file = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return int(main_file.execute("SELECT count(*) FROM workflows").fetchone()[0])
        except sqlite3.DatabaseError:  # still only in the WAL, or the copy is half done
            return 0
        finally:
            main_file.close()

    async with SQLStore(f"sqlite+aiosqlite:///{path}") as store:
        await store.migrate()
        await store.create_workflow(record())
        for _ in range(100):
            if in_main_file() == 1:
                break
            await asyncio.sleep(0.05)

        assert in_main_file() == 1


@pytest.mark.integration
async def test_postgres_connections_lost_are_replaced(
    postgres_url: str, postgres_admin_url: str
) -> None:
    async with SQLStore(postgres_url, pool_size=3) as store:
        await store.migrate()
        await asyncio.gather(*(started_workflow(store, f"wf-{i}") for i in range(3)))
        await _terminate_connections(postgres_admin_url, postgres_url)

        # The first caller learns of the loss; the store then drops every idle
        # connection it held, so the next callers get new ones.
        with contextlib.suppress(StoreError):
            await store.get_workflow("wf-0")
        got = await asyncio.gather(*(store.get_workflow(f"wf-{i}") for i in range(3)))

    assert all(r is not None for r in got)


@pytest.mark.integration
async def test_postgres_call_cancelled_mid_query_leaves_the_store_usable(
    postgres_url: str,
) -> None:
    async with SQLStore(postgres_url, pool_size=1) as store:
        await store.migrate()
        sleep = Query(select(func.pg_sleep(5)))
        slow = asyncio.create_task(store._db.run("sleep", lambda tx: tx.fetch(sleep)))
        await asyncio.sleep(0.2)
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow

        await asyncio.wait_for(started_workflow(store), 2)  # the one connection was replaced

    assert slow.cancelled()


async def _terminate_connections(admin_url: str, url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            make_url(url).database,
        )
    finally:
        await conn.close()
