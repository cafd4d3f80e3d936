"""Retries and timeouts, as recorded in history, on SQLite and PostgreSQL.

Backoff is checked on the due times the coordinator records (``next_attempt_at`` of
each ``ActivityAttemptFailed``), not on the wall clock; ``time_skipping`` makes the
waits cost nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from saga import (
    ActivityError,
    ApplicationError,
    RetryPolicy,
    WorkflowFailureError,
    WorkflowStatus,
    activity,
    workflow,
)
from saga.history import ActivityAttemptFailed, ActivityFailed, ActivityScheduled
from saga.testing import WorkflowEnvironment
from tests.integration.engine_helpers import WAIT, eventually, of_type, wait_for_event

QUEUE = "retry-tests"

attempts: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)


@pytest.fixture(autouse=True)
def _fresh_attempts() -> Iterator[None]:
    attempts.clear()
    yield


def _record(name: str) -> None:
    info = activity.info()
    attempts[name].append(
        {"attempt": info.attempt, "key": info.idempotency_key, "hb": info.heartbeat_details}
    )


class BankDown(Exception):
    """Retryable by default; some policies say otherwise."""


@activity.defn(queue=QUEUE)
async def always_fails() -> None:
    _record("always_fails")
    raise BankDown("the bank is down")


@activity.defn(queue=QUEUE)
async def refuses_for_good() -> None:
    _record("refuses_for_good")
    raise ApplicationError("account closed", "acct-9", type="AccountClosed", non_retryable=True)


@activity.defn(queue=QUEUE)
async def hangs() -> None:
    _record("hangs")
    await asyncio.Event().wait()  # never set: hangs until cancelled


@activity.defn(queue=QUEUE)
async def fails_once_then_works() -> str:
    _record("fails_once_then_works")
    if activity.info().attempt == 1:
        activity.heartbeat({"done": 40})
        raise BankDown("first attempt fails")
    return "ok"


@workflow.defn
class Call:
    """Runs one activity with the options given; reports how it ended."""

    @workflow.run
    async def run(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        policy = options.pop("retry_policy", None)
        try:
            result = await workflow.execute_activity(
                name,
                queue=QUEUE,
                retry_policy=RetryPolicy.model_validate(policy) if policy else None,
                **options,
            )
        except ActivityError as err:
            cause = err.cause
            return {
                "error": str(err),
                "attempt": err.attempt,
                "activity": err.activity,
                "cause": type(cause).__name__,
                "cause_type": getattr(cause, "type", None),
                "timeout_kind": getattr(getattr(cause, "kind", None), "value", None),
            }
        return {"result": result}


@workflow.defn
class Uncaught:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(always_fails, retry_policy=RetryPolicy(maximum_attempts=5))


def environment(database_url: str, **options: Any) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=[Call, Uncaught],
        activities=[always_fails, refuses_for_good, hangs, fails_once_then_works],
        database_url=database_url,
        **options,
    )


def policy(**fields: Any) -> dict[str, Any]:
    return RetryPolicy(**fields).model_dump(mode="json")


# --- how many attempts ------------------------------------------------------------------------
async def test_maximum_attempts_five_means_exactly_five_runs(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        handle = await env.client.start_workflow(
            Call.run, "always_fails", {"retry_policy": policy(maximum_attempts=5)}, id="five"
        )
        outcome = await handle.result(timeout=WAIT)
        events = await handle.history()
    assert [a["attempt"] for a in attempts["always_fails"]] == [1, 2, 3, 4, 5]
    assert outcome["attempt"] == 5
    assert "after 5 attempt(s)" in outcome["error"]
    assert "the bank is down" in outcome["error"]
    assert (outcome["activity"], outcome["cause_type"]) == ("always_fails", "BankDown")
    # One step: the same idempotency key on every attempt.
    assert len({a["key"] for a in attempts["always_fails"]}) == 1
    assert [e.type for e in events] == [
        "WorkflowStarted",
        "ActivityScheduled",
        *["ActivityAttemptFailed"] * 4,
        "ActivityFailed",
        "WorkflowCompleted",
    ]
    final = events[-2].attributes
    assert isinstance(final, ActivityFailed) and final.attempt == 5


async def test_the_workflow_failure_says_how_many_attempts(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        handle = await env.client.start_workflow(Uncaught.run, id="uncaught")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        assert (await handle.describe()).status is WorkflowStatus.FAILED
    assert failed.value.status == "FAILED"
    assert "5 attempt(s)" in str(failed.value)
    cause = failed.value.cause
    assert isinstance(cause, ActivityError)
    assert (cause.activity, cause.attempt) == ("always_fails", 5)
    assert isinstance(cause.cause, ApplicationError) and cause.cause.type == "BankDown"
    assert len(attempts["always_fails"]) == 5


async def test_a_non_retryable_error_type_stops_after_one_attempt(database_url: str) -> None:
    async with environment(database_url, time_skipping=True) as env:
        options = {"retry_policy": policy(non_retryable_error_types=["BankDown"])}
        handle = await env.client.start_workflow(Call.run, "always_fails", options, id="typed")
        outcome = await handle.result(timeout=WAIT)
        types = [e.type for e in await handle.history()]
    assert len(attempts["always_fails"]) == 1
    assert outcome["attempt"] == 1 and outcome["cause_type"] == "BankDown"
    assert "ActivityAttemptFailed" not in types


async def test_a_non_retryable_application_error_stops_after_one_attempt(
    database_url: str,
) -> None:
    async with environment(database_url, time_skipping=True) as env:
        # The default policy would retry forever; the error itself says no.
        handle = await env.client.start_workflow(Call.run, "refuses_for_good", {}, id="final")
        outcome = await handle.result(timeout=WAIT)
        failed = of_type(await handle.history(), "ActivityFailed")[0].attributes
    assert len(attempts["refuses_for_good"]) == 1
    assert outcome["attempt"] == 1
    assert (outcome["cause"], outcome["cause_type"]) == ("ApplicationError", "AccountClosed")
    assert isinstance(failed, ActivityFailed)
    assert failed.failure.non_retryable and failed.failure.details == ["acct-9"]


# --- when the attempts happen -----------------------------------------------------------------
async def test_backoff_follows_the_policy_on_recorded_due_times(database_url: str) -> None:
    retry = RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=3.0,
        maximum_interval=timedelta(seconds=20),
        maximum_attempts=6,
    )
    async with environment(database_url, time_skipping=True) as env:
        began = time.monotonic()
        handle = await env.client.start_workflow(
            Call.run, "always_fails", {"retry_policy": retry.model_dump(mode="json")}, id="backoff"
        )
        await handle.result(timeout=WAIT)
        elapsed = time.monotonic() - began
        events = await handle.history()
    failed = [e for e in events if isinstance(e.attributes, ActivityAttemptFailed)]
    waits = [e.attributes.next_attempt_at - e.timestamp for e in failed]  # type: ignore[attr-defined]
    assert waits == [retry.backoff(n) for n in range(1, 6)]
    assert [w.total_seconds() for w in waits] == [2, 6, 18, 20, 20]
    assert [e.attributes.attempt for e in failed] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    # Each next attempt was recorded no earlier than the due time its predecessor set.
    later = [*failed[1:], of_type(events, "ActivityFailed")[0]]
    for before, after in zip(failed, later, strict=True):
        assert after.timestamp >= before.attributes.next_attempt_at  # type: ignore[attr-defined]
    assert elapsed < 15  # 66 s of backoff, skipped


async def test_a_retry_timer_survives_a_restart(database_url: str) -> None:
    options = {"retry_policy": policy(initial_interval=timedelta(hours=1))}
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(
            Call.run, "fails_once_then_works", options, id="retry-restart"
        )
        await wait_for_event(handle, "ActivityAttemptFailed")
    assert len(attempts["fails_once_then_works"]) == 1

    # A new coordinator finds the due time in the database; skipping makes the hour pass.
    async with environment(database_url, time_skipping=True) as env:
        handle = env.client.get_workflow_handle("retry-restart")
        assert await handle.result(timeout=WAIT) == {"result": "ok"}
    second = attempts["fails_once_then_works"][1]
    assert second["attempt"] == 2
    assert second["hb"] == [{"done": 40}]  # the last attempt's heartbeat reaches the next


# --- timeouts ---------------------------------------------------------------------------------
async def test_start_to_close_timeout_fails_the_attempt_and_is_retried(database_url: str) -> None:
    options = {
        "start_to_close_timeout": 0.3,
        "retry_policy": policy(maximum_attempts=3, initial_interval=timedelta(seconds=5)),
    }
    async with environment(database_url, time_skipping=True) as env:
        handle = await env.client.start_workflow(Call.run, "hangs", options, id="stc")
        outcome = await handle.result(timeout=WAIT)
        events = await handle.history()
    assert [a["attempt"] for a in attempts["hangs"]] == [1, 2, 3]
    assert outcome["attempt"] == 3
    assert (outcome["cause"], outcome["timeout_kind"]) == ("TimeoutError", "START_TO_CLOSE")
    for event in of_type(events, "ActivityAttemptFailed"):
        assert isinstance(event.attributes, ActivityAttemptFailed)
        assert event.attributes.failure.timeout_kind == "START_TO_CLOSE"


async def test_schedule_to_close_timeout_ends_the_retries(database_url: str) -> None:
    # Attempts at 0, 1, 3 and 7 s; the next would start at 15 s, past the 10 s limit.
    options = {"schedule_to_close_timeout": 10.0}
    async with environment(database_url, time_skipping=True) as env:
        handle = await env.client.start_workflow(Call.run, "always_fails", options, id="s2c")
        outcome = await handle.result(timeout=WAIT)
        events = await handle.history()
    assert len(attempts["always_fails"]) == 4
    assert outcome["attempt"] == 4
    scheduled = of_type(events, "ActivityScheduled")[0]
    final = of_type(events, "ActivityFailed")[0]
    assert isinstance(scheduled.attributes, ActivityScheduled)
    assert scheduled.attributes.schedule_to_close_timeout == 10.0
    assert final.timestamp - scheduled.timestamp < timedelta(seconds=10)


async def test_schedule_to_close_timeout_fails_a_step_that_never_answers(
    database_url: str,
) -> None:
    options = {"schedule_to_close_timeout": 0.5}
    async with environment(database_url, time_skipping=True) as env:
        handle = await env.client.start_workflow(Call.run, "hangs", options, id="s2c-hang")
        outcome = await handle.result(timeout=WAIT)
        await eventually(_one_attempt, what="the attempt to be recorded")
    assert len(attempts["hangs"]) == 1
    assert (outcome["cause"], outcome["timeout_kind"]) == ("TimeoutError", "SCHEDULE_TO_CLOSE")
    assert "schedule-to-close" in outcome["error"]


async def _one_attempt() -> bool:
    return len(attempts["hangs"]) == 1
