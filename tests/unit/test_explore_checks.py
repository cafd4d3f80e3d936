"""The explorer's notation and its built-in invariants, on hand-made histories."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from saga._explore.checks import (
    Pairing,
    check_compensations,
    check_final_status,
    check_history,
    check_reruns,
)
from saga._explore.engine import ActivityCall
from saga._explore.points import FailurePoint, Fault
from saga.failure import FailureInfo
from saga.history import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    EventAttributes,
    HistoryEvent,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
    WorkflowStatus,
)
from saga.retry import RetryPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OOPS = FailureInfo(message="oops", type="Oops")


def history(*attrs: EventAttributes) -> list[HistoryEvent]:
    return [HistoryEvent(event_id=i, timestamp=T0, attributes=a) for i, a in enumerate(attrs, 1)]


def started() -> WorkflowStarted:
    return WorkflowStarted(workflow_type="Trip", args=[], run_id="r")


def scheduled(seq: int, activity: str, *, compensation: bool = False, attempts: int = 0) -> Any:
    return ActivityScheduled(
        seq=seq,
        activity=activity,
        queue="q",
        args=[],
        compensation=compensation,
        retry_policy=RetryPolicy(maximum_attempts=attempts),
    )


PAIRING = Pairing(undo={"reserve_car": {"cancel_car"}, "book_hotel": {"cancel_hotel"}})


# --- notation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "baseline",
        "fail:book_flight#3",
        "fail-nonretryable:reserve_car#1",
        "timeout:book_hotel#2",
        "duplicate-result:book_hotel#2",
        "redeliver:cancel_car#5",
        "crash:after-event-4",
        "crash:before-event-1",
        "fail-nonretryable:book_flight#3+fail:cancel_car#5",
        "fail-nonretryable:book_flight#3+crash:before-event-10",
    ],
)
def test_point_ids_round_trip(text: str) -> None:
    assert FailurePoint.parse(text).id == text


@pytest.mark.parametrize(
    "text", ["", "explode:x#1", "fail:book_flight", "crash:after-4", "fail:a#b"]
)
def test_bad_point_ids_are_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="expected KIND:ACTIVITY#SEQ"):
        FailurePoint.parse(text)


def test_one_crash_per_run() -> None:
    with pytest.raises(ValueError, match="at most one crash"):
        FailurePoint.parse("crash:after-event-2+crash:after-event-4")


def test_a_point_knows_its_faults() -> None:
    point = FailurePoint.parse("fail-nonretryable:book_flight#3+crash:after-event-9")

    assert point.group == "crash"
    assert point.crash == Fault("crash-after", event=9)
    assert point.step_fault(3) == Fault("fail-nonretryable", "book_flight", 3)
    assert point.step_fault(4) is None
    assert "dies right after event 9" in point.describe(retry_cap=3)
    assert FailurePoint().describe(3).startswith("no fault")


# --- final status and history ----------------------------------------------------------------
def test_a_run_that_never_ends_or_is_stuck_breaks_final_status() -> None:
    assert check_final_status(WorkflowStatus.COMPLETED, None, 10).ok
    still = check_final_status(WorkflowStatus.RUNNING, None, 10)
    assert (still.ok, still.detail) == (False, "still RUNNING after 10s")
    stuck = check_final_status(WorkflowStatus.RUNNING, "nondeterminism at event 2", 10)
    assert stuck.detail == "stuck RUNNING: nondeterminism at event 2"


def test_a_malformed_history_is_reported() -> None:
    events = history(
        started(),
        scheduled(1, "reserve_car"),
        ActivityCompleted(seq=1, attempt=1, result="car"),
        ActivityCompleted(seq=1, attempt=1, result="car"),
        ActivityCompleted(seq=7, attempt=1, result="?"),
        WorkflowCompleted(result=None),
    )

    result = check_history([], "w", events, closed=True)

    assert not result.ok
    assert "step 1 has 2 outcomes" in result.detail
    assert "event 5: an outcome of step 7 never scheduled" in result.detail
    assert "does not replay" in result.detail  # no such workflow registered


# --- compensations ---------------------------------------------------------------------------
def compensated(*comps: tuple[int, str, bool]) -> list[HistoryEvent]:
    attrs: list[EventAttributes] = [
        started(),
        scheduled(1, "reserve_car"),
        ActivityCompleted(seq=1, attempt=1, result="car"),
        scheduled(2, "book_hotel"),
        ActivityCompleted(seq=2, attempt=1, result="hotel"),
        scheduled(3, "book_flight"),
        ActivityFailed(seq=3, attempt=1, failure=OOPS),
    ]
    for seq, name, done in comps:
        attrs.append(scheduled(seq, name, compensation=True))
        if done:
            attrs.append(ActivityCompleted(seq=seq, attempt=1))
    attrs.append(WorkflowFailed(failure=OOPS, status=WorkflowStatus.COMPENSATED))
    return history(*attrs)


def test_every_successful_step_compensated_once_holds() -> None:
    events = compensated((4, "cancel_hotel", True), (5, "cancel_car", True))

    result = check_compensations(WorkflowStatus.COMPENSATED, events, PAIRING, False, "")

    assert result.ok, result.detail


def test_a_step_left_uncompensated_or_compensated_twice_is_named() -> None:
    events = compensated((4, "cancel_car", True), (5, "cancel_car", True))

    result = check_compensations(WorkflowStatus.COMPENSATED, events, PAIRING, False, "")

    assert not result.ok
    assert "cancel_car ran 2 time(s) for 1 successful reserve_car step(s)" in result.detail
    assert "book_hotel#2 succeeded but cancel_hotel ran 0 of 1 time(s)" in result.detail


def test_a_compensation_for_a_step_that_never_succeeded_needs_preregistration() -> None:
    pairing = Pairing(undo={**PAIRING.undo, "book_flight": {"cancel_flight"}})
    events = compensated(
        (4, "cancel_flight", True), (5, "cancel_hotel", True), (6, "cancel_car", True)
    )

    refused = check_compensations(WorkflowStatus.COMPENSATED, events, pairing, False, "")
    pairing.preregistered.add("book_flight")
    allowed = check_compensations(WorkflowStatus.COMPENSATED, events, pairing, False, "")

    assert "cancel_flight ran 1 time(s) for 0 successful book_flight step(s)" in refused.detail
    assert "never succeeded" in refused.detail
    assert allowed.ok, allowed.detail


def test_compensation_failed_is_only_fine_when_injected() -> None:
    events = compensated((4, "cancel_hotel", True), (5, "cancel_car", False))
    status = WorkflowStatus.COMPENSATION_FAILED

    assert check_compensations(status, events, PAIRING, True, "boom").ok
    surprise = check_compensations(status, events, PAIRING, False, "boom")
    assert surprise.detail == "a compensation failed for good though none was made to: boom"


def test_compensation_is_not_checked_when_the_saga_completed() -> None:
    result = check_compensations(WorkflowStatus.COMPLETED, [], PAIRING, False, "")
    assert (result.ok, result.detail) == (True, "n/a (COMPLETED)")


# --- re-runs ---------------------------------------------------------------------------------
def call(seq: int, attempt: int, generation: int = 0, name: str = "reserve_car") -> ActivityCall:
    return ActivityCall(name, seq, attempt, False, generation, "completed")


RETRIED = history(
    started(),
    scheduled(1, "reserve_car", attempts=2),
    ActivityAttemptFailed(seq=1, attempt=1, failure=OOPS, next_attempt_at=T0),
    ActivityCompleted(seq=1, attempt=2, result="car"),
)


def test_attempts_within_the_policy_pass() -> None:
    assert check_reruns([call(1, 1), call(1, 2)], RETRIED, {}, set()).ok


def test_a_rerun_after_restart_of_a_recorded_attempt_is_named() -> None:
    durable = {0: RETRIED[:4]}  # the completion of attempt 2 was durable when gen 0 died

    result = check_reruns(
        [call(1, 1), call(1, 2), call(1, 2, generation=1)], RETRIED, durable, set()
    )

    assert not result.ok
    assert result.detail == (
        "reserve_car#1 attempt 2 ran again after restart 1 although event 4 had recorded its "
        "outcome"
    )


def test_a_rerun_of_an_attempt_whose_outcome_was_lost_is_fine() -> None:
    durable = {0: RETRIED[:3]}  # attempt 2 ran, but the crash lost its result

    assert check_reruns(
        [call(1, 1), call(1, 2), call(1, 2, generation=1)], RETRIED, durable, set()
    ).ok


def test_twice_in_one_process_is_only_fine_when_redelivered() -> None:
    calls = [call(1, 1), call(1, 2), call(1, 2)]

    assert check_reruns(calls, RETRIED, {}, {(1, 2)}).ok
    result = check_reruns(calls, RETRIED, {}, set())
    assert result.detail == "reserve_car#1 attempt 2 ran 2 times in one process"


def test_beyond_the_policy_or_never_scheduled_is_named() -> None:
    result = check_reruns([call(1, 3), call(9, 1, name="ghost")], RETRIED, {}, set())

    assert "reserve_car#1 attempt 3 ran, beyond maximum_attempts=2" in result.detail
    assert "ghost#9 attempt 1 ran, but history never scheduled that step" in result.detail
