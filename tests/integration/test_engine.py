"""The engine end to end: coordinator, worker and store, on SQLite and PostgreSQL.

Every test runs a real ``WorkflowEnvironment`` on the ``database_url`` fixture and
checks what a user can see: results, statuses, ``describe()`` and the history.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from saga import (
    RetryPolicy,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowStatus,
    activity,
    workflow,
)
from saga._runtime.execution import Execution
from saga.errors import CancelledError, TerminatedError
from saga.history import (
    ActivityCompleted,
    ActivityScheduled,
    TimerFired,
    TimerStarted,
)
from saga.messages import ResultMessage, TaskMessage
from saga.replay import replay_history
from saga.testing import WorkflowEnvironment
from saga.transports.base import task_queue_name
from saga.transports.memory import MemoryTransport
from tests.integration.engine_helpers import (
    WAIT,
    eventually,
    of_type,
    settled,
    types_of,
    wait_for_event,
)

QUEUE = "engine-tests"
EXTERNAL_QUEUE = "engine-tests-external"  # no worker listens: the tests answer by hand

calls: Counter[str] = Counter()
gates: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    calls.clear()
    gates.clear()
    yield
    for gate in gates.values():
        gate.set()


def gate(name: str) -> asyncio.Event:
    gates[name] = asyncio.Event()
    return gates[name]


# --- activities -------------------------------------------------------------------------------
@activity.defn(queue=QUEUE)
async def greet(name: str) -> str:
    calls["greet"] += 1
    return f"hello {name}"


@activity.defn(queue=QUEUE)
async def shout(text: str) -> str:
    calls["shout"] += 1
    return text.upper()


@activity.defn(queue=QUEUE)
async def wait_at_gate(name: str) -> str:
    calls[f"gate:{name}"] += 1
    await gates[name].wait()
    return f"passed {name}"


@activity.defn(queue=QUEUE)
async def flaky(failures: int) -> int:
    calls["flaky"] += 1
    if activity.info().attempt <= failures:
        raise RuntimeError(f"attempt {activity.info().attempt} fails")
    return activity.info().attempt


@activity.defn(queue=QUEUE)
async def note(text: str) -> None:
    calls[f"note:{text}"] += 1


# --- workflows --------------------------------------------------------------------------------
@workflow.defn
class TwoSteps:
    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_activity(greet, name)
        return await workflow.execute_activity(shout, greeting)


@workflow.defn
class WaitsForSignal:
    def __init__(self) -> None:
        self.released = False

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.run
    async def run(self, label: str) -> str:
        try:
            await workflow.wait_condition(lambda: self.released)
        except asyncio.CancelledError:
            await workflow.execute_activity(note, f"cancelled {label}")
            raise
        return label


@workflow.defn
class GatedThenShout:
    @workflow.run
    async def run(self, name: str) -> str:
        try:
            passed = await workflow.execute_activity(wait_at_gate, name)
            return await workflow.execute_activity(shout, passed)
        finally:
            await workflow.execute_activity(note, "finally")


@workflow.defn
class FlakyThenBlocked:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            flaky, 2, retry_policy=RetryPolicy(initial_interval=timedelta(seconds=3))
        )
        await workflow.execute_activity(wait_at_gate, "second")


@workflow.defn
class SleepsAnHour:
    @workflow.run
    async def run(self) -> list[str]:
        before = workflow.now()
        await workflow.sleep(timedelta(hours=1))
        return [before.isoformat(), workflow.now().isoformat()]


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, names: list[str]) -> list[str]:
        return list(await asyncio.gather(*(workflow.execute_activity(greet, n) for n in names)))


@workflow.defn
class Deterministic:
    def __init__(self) -> None:
        self.values: list[Any] = []

    @workflow.query
    def seen(self) -> list[Any]:
        return self.values

    def _draw(self) -> None:
        self.values.append([workflow.now().isoformat(), str(workflow.uuid4()), workflow.random()])

    @workflow.run
    async def run(self) -> list[Any]:
        self._draw()
        await workflow.execute_activity(greet, "x")
        self._draw()
        await workflow.sleep(30)
        self._draw()
        return self.values


@workflow.defn
class External:
    def __init__(self) -> None:
        self.done = False

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self) -> int:
        value: int = await workflow.execute_activity("external", 1, queue=EXTERNAL_QUEUE)
        await workflow.wait_condition(lambda: self.done)
        return value


@workflow.defn
class Collects:
    def __init__(self) -> None:
        self.items: list[str] = []

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.run
    async def run(self, wanted: int, timeout: float) -> dict[str, Any]:
        try:
            await workflow.wait_condition(lambda: len(self.items) >= wanted, timeout=timeout)
        except TimeoutError:
            return {"timed_out": True, "items": self.items}
        return {"timed_out": False, "items": self.items}


WORKFLOWS = [
    TwoSteps,
    WaitsForSignal,
    GatedThenShout,
    FlakyThenBlocked,
    SleepsAnHour,
    FanOut,
    Deterministic,
    External,
    Collects,
]
ACTIVITIES = [greet, shout, wait_at_gate, flaky, note]


def environment(database_url: str, **options: Any) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=WORKFLOWS, activities=ACTIVITIES, database_url=database_url, **options
    )


# --- the basics -------------------------------------------------------------------------------
async def test_two_step_workflow_completes_with_its_history_in_order(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(TwoSteps.run, "ada", id="two-steps")
        assert await handle.result(timeout=WAIT) == "HELLO ADA"

        info = await handle.describe()
        assert info.status is WorkflowStatus.COMPLETED
        assert info.result == "HELLO ADA"
        assert info.close_time is not None and info.close_time >= info.start_time

        events = await handle.history()
        assert [e.type for e in events] == [
            "WorkflowStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "WorkflowCompleted",
        ]
        assert [e.event_id for e in events] == [1, 2, 3, 4, 5, 6]
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(stamps)
        scheduled = [e.attributes for e in of_type(events, "ActivityScheduled")]
        assert [(s.seq, s.activity, s.args) for s in scheduled] == [  # type: ignore[attr-defined]
            (1, "greet", ["ada"]),
            (2, "shout", ["hello ada"]),
        ]
        completed = [e.attributes for e in of_type(events, "ActivityCompleted")]
        assert [(c.seq, c.attempt, c.result) for c in completed] == [  # type: ignore[attr-defined]
            (1, 1, "hello ada"),
            (2, 1, "HELLO ADA"),
        ]
    assert calls == {"greet": 1, "shout": 1}


async def test_a_result_too_big_for_the_close_notice_reaches_every_waiter(
    database_url: str,
) -> None:
    name = "x" * 20_000  # the notice carries outcomes up to 8 KiB; this one is read
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(TwoSteps.run, name, id="big-result")
        other = env.client.get_workflow_handle("big-result")
        results = await asyncio.gather(handle.result(timeout=WAIT), other.result(timeout=WAIT))
        small = await env.client.start_workflow(TwoSteps.run, "bo", id="small-result")
        assert await small.result(timeout=WAIT) == "HELLO BO"
        assert await env.client.get_workflow_handle("small-result").result() == "HELLO BO"
    assert results == ["HELLO " + name.upper()] * 2


async def test_describe_lists_steps_with_attempts_status_and_results(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        second = gate("second")
        handle = await env.client.start_workflow(FlakyThenBlocked.run, id="steps")
        await wait_for_event(handle, "ActivityScheduled", count=2)

        info = await handle.describe()
        assert info.status is WorkflowStatus.RUNNING
        first, pending = info.steps
        assert (first.seq, first.activity, first.queue) == (1, "flaky", QUEUE)
        assert (first.status, first.attempts, first.result) == ("COMPLETED", 3, 3)
        assert first.args == [2] and first.compensation is False
        assert first.closed_at is not None and first.closed_at > first.scheduled_at
        assert (pending.seq, pending.activity, pending.status) == (2, "wait_at_gate", "SCHEDULED")
        assert pending.closed_at is None
        assert info.pending_steps == [pending]
        assert info.compensations == []

        second.set()
        await handle.result(timeout=WAIT)
        done = (await handle.describe()).steps
        assert [s.status for s in done] == ["COMPLETED", "COMPLETED"]
    assert calls["flaky"] == 3


# --- ids --------------------------------------------------------------------------------------
async def test_a_running_id_is_refused_and_a_closed_id_can_be_reused(database_url: str) -> None:
    async with environment(database_url) as env:
        first = await env.client.start_workflow(WaitsForSignal.run, "one", id="reused")
        with pytest.raises(WorkflowAlreadyStartedError) as refused:
            await env.client.start_workflow(WaitsForSignal.run, "two", id="reused")
        assert refused.value.workflow_id == "reused"
        assert refused.value.run_id == first.run_id
        assert "reused" in str(refused.value)
        info = await first.describe()
        assert (info.run_id, info.input) == (first.run_id, ["one"])  # nothing overwritten

        await first.signal("release")
        assert await first.result(timeout=WAIT) == "one"

        second = await env.client.start_workflow(TwoSteps.run, "bo", id="reused")
        assert second.run_id != first.run_id
        assert await second.result(timeout=WAIT) == "HELLO BO"
        info = await second.describe()
        assert (info.type, info.run_id, info.status) == ("TwoSteps", second.run_id, "COMPLETED")
        types = await types_of(second)
        assert types[0] == "WorkflowStarted" and "WorkflowSignaled" not in types


async def test_concurrent_starts_of_one_id_start_one_run(database_url: str) -> None:
    async with environment(database_url) as env:
        outcomes = await asyncio.gather(
            *(env.client.start_workflow(TwoSteps.run, f"n{i}", id="once") for i in range(5)),
            return_exceptions=True,
        )
        started = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, WorkflowAlreadyStartedError)]
        assert len(started) == 1 and len(refused) == 4, outcomes
        assert {r.run_id for r in refused} == {started[0].run_id}
        name = (await started[0].describe()).input[0]
        assert await started[0].result(timeout=WAIT) == f"HELLO {name.upper()}"
        assert (await types_of(started[0])).count("WorkflowStarted") == 1


# --- cancel and terminate ---------------------------------------------------------------------
async def test_cancel_raises_cancelled_error_in_the_workflow(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(WaitsForSignal.run, "c", id="cancel-me")
        await wait_for_event(handle, "WorkflowStarted")
        await handle.cancel("changed my mind")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        assert failed.value.status == "CANCELLED"
        assert isinstance(failed.value.cause, CancelledError)
        assert (await handle.describe()).status is WorkflowStatus.CANCELLED
        # The code caught asyncio.CancelledError and ran a step before re-raising it.
        assert await types_of(handle) == [
            "WorkflowStarted",
            "WorkflowCancelRequested",
            "ActivityScheduled",
            "ActivityCompleted",
            "WorkflowCancelled",
        ]
    assert calls["note:cancelled c"] == 1


async def test_cancel_while_a_step_runs_abandons_the_step(database_url: str) -> None:
    async with environment(database_url) as env:
        blocker = gate("slow")
        handle = await env.client.start_workflow(GatedThenShout.run, "slow", id="cancel-step")
        await eventually(lambda: _called("gate:slow"), what="the step to start")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError, match="CANCELLED"):
            await handle.result(timeout=WAIT)
        types = await types_of(handle)
        assert types[:4] == [
            "WorkflowStarted",
            "ActivityScheduled",
            "WorkflowCancelRequested",
            "ActivityCancelRequested",
        ]
        assert types[-1] == "WorkflowCancelled"
        steps = (await handle.describe()).steps
        assert steps[0].status == "CANCELLED"

        blocker.set()  # the late result of the abandoned step changes nothing
        await settled(env)
        assert await types_of(handle) == types
    assert calls["shout"] == 0


async def _called(name: str) -> bool:
    return calls[name] > 0


async def test_terminate_ends_the_workflow_and_no_more_of_its_code_runs(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        blocker = gate("t")
        handle = await env.client.start_workflow(GatedThenShout.run, "t", id="terminate-me")
        await eventually(lambda: _called("gate:t"), what="the step to start")
        await handle.terminate("operator says stop")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        assert failed.value.status == "TERMINATED"
        assert isinstance(failed.value.cause, TerminatedError)
        assert "operator says stop" in str(failed.value)
        info = await handle.describe()
        assert info.status is WorkflowStatus.TERMINATED and info.close_time is not None
        types = await types_of(handle)
        assert types == ["WorkflowStarted", "ActivityScheduled", "WorkflowTerminated"]

        blocker.set()  # its step finishes now: the result must go nowhere
        await settled(env)
        assert await types_of(handle) == types
        with pytest.raises(WorkflowNotFoundError, match="TERMINATED"):
            await handle.signal("anything")
    # Neither the next step nor the cleanup in the workflow's `finally` ever ran.
    assert calls["shout"] == 0
    assert calls["note:finally"] == 0


# --- listing ----------------------------------------------------------------------------------
async def test_list_workflows_filters_by_status_type_and_id_prefix(database_url: str) -> None:
    async with environment(database_url) as env:
        done = []
        for i in range(3):
            done.append(await env.client.start_workflow(TwoSteps.run, str(i), id=f"list-done-{i}"))
        for h in done:
            await h.result(timeout=WAIT)
        waiting = [
            await env.client.start_workflow(WaitsForSignal.run, str(i), id=f"list-wait-{i}")
            for i in range(2)
        ]
        for h in waiting:
            await wait_for_event(h, "WorkflowStarted")

        async def ids(**filters: Any) -> list[str]:
            return [d.id async for d in env.client.list_workflows(**filters)]

        assert await ids(status="COMPLETED") == ["list-done-2", "list-done-1", "list-done-0"]
        assert await ids(status=WorkflowStatus.RUNNING) == ["list-wait-1", "list-wait-0"]
        assert await ids(type="WaitsForSignal") == ["list-wait-1", "list-wait-0"]
        assert await ids(type="TwoSteps", status="RUNNING") == []
        assert await ids(id_prefix="list-done-1") == ["list-done-1"]
        assert await ids(id_prefix="list-") == [
            "list-wait-1",
            "list-wait-0",
            "list-done-2",
            "list-done-1",
            "list-done-0",
        ]
        assert await ids(page_size=2) == await ids()  # paging returns every row once
        listed = [d async for d in env.client.list_workflows(status="COMPLETED")]
        assert {d.result for d in listed} == {"HELLO 0", "HELLO 1", "HELLO 2"}
        assert all(d.type == "TwoSteps" and d.close_time is not None for d in listed)


# --- timers and concurrency -------------------------------------------------------------------
async def test_an_hour_long_sleep_is_a_durable_timer_skipped_in_tests(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        began = time.monotonic()
        handle = await env.client.start_workflow(SleepsAnHour.run, id="sleeper")
        before, after = await handle.result(timeout=WAIT)
        assert time.monotonic() - began < 10  # an hour of workflow time, seconds of ours
        assert datetime.fromisoformat(after) - datetime.fromisoformat(before) >= timedelta(hours=1)

        events = await handle.history()
        assert [e.type for e in events] == [
            "WorkflowStarted",
            "TimerStarted",
            "TimerFired",
            "WorkflowCompleted",
        ]
        started, fired = events[1], events[2]
        assert isinstance(started.attributes, TimerStarted)
        assert isinstance(fired.attributes, TimerFired)
        assert started.attributes.duration == 3600
        assert started.attributes.fire_at - started.timestamp == timedelta(hours=1)
        assert fired.attributes.seq == started.attributes.seq
        assert fired.timestamp >= started.attributes.fire_at


async def test_gather_runs_three_activities_at_once(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(FanOut.run, ["a", "b", "c"], id="fan-out")
        assert await handle.result(timeout=WAIT) == ["hello a", "hello b", "hello c"]
        types = await types_of(handle)
        # All three were decided in the first activation, before any result came back.
        assert types[:4] == ["WorkflowStarted"] + ["ActivityScheduled"] * 3
        assert sorted(types[4:7]) == ["ActivityCompleted"] * 3
        assert types[7:] == ["WorkflowCompleted"]
    assert calls["greet"] == 3


async def test_now_uuid_and_random_are_identical_on_replay(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        handle = await env.client.start_workflow(Deterministic.run, id="dice")
        live = await handle.result(timeout=WAIT)
        events = await handle.history()
        record = await env.store.get_workflow("dice")
    assert record is not None
    assert len(live) == 3 and len({v[1] for v in live}) == 3  # three distinct draws
    # Time moves with history: the draw after the 30 s timer sees the timer's time.
    assert datetime.fromisoformat(live[2][0]) - datetime.fromisoformat(live[0][0]) >= timedelta(
        seconds=30
    )

    replay_history([Deterministic], "dice", events)  # no NondeterminismError
    rebuilt = Execution.restore(record, events, workflow.definition_of(Deterministic))
    try:
        assert rebuilt.instance.query("seen", []) == live
    finally:
        rebuilt.instance.dispose()


# --- at-least-once delivery -------------------------------------------------------------------
async def test_a_duplicate_result_is_ignored(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(External.run, id="dupes")
        queue = env.broker.queues[task_queue_name(EXTERNAL_QUEUE)]
        task = await asyncio.wait_for(queue.get(), WAIT)
        assert isinstance(task, TaskMessage) and task.activity == "external"

        result = ResultMessage(
            kind="completed",
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            seq=task.seq,
            attempt=task.attempt,
            result=41,
        )
        transport = MemoryTransport(env.broker)
        await transport.publish_result(result)
        await transport.publish_result(result)  # the broker delivered it twice
        await wait_for_event(handle, "ActivityCompleted")
        await settled(env)
        await transport.publish_result(result.model_copy(update={"result": 99}))  # and late
        await settled(env)

        await handle.signal("finish")
        assert await handle.result(timeout=WAIT) == 41
        events = await handle.history()
        completed = of_type(events, "ActivityCompleted")
        assert len(completed) == 1
        assert isinstance(completed[0].attributes, ActivityCompleted)
        assert completed[0].attributes.result == 41
        assert len(of_type(events, "ActivityScheduled")) == 1
        assert isinstance(of_type(events, "ActivityScheduled")[0].attributes, ActivityScheduled)

        await transport.publish_result(result)  # after the close too
        await settled(env)
        assert await handle.history() == events


# --- signals and conditions -------------------------------------------------------------------
async def test_wait_condition_is_met_by_signals_before_its_timeout(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Collects.run, 2, 3600.0, id="collect")
        await wait_for_event(handle, "TimerStarted")
        await handle.signal("add", "x")
        await handle.signal("add", "y")
        assert await handle.result(timeout=WAIT) == {"timed_out": False, "items": ["x", "y"]}
        assert await types_of(handle) == [
            "WorkflowStarted",
            "TimerStarted",
            "WorkflowSignaled",
            "WorkflowSignaled",
            "TimerCancelled",
            "WorkflowCompleted",
        ]
        signaled = of_type(await handle.history(), "WorkflowSignaled")
        assert [(e.attributes.name, e.attributes.args) for e in signaled] == [  # type: ignore[attr-defined]
            ("add", ["x"]),
            ("add", ["y"]),
        ]


async def test_wait_condition_times_out_on_a_durable_timer(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        began = time.monotonic()
        handle = await env.client.start_workflow(Collects.run, 1, 3600.0, id="collect-timeout")
        # Nobody signals: with time skipping the hour passes as soon as all is idle.
        assert await handle.result(timeout=WAIT) == {"timed_out": True, "items": []}
        assert time.monotonic() - began < 10
        events = await handle.history()
        assert [e.type for e in events] == [
            "WorkflowStarted",
            "TimerStarted",
            "TimerFired",
            "WorkflowCompleted",
        ]
        assert events[2].timestamp - events[0].timestamp >= timedelta(hours=1)


# --- restarts ---------------------------------------------------------------------------------
async def test_shutdown_mid_try_finally_is_clean_and_the_workflow_resumes(
    database_url: str,
) -> None:
    # The workflow is suspended inside try/finally when the coordinator stops: dropping
    # its cached instance must neither run the finally's step nor fail the shutdown.
    async with environment(database_url) as env:
        gate("resume")
        handle = await env.client.start_workflow(GatedThenShout.run, "resume", id="resume")
        await eventually(lambda: _called("gate:resume"), what="the step to start")
    assert calls["note:finally"] == 0

    async with environment(database_url) as env:
        gate("resume").set()  # the step is delivered again (the broker was in memory)
        handle = env.client.get_workflow_handle("resume")
        assert await handle.result(timeout=WAIT) == "PASSED RESUME"
        types = await types_of(handle)
    assert calls["note:finally"] == 1  # once, when the code really left the block
    assert types.count("ActivityScheduled") == 3
    assert types[-1] == "WorkflowCompleted"
