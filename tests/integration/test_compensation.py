"""Compensations end to end: coordinator, worker and store, on SQLite and PostgreSQL.

Each test drives real workflows through ``WorkflowEnvironment`` and checks what a user
sees: the final status, ``describe()``, the history, and what the activities themselves
recorded (calls, attempts, start and end times).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from saga import ApplicationError, RetryPolicy, Saga, activity, workflow
from saga.errors import (
    ActivityError,
    CompensationError,
    TimeoutError,
    TimeoutKind,
    WorkflowFailureError,
)
from saga.history import (
    ActivityAttemptFailed,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityScheduled,
    HistoryEvent,
    WorkflowCancelled,
    WorkflowCancelRequested,
    WorkflowStatus,
)
from saga.replay import replay_history
from saga.testing import WorkflowEnvironment

QUEUE = "compensation-tests"
WAIT = 30.0  # seconds any single wait may take before the test fails


# --- what the activities do and what they saw -----------------------------------------------
@dataclass
class Call:
    """One attempt of an activity, as the activity itself recorded it."""

    kind: str  # "step" or "undo"
    name: str
    attempt: int
    compensation: bool
    started: datetime
    ended: datetime | None = None
    outcome: str = "running"


@dataclass
class Script:
    """Per-test behaviour of the activities, keyed ``"step:two"`` / ``"undo:one"``."""

    calls: list[Call] = field(default_factory=list)
    fail_forever: set[str] = field(default_factory=set)
    fail_times: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    started: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )

    def names(self, kind: str) -> list[str]:
        return [c.name for c in self.calls if c.kind == kind]

    def gate(self, key: str) -> asyncio.Event:
        self.gates[key] = asyncio.Event()
        return self.gates[key]

    async def perform(self, kind: str, name: str) -> None:
        key = f"{kind}:{name}"
        info = activity.info()
        call = Call(kind, name, info.attempt, info.compensation, datetime.now(UTC))
        self.calls.append(call)
        self.started[key].set()
        try:
            if key in self.gates:
                await self.gates[key].wait()
            if key in self.delay:
                await asyncio.sleep(self.delay[key])
            if key in self.fail_forever:
                raise ApplicationError(f"{key} refused", type="Refused", non_retryable=True)
            if info.attempt <= self.fail_times.get(key, 0):
                raise ApplicationError(f"{key} flaked on attempt {info.attempt}", type="Flaky")
        except BaseException as exc:
            call.outcome = type(exc).__name__
            raise
        finally:
            call.ended = datetime.now(UTC)
        call.outcome = "ok"


script = Script()


@pytest.fixture(autouse=True)
def fresh_script() -> Iterator[Script]:
    global script
    script = Script()
    yield script
    for gate in script.gates.values():
        gate.set()  # nothing stays blocked after the test


@activity.defn(queue=QUEUE)
async def step(name: str) -> str:
    await script.perform("step", name)
    return f"{name}-done"


@activity.defn(queue=QUEUE)
async def undo(name: str) -> str:
    await script.perform("undo", name)
    return f"{name}-undone"


# --- workflows --------------------------------------------------------------------------------
STEP = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_attempts=1),
}


class Plan(BaseModel):
    steps: list[str] = ["one", "two", "three"]
    parallel: bool = False
    continue_with_error: bool = False
    undo_max_attempts: int | None = None
    undo_timeout: float | None = None


def _undo_options(plan: Plan) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if plan.undo_max_attempts is not None:
        options["retry_policy"] = RetryPolicy(
            maximum_attempts=plan.undo_max_attempts, initial_interval=timedelta(seconds=1)
        )
    if plan.undo_timeout is not None:
        options["start_to_close_timeout"] = plan.undo_timeout
    return options


@workflow.defn
class Steps:
    """The try/except form."""

    @workflow.run
    async def run(self, plan: Plan) -> list[str]:
        saga = Saga(
            parallel_compensation=plan.parallel, continue_with_error=plan.continue_with_error
        )
        done = []
        try:
            for name in plan.steps:
                done.append(await workflow.execute_activity(step, name, **STEP))
                saga.add_compensation(undo, name, **_undo_options(plan))
        except (ActivityError, asyncio.CancelledError):
            await saga.compensate()
            raise
        return done


@workflow.defn
class StepsWith:
    """The ``async with Saga()`` form."""

    @workflow.run
    async def run(self, plan: Plan) -> list[str]:
        done = []
        async with Saga(
            parallel_compensation=plan.parallel, continue_with_error=plan.continue_with_error
        ) as saga:
            for name in plan.steps:
                done.append(await workflow.execute_activity(step, name, **STEP))
                saga.add_compensation(undo, name, **_undo_options(plan))
        return done


async def release_hold(name: str) -> None:
    """A compensation written as workflow code: it may run activities, timers, anything."""
    await workflow.sleep(1)
    await workflow.execute_activity(undo, f"{name}-hold", **STEP)


async def refuse_to_undo(name: str) -> None:
    raise ApplicationError(f"cannot undo {name} automatically", type="NeedsHuman")


@workflow.defn
class LocalCompensation:
    @workflow.run
    async def run(self, refuse: bool) -> None:
        async with Saga() as saga:
            await workflow.execute_activity(step, "one", **STEP)
            saga.add_compensation(refuse_to_undo if refuse else release_hold, "one")
            await workflow.execute_activity(step, "two", **STEP)


@workflow.defn
class ChargeFirst:
    @workflow.run
    async def run(self) -> str:
        async with Saga() as saga:
            # Registered before the call: if the charge times out we cannot know whether it
            # happened, so the refund must be harmless either way.
            saga.add_compensation(undo, "charge")
            return await workflow.execute_activity(step, "charge", **STEP)


WORKFLOWS = [Steps, StepsWith, LocalCompensation, ChargeFirst]


# --- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def make_env(database_url: str) -> Any:
    def make(*, time_skipping: bool = False) -> WorkflowEnvironment:
        return WorkflowEnvironment(
            workflows=WORKFLOWS,
            activities=[step, undo],
            database_url=database_url,
            time_skipping=time_skipping,
        )

    return make


@pytest.fixture
async def env(make_env: Any) -> AsyncIterator[WorkflowEnvironment]:
    async with make_env() as environment:
        yield environment


async def outcome(handle: Any) -> WorkflowFailureError:
    """Wait for the workflow to end unsuccessfully and return the error."""
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result(timeout=WAIT)
    # Whatever happened, the history replays against the code without a mismatch.
    replay_history(WORKFLOWS, handle.id, await handle.history())
    return info.value


def scheduled(events: list[HistoryEvent]) -> list[ActivityScheduled]:
    return [e.attributes for e in events if isinstance(e.attributes, ActivityScheduled)]


def compensations_scheduled(events: list[HistoryEvent]) -> list[tuple[str, list[Any]]]:
    return [(a.activity, a.args) for a in scheduled(events) if a.compensation]


def events_of(events: list[HistoryEvent], seq: int) -> list[Any]:
    return [e.attributes for e in events if getattr(e.attributes, "seq", None) == seq]


def compensation_seq(events: list[HistoryEvent], name: str) -> int:
    (seq,) = [a.seq for a in scheduled(events) if a.compensation and a.args == [name]]
    return seq


async def wait_for(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT)


async def wait_for_history(handle: Any, kind: type) -> None:
    deadline = time.monotonic() + WAIT
    while not any(isinstance(e.attributes, kind) for e in await handle.history()):
        assert time.monotonic() < deadline, f"no {kind.__name__} in history after {WAIT}s"
        await asyncio.sleep(0.02)


# --- order ------------------------------------------------------------------------------------
async def test_third_step_fails_compensations_run_newest_first_once_each(
    env: WorkflowEnvironment,
) -> None:
    script.fail_forever.add("step:three")
    handle = await env.client.start_workflow(Steps.run, Plan(), id="reverse")

    error = await outcome(handle)

    assert error.status == "COMPENSATED"
    assert isinstance(error.cause, ActivityError) and error.cause.activity == "step"
    desc = await handle.describe()
    assert desc.status is WorkflowStatus.COMPENSATED
    assert [(c.activity, c.args, c.status) for c in desc.compensations] == [
        ("undo", ["two"], "COMPLETED"),
        ("undo", ["one"], "COMPLETED"),
    ]
    events = await handle.history()
    assert compensations_scheduled(events) == [("undo", ["two"]), ("undo", ["one"])]
    # The activities' own record: each undone once, two before one, one at a time.
    assert script.names("undo") == ["two", "one"]
    two, one = (c for c in script.calls if c.kind == "undo")
    assert two.ended is not None and two.ended <= one.started
    assert script.names("step") == ["one", "two", "three"]


async def test_parallel_compensations_overlap_and_the_saga_waits_for_all(
    env: WorkflowEnvironment,
) -> None:
    script.fail_forever.add("step:four")
    for name in ("one", "two", "three"):
        script.delay[f"undo:{name}"] = 0.2
    plan = Plan(steps=["one", "two", "three", "four"], parallel=True)
    handle = await env.client.start_workflow(Steps.run, plan, id="parallel")

    error = await outcome(handle)

    assert error.status == "COMPENSATED"
    undos = [c for c in script.calls if c.kind == "undo"]
    assert sorted(c.name for c in undos) == ["one", "three", "two"]
    ends = [c.ended for c in undos if c.ended is not None]
    assert len(ends) == 3
    # All three were running at the same moment: the last start precedes the first end.
    assert max(c.started for c in undos) < min(ends)
    desc = await handle.describe()
    assert desc.close_time is not None and desc.close_time >= max(ends)
    assert all(c.status == "COMPLETED" for c in desc.compensations)
    # All were scheduled (newest first) before any of them completed.
    events = await handle.history()
    assert compensations_scheduled(events) == [
        ("undo", ["three"]),
        ("undo", ["two"]),
        ("undo", ["one"]),
    ]
    comp_seqs = {a.seq for a in scheduled(events) if a.compensation}
    scheduled_at = [
        e.event_id
        for e in events
        if isinstance(e.attributes, ActivityScheduled) and e.attributes.seq in comp_seqs
    ]
    completed_at = [
        e.event_id
        for e in events
        if isinstance(e.attributes, ActivityCompleted) and e.attributes.seq in comp_seqs
    ]
    assert len(completed_at) == 3 and max(scheduled_at) < min(completed_at)


# --- retries and failures ---------------------------------------------------------------------
async def test_flaky_compensation_is_retried_until_it_succeeds(make_env: Any) -> None:
    script.fail_forever.add("step:three")
    script.fail_times["undo:two"] = 3
    began = time.monotonic()
    async with make_env(time_skipping=True) as env:
        handle = await env.client.start_workflow(Steps.run, Plan(), id="flaky-undo")
        error = await outcome(handle)
        events = await handle.history()
        desc = await handle.describe()

    assert error.status == "COMPENSATED"
    seq = compensation_seq(events, "two")
    attempts = [a for a in events_of(events, seq) if not isinstance(a, ActivityScheduled)]
    assert [type(a).__name__ for a in attempts] == ["ActivityAttemptFailed"] * 3 + [
        "ActivityCompleted"
    ]
    assert [a.attempt for a in attempts] == [1, 2, 3, 4]
    assert all(a.failure.type == "Flaky" for a in attempts[:3])
    assert [c.attempt for c in script.calls if c.kind == "undo" and c.name == "two"] == [1, 2, 3, 4]
    # Backoff of 1 s, 2 s, 4 s in workflow time; time skipping made it free in real time.
    waits = [a.next_attempt_at for a in attempts[:3]]
    assert [(b - a).total_seconds() > 1.5 for a, b in zip(waits, waits[1:], strict=False)] == [
        True,
        True,
    ]
    assert time.monotonic() - began < 7.0
    (two,) = [c for c in desc.compensations if c.args == ["two"]]
    assert (two.status, two.attempts) == ("COMPLETED", 4)
    assert script.names("undo").count("one") == 1


async def test_compensation_failing_for_good_stops_the_rest_by_default(
    env: WorkflowEnvironment,
) -> None:
    script.fail_forever.update({"step:three", "undo:two"})
    handle = await env.client.start_workflow(Steps.run, Plan(), id="undo-fails")

    error = await outcome(handle)

    assert error.status == "COMPENSATION_FAILED"
    assert isinstance(error.cause, CompensationError)
    (cause,) = error.cause.causes
    assert isinstance(cause, ActivityError) and cause.activity == "undo"
    assert "undo:two refused" in str(cause.cause)
    assert script.names("undo") == ["two"]  # continue_with_error=False: one is left for a human
    desc = await handle.describe()
    assert desc.status is WorkflowStatus.COMPENSATION_FAILED
    assert [(c.args, c.status) for c in desc.compensations] == [(["two"], "FAILED")]


async def test_continue_with_error_runs_every_compensation_and_reports_every_failure(
    env: WorkflowEnvironment,
) -> None:
    script.fail_forever.update({"step:four", "undo:three", "undo:one"})
    plan = Plan(steps=["one", "two", "three", "four"], continue_with_error=True)
    handle = await env.client.start_workflow(Steps.run, plan, id="continue")

    error = await outcome(handle)

    assert error.status == "COMPENSATION_FAILED"
    assert isinstance(error.cause, CompensationError)
    assert sorted(str(c.cause) for c in error.cause.causes) == [
        "undo:one refused",
        "undo:three refused",
    ]
    assert script.names("undo") == ["three", "two", "one"]
    desc = await handle.describe()
    assert [(c.args, c.status) for c in desc.compensations] == [
        (["three"], "FAILED"),
        (["two"], "COMPLETED"),
        (["one"], "FAILED"),
    ]


@pytest.mark.parametrize("continue_with_error", [False, True])
async def test_parallel_compensation_reports_all_failures_not_just_the_first(
    env: WorkflowEnvironment, continue_with_error: bool
) -> None:
    script.fail_forever.update({"step:four", "undo:three", "undo:one"})
    script.delay["undo:one"] = 0.1  # fails last: the first failure must not hide it
    plan = Plan(
        steps=["one", "two", "three", "four"],
        parallel=True,
        continue_with_error=continue_with_error,
    )
    handle = await env.client.start_workflow(Steps.run, plan, id="parallel-failures")

    error = await outcome(handle)

    assert error.status == "COMPENSATION_FAILED"
    assert isinstance(error.cause, CompensationError)
    assert len(error.cause.causes) == 2
    assert sorted(str(c.cause) for c in error.cause.causes) == [
        "undo:one refused",
        "undo:three refused",
    ]
    assert all(isinstance(c, ActivityError) for c in error.cause.causes)
    assert sorted(script.names("undo")) == ["one", "three", "two"]
    desc = await handle.describe()
    assert desc.error is not None and len(desc.error.causes) == 2


async def test_first_step_fails_nothing_to_compensate(env: WorkflowEnvironment) -> None:
    script.fail_forever.add("step:one")
    handle = await env.client.start_workflow(Steps.run, Plan(), id="first-fails")

    error = await outcome(handle)

    assert error.status == "FAILED"
    assert script.names("undo") == []
    desc = await handle.describe()
    assert desc.status is WorkflowStatus.FAILED
    assert desc.compensations == []
    assert compensations_scheduled(await handle.history()) == []


# --- cancellation -----------------------------------------------------------------------------
@pytest.mark.parametrize("form", [Steps, StepsWith], ids=["try-except", "async-with"])
async def test_cancel_during_second_step_compensates_the_first(
    env: WorkflowEnvironment, form: Any
) -> None:
    gate = script.gate("step:two")
    handle = await env.client.start_workflow(form.run, Plan(), id=f"cancel-{form.__name__}")
    await wait_for(script.started["step:two"])

    await handle.cancel("trip called off")
    error = await outcome(handle)

    assert error.status == "CANCELLED"
    gate.set()
    assert script.names("undo") == ["one"]
    assert "three" not in script.names("step")
    events = await handle.history()
    assert compensations_scheduled(events) == [("undo", ["one"])]
    step_two = next(a.seq for a in scheduled(events) if a.args == ["two"] and not a.compensation)
    assert any(isinstance(a, ActivityCancelRequested) for a in events_of(events, step_two))
    closing = events[-1].attributes
    assert isinstance(closing, WorkflowCancelled) and closing.compensated
    desc = await handle.describe()
    assert desc.status is WorkflowStatus.CANCELLED
    assert [(c.args, c.status) for c in desc.compensations] == [(["one"], "COMPLETED")]


@pytest.mark.parametrize("form", [Steps, StepsWith], ids=["try-except", "async-with"])
async def test_cancel_during_compensation_does_not_stop_the_remaining_ones(
    env: WorkflowEnvironment, form: Any
) -> None:
    script.fail_forever.add("step:three")
    gate = script.gate("undo:two")
    handle = await env.client.start_workflow(form.run, Plan(), id="cancel-while-undoing")
    await wait_for(script.started["undo:two"])

    await handle.cancel()
    await wait_for_history(handle, WorkflowCancelRequested)
    gate.set()
    error = await outcome(handle)

    # The cancel is honoured, but only once every compensation has run.
    assert error.status == "CANCELLED"
    assert script.names("undo") == ["two", "one"]
    assert all(c.outcome == "ok" for c in script.calls if c.kind == "undo")
    desc = await handle.describe()
    assert [(c.args, c.status) for c in desc.compensations] == [
        (["two"], "COMPLETED"),
        (["one"], "COMPLETED"),
    ]
    events = await handle.history()
    cancel_at = next(
        e.event_id for e in events if isinstance(e.attributes, WorkflowCancelRequested)
    )
    later = [e.attributes for e in events if e.event_id > cancel_at]
    assert ("undo", ["one"]) in [
        (a.activity, a.args) for a in later if isinstance(a, ActivityScheduled)
    ]
    assert not any(isinstance(a, ActivityCancelRequested) for a in later)


# --- options and shapes of compensations ------------------------------------------------------
async def test_per_compensation_retry_policy_is_honoured(make_env: Any) -> None:
    script.fail_forever.add("step:three")
    script.fail_times["undo:two"] = 100
    plan = Plan(undo_max_attempts=2)
    async with make_env(time_skipping=True) as env:
        handle = await env.client.start_workflow(Steps.run, plan, id="undo-policy")
        error = await outcome(handle)
        events = await handle.history()

    assert error.status == "COMPENSATION_FAILED"
    seq = compensation_seq(events, "two")
    (command,) = [a for a in events_of(events, seq) if isinstance(a, ActivityScheduled)]
    assert command.retry_policy.maximum_attempts == 2
    outcomes = [a for a in events_of(events, seq) if not isinstance(a, ActivityScheduled)]
    assert [(type(a).__name__, a.attempt) for a in outcomes] == [
        ("ActivityAttemptFailed", 1),
        ("ActivityFailed", 2),
    ]
    assert [c.attempt for c in script.calls if c.name == "two" and c.kind == "undo"] == [1, 2]


async def test_per_compensation_start_to_close_timeout_is_honoured(make_env: Any) -> None:
    script.fail_forever.add("step:three")
    script.gate("undo:two")  # never opened: only the timeout ends each attempt
    plan = Plan(undo_max_attempts=2, undo_timeout=0.3)
    async with make_env(time_skipping=True) as env:
        handle = await env.client.start_workflow(Steps.run, plan, id="undo-timeout")
        error = await outcome(handle)
        events = await handle.history()

    assert error.status == "COMPENSATION_FAILED"
    assert isinstance(error.cause, CompensationError)
    (cause,) = error.cause.causes
    assert isinstance(cause, ActivityError) and cause.attempt == 2
    assert isinstance(cause.cause, TimeoutError) and cause.cause.kind is TimeoutKind.START_TO_CLOSE
    seq = compensation_seq(events, "two")
    (command,) = [a for a in events_of(events, seq) if isinstance(a, ActivityScheduled)]
    assert command.start_to_close_timeout == pytest.approx(0.3)
    assert [c.outcome for c in script.calls if c.name == "two" and c.kind == "undo"] == [
        "CancelledError",
        "CancelledError",
    ]


async def test_workflow_function_as_compensation(make_env: Any) -> None:
    script.fail_forever.add("step:two")
    async with make_env(time_skipping=True) as env:
        handle = await env.client.start_workflow(LocalCompensation.run, False, id="local")
        error = await outcome(handle)
        desc = await handle.describe()

    assert error.status == "COMPENSATED"
    assert script.names("undo") == ["one-hold"]
    # What the function ran counts as compensation: in describe(), history and on the worker.
    (undo_call,) = [c for c in script.calls if c.kind == "undo"]
    assert undo_call.compensation
    assert [(c.activity, c.args, c.status) for c in desc.compensations] == [
        ("undo", ["one-hold"], "COMPLETED")
    ]


async def test_workflow_function_compensation_that_raises_fails_the_saga(
    env: WorkflowEnvironment,
) -> None:
    script.fail_forever.add("step:two")
    handle = await env.client.start_workflow(LocalCompensation.run, True, id="local-refuses")

    error = await outcome(handle)

    assert error.status == "COMPENSATION_FAILED"
    assert isinstance(error.cause, CompensationError)
    (cause,) = error.cause.causes
    assert isinstance(cause, ApplicationError) and cause.type == "NeedsHuman"


async def test_compensation_registered_before_the_step_runs_even_when_the_step_fails(
    env: WorkflowEnvironment,
) -> None:
    script.fail_forever.add("step:charge")
    handle = await env.client.start_workflow(ChargeFirst.run, id="charge-first")

    error = await outcome(handle)

    assert error.status == "COMPENSATED"
    assert script.names("step") == ["charge"]
    assert script.names("undo") == ["charge"]


def test_add_compensation_refuses_options_it_would_ignore() -> None:
    saga = Saga()
    with pytest.raises(TypeError, match="start_to_close"):
        saga.add_compensation(undo, "one", start_to_close=5)  # a typo, not silently dropped
    with pytest.raises(TypeError, match="not an activity"):
        saga.add_compensation(release_hold, "one", retry_policy=RetryPolicy(maximum_attempts=1))
    saga.add_compensation(undo, "one", queue="elsewhere", heartbeat_timeout=5)


# --- visibility -------------------------------------------------------------------------------
async def test_describe_and_history_show_each_compensation(make_env: Any) -> None:
    script.fail_forever.add("step:three")
    script.fail_times["undo:one"] = 1
    async with make_env(time_skipping=True) as env:
        handle = await env.client.start_workflow(Steps.run, Plan(), id="visible")
        await outcome(handle)
        desc = await handle.describe()
        events = await handle.history()

    assert [(s.activity, s.args, s.compensation) for s in desc.steps] == [
        ("step", ["one"], False),
        ("step", ["two"], False),
        ("step", ["three"], False),
        ("undo", ["two"], True),
        ("undo", ["one"], True),
    ]
    assert [(c.activity, c.args, c.status, c.attempts) for c in desc.compensations] == [
        ("undo", ["two"], "COMPLETED", 1),
        ("undo", ["one"], "COMPLETED", 2),
    ]
    for comp in desc.compensations:
        assert comp.closed_at is not None and desc.start_time <= comp.scheduled_at <= comp.closed_at
        assert comp.result == f"{comp.args[0]}-undone"
    failed_step = desc.steps[2]
    assert failed_step.status == "FAILED" and failed_step.error is not None
    assert [a.compensation for a in scheduled(events)] == [False, False, False, True, True]
    # The workers were told too: activity.info().compensation.
    assert [c.compensation for c in script.calls] == [False, False, False, True, True, True]
    retried = [e.attributes for e in events if isinstance(e.attributes, ActivityAttemptFailed)]
    assert [(a.seq, a.attempt) for a in retried] == [(compensation_seq(events, "one"), 1)]
