"""The deterministic workflow loop and instance, driven by hand: no database, no broker."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from saga import NondeterminismError, SagaError, activity, workflow
from saga._runtime.instance import WorkflowInstance
from saga.history import (
    ActivityCompleted,
    ActivityScheduled,
    EventAttributes,
    HistoryEvent,
    MarkerRecorded,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCompleted,
    WorkflowSignaled,
    WorkflowStarted,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RUN_ID = "5f0c6c1e-0000-4000-8000-000000000001"


@activity.defn(queue="unit")
async def lookup(key: str) -> str:
    raise NotImplementedError  # never runs here: the tests answer for the worker


@activity.defn(queue="unit")
async def double(n: int) -> int:
    raise NotImplementedError


@workflow.defn
class Chance:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        first = workflow.random()
        ident = str(workflow.uuid4())
        started = workflow.now()
        await workflow.execute_activity(lookup, "k")
        return {
            "random": [first, workflow.random()],
            "uuid": ident,
            "started": started.isoformat(),
            "after_step": workflow.now().isoformat(),
            "info": workflow.info().workflow_id,
            "loop_time": asyncio.get_running_loop().time(),
        }


@workflow.defn
class Fanout:
    @workflow.run
    async def run(self, count: int) -> list[int]:
        return list(
            await asyncio.gather(*(workflow.execute_activity(double, i) for i in range(count)))
        )


@workflow.defn
class TaskOrder:
    @workflow.run
    async def run(self) -> list[str]:
        seen: list[str] = []

        async def worker(name: str, hops: int) -> None:
            for hop in range(hops):
                seen.append(f"{name}{hop}")
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(n, 3) for n in "abc"))
        return seen


@workflow.defn
class Sleeper:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(hours=1))
        return workflow.now().isoformat()


@workflow.defn
class Waiter:
    def __init__(self) -> None:
        self.ready = False

    @workflow.signal
    def go(self) -> None:
        self.ready = True

    @workflow.run
    async def run(self) -> bool:
        try:
            await workflow.wait_condition(lambda: self.ready, timeout=60)
        except TimeoutError:
            return False
        return True


@workflow.defn
class Patched:
    @workflow.run
    async def run(self) -> str:
        if workflow.patched("v2"):
            return await workflow.execute_activity(lookup, "new")
        return await workflow.execute_activity(lookup, "old")


log_of_finally: list[str] = []


@workflow.defn
class Stubborn:
    @workflow.run
    async def run(self) -> None:
        try:
            await workflow.execute_activity(lookup, "k")
        finally:
            log_of_finally.append("finally ran")
            await workflow.execute_activity(lookup, "cleanup")  # must not be recorded


# --- driving helpers --------------------------------------------------------------------------
class Driver:
    """Feeds events to one instance the way the coordinator does, numbering them."""

    def __init__(self, wf: Any, run_id: str = RUN_ID, workflow_id: str = "wf-1") -> None:
        self.instance = WorkflowInstance(workflow.definition_of(wf), workflow_id, run_id)
        self.run_id = run_id
        self.history: list[HistoryEvent] = []

    def _event(self, attrs: EventAttributes, when: datetime) -> HistoryEvent:
        event = HistoryEvent(event_id=len(self.history) + 1, timestamp=when, attributes=attrs)
        self.history.append(event)
        return event

    def feed(self, attrs: EventAttributes, when: datetime = T0) -> list[EventAttributes]:
        commands = self.instance.activate(self._event(attrs, when), None)
        for command in commands:
            self._event(command, when)
        return commands

    def start(self, *args: Any, when: datetime = T0) -> list[EventAttributes]:
        name = self.instance.definition.name
        return self.feed(
            WorkflowStarted(workflow_type=name, args=list(args), run_id=self.run_id), when
        )


def replay(wf: Any, history: list[HistoryEvent], run_id: str = RUN_ID) -> WorkflowInstance:
    """Re-run ``history`` the way Execution.restore does; returns the rebuilt instance."""
    inst = WorkflowInstance(workflow.definition_of(wf), "wf-1", run_id)
    i = 0
    while i < len(history):
        j = i + 1
        while j < len(history) and history[j].attributes.kind != "input":
            j += 1
        recorded = [e for e in history[i + 1 : j] if e.attributes.kind == "command"]
        inst.activate(history[i], recorded)
        i = j
    return inst


def _types(commands: list[EventAttributes]) -> list[str]:
    return [c.event_type() for c in commands]


# --- determinism ------------------------------------------------------------------------------
def test_random_uuid_and_now_are_the_same_on_every_run_of_the_same_history() -> None:
    results = []
    for _ in range(2):
        d = Driver(Chance)
        (scheduled,) = d.start()
        assert isinstance(scheduled, ActivityScheduled)
        (done,) = d.feed(ActivityCompleted(seq=1, attempt=1, result="v"), T0 + timedelta(minutes=5))
        assert isinstance(done, WorkflowCompleted)
        results.append(done.result)
    assert results[0] == results[1]
    assert results[0]["started"] == T0.isoformat()
    assert results[0]["after_step"] == (T0 + timedelta(minutes=5)).isoformat()
    assert results[0]["loop_time"] == (T0 + timedelta(minutes=5)).timestamp()
    assert results[0]["info"] == "wf-1"
    assert results[0]["random"][0] != results[0]["random"][1]


def test_another_run_id_draws_other_random_values() -> None:
    a, b = Driver(Chance), Driver(Chance, run_id="5f0c6c1e-0000-4000-8000-000000000002")
    for d in (a, b):
        d.start()
        d.feed(ActivityCompleted(seq=1, attempt=1, result="v"))
    ra = a.history[-1].attributes
    rb = b.history[-1].attributes
    assert isinstance(ra, WorkflowCompleted) and isinstance(rb, WorkflowCompleted)
    assert ra.result["uuid"] != rb.result["uuid"]
    assert ra.result["random"] != rb.result["random"]


def test_replaying_a_history_reproduces_the_same_state() -> None:
    d = Driver(Chance)
    d.start()
    d.feed(ActivityCompleted(seq=1, attempt=1, result="v"))
    rebuilt = replay(Chance, d.history)
    assert rebuilt.closed
    assert rebuilt._main is not None and rebuilt._main.result() == d.instance._main.result()  # type: ignore[union-attr]


def test_tasks_interleave_in_fifo_order() -> None:
    d = Driver(TaskOrder)
    (done,) = d.start()
    assert isinstance(done, WorkflowCompleted)
    assert done.result == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_gather_schedules_every_step_at_once_and_keeps_argument_order() -> None:
    d = Driver(Fanout)
    commands = d.start(3)
    assert _types(commands) == ["ActivityScheduled"] * 3
    assert [c.seq for c in commands] == [1, 2, 3]  # type: ignore[attr-defined]
    assert d.feed(ActivityCompleted(seq=3, attempt=1, result=4)) == []
    assert d.feed(ActivityCompleted(seq=1, attempt=1, result=0)) == []
    (done,) = d.feed(ActivityCompleted(seq=2, attempt=1, result=2))
    assert isinstance(done, WorkflowCompleted) and done.result == [0, 2, 4]


# --- timers -----------------------------------------------------------------------------------
def test_sleep_is_a_durable_timer_that_resumes_at_its_due_time() -> None:
    d = Driver(Sleeper)
    (timer,) = d.start()
    assert isinstance(timer, TimerStarted)
    assert timer.duration == 3600
    assert timer.fire_at == T0 + timedelta(hours=1)
    (done,) = d.feed(TimerFired(seq=timer.seq), timer.fire_at)
    assert isinstance(done, WorkflowCompleted)
    assert done.result == timer.fire_at.isoformat()


def test_wait_condition_met_before_its_timeout_cancels_the_timer() -> None:
    d = Driver(Waiter)
    (timer,) = d.start()
    assert isinstance(timer, TimerStarted)
    commands = d.feed(WorkflowSignaled(name="go"), T0 + timedelta(seconds=5))
    assert _types(commands) == ["TimerCancelled", "WorkflowCompleted"]
    assert isinstance(commands[0], TimerCancelled) and commands[0].seq == timer.seq
    assert isinstance(commands[1], WorkflowCompleted) and commands[1].result is True


def test_wait_condition_times_out_when_its_timer_fires() -> None:
    d = Driver(Waiter)
    (timer,) = d.start()
    (done,) = d.feed(TimerFired(seq=timer.seq), T0 + timedelta(seconds=60))  # type: ignore[attr-defined]
    assert isinstance(done, WorkflowCompleted) and done.result is False


# --- replay checks ----------------------------------------------------------------------------
def test_a_different_command_on_replay_is_nondeterminism_naming_both() -> None:
    d = Driver(Chance)
    d.start()
    scheduled = d.history[1]
    tampered = dataclasses.replace(
        scheduled, attributes=scheduled.attributes.model_copy(update={"activity": "other"})
    )
    with pytest.raises(NondeterminismError) as info:
        replay(Chance, [d.history[0], tampered])
    assert info.value.event_id == 2
    assert "activity='other'" in str(info.value)
    assert "activity='lookup'" in str(info.value)


def test_a_command_missing_from_the_code_is_nondeterminism() -> None:
    d = Driver(Chance)
    d.start()
    extra = HistoryEvent(
        event_id=3, timestamp=T0, attributes=TimerStarted(seq=2, fire_at=T0, duration=0)
    )
    with pytest.raises(NondeterminismError, match="did not produce"):
        replay(Chance, [*d.history, extra])


def test_patched_takes_the_new_path_live_and_the_old_path_on_old_history() -> None:
    live = Driver(Patched)
    commands = live.start()
    assert _types(commands) == ["MarkerRecorded", "ActivityScheduled"]
    assert isinstance(commands[0], MarkerRecorded) and commands[0].patch_id == "v2"
    assert commands[1].args == ["new"]  # type: ignore[attr-defined]
    replay(Patched, live.history)  # new history replays

    old_history = [
        live.history[0],
        HistoryEvent(
            event_id=2,
            timestamp=T0,
            attributes=ActivityScheduled(seq=1, activity="lookup", queue="unit", args=["old"]),
        ),
    ]
    rebuilt = replay(Patched, old_history)  # old history replays too, on the old path
    assert rebuilt._patches == {"v2": False}


# --- boundaries -------------------------------------------------------------------------------
def test_workflow_functions_refuse_to_run_outside_workflow_code() -> None:
    with pytest.raises(SagaError, match="workflow code"):
        workflow.now()
    with pytest.raises(SagaError, match="workflow code"):
        workflow.random()


async def test_workflow_functions_refuse_to_run_on_an_ordinary_loop() -> None:
    with pytest.raises(SagaError, match="workflow code"):
        await workflow.execute_activity(lookup, "k")


def test_the_loop_refuses_threads() -> None:
    d = Driver(Sleeper)
    with pytest.raises(RuntimeError, match="threads"):
        d.instance.loop.call_soon_threadsafe(lambda: None)


def test_dispose_closes_coroutines_without_recording_anything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gc.collect()  # instances other tests left behind are not this test's business
    caplog.clear()
    log_of_finally.clear()
    d = Driver(Stubborn)
    (scheduled,) = d.start()
    assert isinstance(scheduled, ActivityScheduled)
    before = list(d.instance._new)
    d.instance.dispose()
    # Python runs finally blocks on close; the workflow API they call is refused, so the
    # cleanup step is never scheduled and the disposal does not raise.
    assert log_of_finally == ["finally ran"]
    assert d.instance._new == before
    with caplog.at_level(logging.WARNING, logger="saga.workflow"):
        del d
        gc.collect()
    assert "destroyed but it is pending" not in caplog.text


def test_dispose_closes_every_task_not_only_the_main_one() -> None:
    d = Driver(Fanout)
    d.start(3)
    tasks = list(d.instance.loop.tasks)
    assert tasks and not all(t.done() for t in tasks)
    d.instance.dispose()
    for task in tasks:
        coro = task.get_coro()
        assert coro is None or coro.cr_frame is None  # type: ignore[union-attr]


# --- definitions ------------------------------------------------------------------------------
class _Base:
    def __init__(self) -> None:
        self.got: list[str] = []

    @workflow.signal
    def push(self, item: str) -> None:
        self.got.append(item)

    @workflow.query
    def items(self) -> list[str]:
        return self.got


@workflow.defn
class Inherits(_Base):
    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: len(self.got) == 2)
        return self.got


def test_signal_and_query_handlers_may_be_inherited() -> None:
    definition = workflow.definition_of(Inherits)
    assert set(definition.signals) == {"push"} and set(definition.queries) == {"items"}
    d = Driver(Inherits)
    assert d.start() == []
    assert d.feed(WorkflowSignaled(name="push", args=["a"])) == []
    assert d.instance.query("items", []) == ["a"]
    (done,) = d.feed(WorkflowSignaled(name="push", args=["b"]))
    assert isinstance(done, WorkflowCompleted) and done.result == ["a", "b"]
