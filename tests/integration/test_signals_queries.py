"""Signals, signal-with-start and queries, end to end, on SQLite and PostgreSQL.

Signals go through the store's inbox and are recorded in history before the workflow
sees them; queries go over the transport to a coordinator, which answers from its live
instance or by replaying the history, and never writes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from saga import (
    InvalidArgumentsError,
    PayloadError,
    WorkflowNotFoundError,
    WorkflowStatus,
    workflow,
)
from saga.cli import main as cli_main
from saga.client import Client
from saga.errors import QueryFailedError, QueryTimeoutError
from saga.messages import QueryReply, QueryRequest
from saga.testing import WorkflowEnvironment
from saga.transports.memory import MemoryTransport
from tests.fixtures.broker import TransportFactory
from tests.integration.engine_helpers import WAIT, eventually, of_type, types_of, wait_for_event


@workflow.defn
class Inbox:
    """Collects signals until told to close; answers queries about what it holds."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.closed = False

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.signal
    def close(self) -> None:
        self.closed = True

    @workflow.query
    def count(self) -> int:
        return len(self.items)

    @workflow.query
    def item(self, index: int) -> str:
        return self.items[index]

    @workflow.query
    def sneaky(self) -> int:
        # A query must not act: this is refused, and the workflow goes on unharmed.
        asyncio.get_running_loop().call_later(5, lambda: None)
        return 0

    @workflow.run
    async def run(self, owner: str) -> dict[str, Any]:
        await workflow.wait_condition(lambda: self.closed)
        return {"owner": owner, "items": self.items}


@workflow.defn
class Draws:
    """Draws random numbers; a query that draws too must not change what it draws next."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.go = False

    @workflow.signal
    def go_on(self) -> None:
        self.go = True

    @workflow.query
    def peek(self) -> float:
        return workflow.random()

    @workflow.query
    def drawn(self) -> list[float]:
        return self.values

    @workflow.run
    async def run(self) -> list[float]:
        self.values.append(workflow.random())
        await workflow.wait_condition(lambda: self.go)
        self.values.append(workflow.random())
        return self.values


@workflow.defn
async def no_handlers(x: int) -> int:
    await workflow.sleep(3600)
    return x


def environment(database_url: str, **options: Any) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=[Inbox, Draws, no_handlers], database_url=database_url, **options
    )


def bare_client(env: WorkflowEnvironment) -> Client:
    """A client without the workflow definitions, like the CLI's."""
    return Client(env.store, MemoryTransport(env.broker))


# --- signals ------------------------------------------------------------------------------------
async def test_signals_are_recorded_then_applied_in_the_order_sent(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="inbox-order")
        for item in ("a", "b", "c", "d"):
            await handle.signal("add", item)
        await handle.signal("close")
        result = await handle.result(timeout=WAIT)
        assert result == {"owner": "ann", "items": ["a", "b", "c", "d"]}
        signaled = of_type(await handle.history(), "WorkflowSignaled")
        assert [(e.attributes.name, e.attributes.args) for e in signaled] == [  # type: ignore[attr-defined]
            ("add", ["a"]),
            ("add", ["b"]),
            ("add", ["c"]),
            ("add", ["d"]),
            ("close", []),
        ]


async def test_signalling_an_unknown_or_closed_workflow_is_not_found(database_url: str) -> None:
    async with environment(database_url) as env:
        with pytest.raises(WorkflowNotFoundError):
            await env.client.get_workflow_handle("nobody").signal("add", "x")
        with pytest.raises(WorkflowNotFoundError):  # without definitions too
            await bare_client(env).get_workflow_handle("nobody").signal("add", "x")
        handle = await env.client.start_workflow(Inbox.run, "ann", id="inbox-closed")
        await handle.signal("close")
        await handle.result(timeout=WAIT)
        with pytest.raises(WorkflowNotFoundError, match="COMPLETED"):
            await handle.signal("add", "late")


async def test_a_client_with_the_definition_refuses_bad_signals_before_writing(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="inbox-bad")
        with pytest.raises(
            InvalidArgumentsError, match=r"no signal named 'ad' \(known: add, close"
        ):
            await handle.signal("ad", "x")
        with pytest.raises(InvalidArgumentsError, match="missing argument"):
            await handle.signal("add")
        with pytest.raises(InvalidArgumentsError, match="takes 1 argument"):
            await handle.signal("add", "x", "y")
        with pytest.raises(PayloadError):
            await handle.signal("add", object())
        fn = await env.client.start_workflow(no_handlers, 1, id="fn-bad")
        with pytest.raises(InvalidArgumentsError, match="known: none"):
            await fn.signal("anything")
        await handle.signal("close")
        await handle.result(timeout=WAIT)
        assert of_type(await handle.history(), "WorkflowSignaled")[0].attributes.name == "close"  # type: ignore[attr-defined]


async def test_signal_with_start_creates_then_only_signals(database_url: str) -> None:
    async with environment(database_url) as env:
        first = await env.client.start_workflow(
            Inbox.run, "ann", id="sws", start_signal="add", start_signal_args=["first"]
        )
        second = await env.client.start_workflow(
            Inbox.run, "bob", id="sws", start_signal="add", start_signal_args=["second"]
        )
        assert second.run_id == first.run_id  # the running one was signalled, not replaced
        await first.signal("close")
        assert await first.result(timeout=WAIT) == {"owner": "ann", "items": ["first", "second"]}
        types = await types_of(first)
        assert types[:2] == ["WorkflowStarted", "WorkflowSignaled"]  # its first input

        # Closed now: signal-with-start starts a new run.
        third = await env.client.start_workflow(
            Inbox.run, "cid", id="sws", start_signal="add", start_signal_args=["third"]
        )
        assert third.run_id != first.run_id
        with pytest.raises(InvalidArgumentsError):
            await env.client.start_workflow(Inbox.run, "x", id="sws-bad", start_signal="nope")
        assert await env.store.get_workflow("sws-bad") is None  # refused before writing
        await third.signal("close")
        assert await third.result(timeout=WAIT) == {"owner": "cid", "items": ["third"]}


async def test_a_signal_written_while_no_coordinator_runs_is_applied_on_start(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"
    async with environment(url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="offline")
        await wait_for_event(handle, "WorkflowStarted")
    async with environment(url) as env:
        # Written straight to the inbox (as a client whose wake-up was lost would).
        await env.store.add_inbox("offline", "signal", {"name": "close", "args": []})
    async with environment(url, sweep_interval=0.1) as env:
        handle = env.client.get_workflow_handle("offline")
        assert await handle.result(timeout=WAIT) == {"owner": "ann", "items": []}


# --- queries ------------------------------------------------------------------------------------
async def test_queries_answer_from_current_state_and_never_touch_history(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="q-state")
        await wait_for_event(handle, "WorkflowStarted")
        assert await handle.query("count") == 0
        await handle.signal("add", "a")
        await handle.signal("add", "b")
        await eventually(lambda: _count_is(handle, 2), what="both signals applied")
        assert await handle.query("item", 1) == "b"
        await wait_for_event(handle, "WorkflowSignaled", 2)  # and committed
        before = await env.store.get_workflow("q-state")
        for _ in range(5):
            assert await handle.query("count") == 2
            assert await bare_client(env).get_workflow_handle("q-state").query("item", 0) == "a"
        after = await env.store.get_workflow("q-state")
        assert before is not None and after is not None
        assert (after.version, after.history_length) == (before.version, before.history_length)


async def _count_is(handle: Any, n: int) -> bool:
    return bool(await handle.query("count") == n)


async def test_a_closed_or_evicted_workflow_is_queried_by_replaying_its_history(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="q-replay")
        await handle.signal("add", "x")
        await wait_for_event(handle, "WorkflowSignaled")  # committed
        env.coordinator._evict("q-replay")  # as if the cache had dropped it
        assert await bare_client(env).get_workflow_handle("q-replay").query("count") == 1
        await handle.signal("close")
        await handle.result(timeout=WAIT)
        assert await handle.query("item", 0) == "x"


async def test_a_query_that_draws_random_numbers_changes_nothing_replay_would_see(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Draws.run, id="draws")
        await wait_for_event(handle, "WorkflowStarted")
        peeks = [await handle.query("peek") for _ in range(3)]
        assert len(set(peeks)) == 1  # the same draw each time: its state is given back
        await handle.signal("go_on")
        live = await handle.result(timeout=WAIT)
        assert peeks[0] == live[1]  # what the next draw was going to be, and was
        assert await handle.query("drawn") == live  # replayed from history: the same


async def test_query_errors_are_clear(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="q-errors")
        await wait_for_event(handle, "WorkflowStarted")
        bare = bare_client(env).get_workflow_handle("q-errors")

        with pytest.raises(InvalidArgumentsError, match=r"no query named 'size' \(known: count"):
            await handle.query("size")  # refused by the client, which knows the definition
        with pytest.raises(InvalidArgumentsError, match=r"no query named 'size' \(known: count"):
            await bare.query("size")  # refused by the coordinator
        with pytest.raises(InvalidArgumentsError):
            await bare.query("item", "not an int")
        with pytest.raises(QueryFailedError, match="IndexError"):
            await handle.query("item", 7)
        with pytest.raises(QueryFailedError, match="queries only read state"):
            await handle.query("sneaky")
        with pytest.raises(WorkflowNotFoundError):
            await handle.client.get_workflow_handle("nobody").query("count")

        # The workflow is unharmed by all that.
        await handle.signal("add", "still fine")
        await handle.signal("close")
        assert await handle.result(timeout=WAIT) == {"owner": "ann", "items": ["still fine"]}
        assert "TimerStarted" not in await types_of(handle)


async def test_a_query_nobody_answers_times_out(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="q-timeout")
        lonely = Client(env.store, MemoryTransport())  # a broker no coordinator serves
        with pytest.raises(QueryTimeoutError, match="no coordinator answered within 0.2s"):
            await lonely.get_workflow_handle("q-timeout").query("count", timeout=0.2)
        with pytest.raises(TimeoutError):  # the builtin, too
            await lonely.get_workflow_handle("q-timeout").query("count", timeout=0.1)
        await handle.signal("close")
        await handle.result(timeout=WAIT)


@pytest.mark.integration
async def test_queries_over_rabbitmq_reach_a_server_and_expire_without_one(
    rabbit_factory: TransportFactory,
) -> None:
    asker = await rabbit_factory()
    server = await rabbit_factory()

    def ask(request_id: str, *args: Any) -> QueryRequest:
        return QueryRequest(request_id=request_id, workflow_id="w", query="q", args=list(args))

    with pytest.raises(TimeoutError):  # nobody serves yet
        await asker.request_query(ask("expired"), timeout=0.3)
    await asyncio.sleep(0.2)  # its expiration is at most its deadline: gone by now
    served: list[str] = []

    async def answer(request: QueryRequest) -> QueryReply:
        served.append(request.request_id)
        return QueryReply(request_id=request.request_id, ok=True, result={"echo": request.args})

    subscription = await server.serve_queries(answer)
    try:
        reply = await asker.request_query(ask("one", 1, "x"), timeout=WAIT)
        assert reply.ok and reply.result == {"echo": [1, "x"]}
        replies = await asyncio.gather(
            *(asker.request_query(ask(f"many-{i}", i), timeout=WAIT) for i in range(20))
        )
        assert [r.result["echo"] for r in replies] == [[i] for i in range(20)]
        assert "expired" not in served  # its deadline passed in the queue: never answered
    finally:
        await subscription.cancel()


# --- the command line ---------------------------------------------------------------------------
def test_cli_signal_and_query_errors_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    conn = ["--db", db, "--broker", "memory://"]
    with pytest.raises(SystemExit) as done:
        cli_main(["db", "upgrade", *conn])
    assert done.value.code == 0
    capsys.readouterr()

    with pytest.raises(SystemExit) as done:
        cli_main(["signal", "no-such-id", "add", "--input", '"x"', *conn])
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["saga: workflow 'no-such-id' not found"]

    with pytest.raises(SystemExit) as done:
        cli_main(["query", "no-such-id", "count", *conn])
    assert done.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == ["saga: workflow 'no-such-id' not found"]


async def test_describe_warns_when_a_history_grows_long(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("saga.client.HISTORY_WARNING_THRESHOLD", 3)
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Inbox.run, "ann", id="long")
        for item in "abcd":
            await handle.signal("add", item)
        await wait_for_event(handle, "WorkflowSignaled", 4)
        desc = await handle.describe()
        assert desc.status is WorkflowStatus.RUNNING
        assert any("consider continue-as-new" in w for w in desc.warnings), desc.warnings
