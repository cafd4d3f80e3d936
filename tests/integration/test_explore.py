"""The failure explorer: the examples hold at every point; wrong versions are caught.

Each exploration runs the real engine embedded (SQLite files, in-process broker, time
skipping) once per failure point, so these tests also time it: the trip-booking example's
whole exploration takes a few seconds.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from examples.money_transfer import activities as bank_activities
from examples.money_transfer import checks as bank_checks
from examples.money_transfer.activities import Transfer, bank
from examples.money_transfer.workflows import MoneyTransfer
from examples.trip_booking import activities as trip
from examples.trip_booking import checks as trip_checks
from examples.trip_booking.activities import TripRequest, services
from examples.trip_booking.workflows import STEP_OPTIONS, TripBooking
from saga import Saga, WorkflowStatus, activity, workflow
from saga.testing import ExploreReport, Outcome, explore
from tests.integration import explore_variants as wrong

ROOT = Path(__file__).resolve().parents[2]
ALICE = TripRequest(name="alice")
TRANSFER = Transfer(source="alice", target="bob", amount=30, reference="t-1")
STEP_KINDS = ("fail", "fail-nonretryable", "timeout", "duplicate-result", "redeliver")
TOO_SLOW = 30.0  # seconds; a full exploration takes ~3 s on a laptop


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    bank.reset()
    yield
    services.reset()
    bank.reset()


def trip_options(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "activities": trip.ACTIVITIES,
        "reset": trip_checks.reset,
        "state": trip_checks.state,
        "invariant": trip_checks.invariant,
        "compensations": trip_checks.COMPENSATIONS,
    }
    return options | overrides


def bank_options(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "activities": bank_activities.ACTIVITIES,
        "reset": bank_checks.reset,
        "state": bank_checks.state,
        "invariant": bank_checks.invariant,
        "compensations": bank_checks.COMPENSATIONS,
    }
    return options | overrides


def broken(report: ExploreReport) -> dict[str, dict[str, str]]:
    """Broken points → {check name: detail}."""
    return {r.point: {c.name: c.detail for c in r.broken} for r in report.failures}


# --- the examples hold -----------------------------------------------------------------------
async def test_trip_booking_holds_at_every_failure_point() -> None:
    report = await explore(TripBooking, ALICE, **trip_options())

    report.assert_ok()
    points = report.points
    for step in ("reserve_car#1", "book_hotel#2", "book_flight#3"):
        assert [p for p in points if p.endswith(f":{step}")] == [
            f"{kind}:{step}" for kind in STEP_KINDS
        ]
    crashes = [p for p in points if p.startswith("crash:")]
    assert crashes == [
        "crash:before-event-1",
        "crash:after-event-2",
        "crash:before-event-3",
        "crash:after-event-4",
        "crash:before-event-5",
        "crash:after-event-6",
        "crash:before-event-7",
    ]
    trigger = "fail-nonretryable:book_flight#3"
    for comp in ("cancel_hotel#4", "cancel_car#5"):
        for kind in ("fail", "fail-nonretryable", "duplicate-result", "redeliver"):
            assert f"{trigger}+{kind}:{comp}" in points
        assert (
            f"{trigger}+timeout:{comp}",
            "no start_to_close_timeout: a hung attempt would wait forever",
        ) in report.skipped
    assert any(p.startswith(f"{trigger}+crash:") for p in points)

    assert report["baseline"].status == "COMPLETED"
    assert report["fail-nonretryable:reserve_car#1"].status == "FAILED"
    assert report["fail:book_hotel#2"].status == "COMPENSATED"  # 3 of 3 attempts failed
    assert report[f"{trigger}+fail-nonretryable:cancel_car#5"].status == "COMPENSATION_FAILED"
    assert report[f"{trigger}+fail:cancel_car#5"].status == "COMPENSATED"
    assert any("unlimited attempts" in n for n in report[f"{trigger}+fail:cancel_car#5"].notes)
    assert report.seconds < TOO_SLOW
    print(f"trip booking: {len(points)} points in {report.seconds:.2f}s")


async def test_money_transfer_holds_at_every_failure_point() -> None:
    report = await explore(MoneyTransfer, TRANSFER, **bank_options())

    report.assert_ok()
    assert {"fail:withdraw#1", "redeliver:deposit#2", "timeout:deposit#2"} <= set(report.points)
    assert report["fail-nonretryable:deposit#2"].status == "COMPENSATED"
    assert (
        report["fail-nonretryable:deposit#2+fail-nonretryable:refund#3"].status
        == "COMPENSATION_FAILED"
    )
    capped = report["fail:deposit#2"]
    assert capped.status == "COMPLETED"
    assert any("maximum_attempts=500" in n and "failed the first 3" in n for n in capped.notes)
    assert report.seconds < TOO_SLOW


async def test_without_declared_compensations_the_pairing_is_inferred() -> None:
    report = await explore(TripBooking, ALICE, **trip_options(compensations=None))

    report.assert_ok()
    assert len(report.points) == 34


# --- wrong versions are caught ---------------------------------------------------------------
async def test_a_missing_compensation_is_caught_where_a_later_step_fails() -> None:
    report = await explore(wrong.TripMissingCompensation, ALICE, **trip_options())

    found = broken(report)
    assert set(found) == {"fail:book_flight#3", "fail-nonretryable:book_flight#3"}
    checks = found["fail-nonretryable:book_flight#3"]
    assert checks["compensation"] == "book_hotel#2 succeeded but cancel_hotel ran 0 of 1 time(s)"
    assert checks["invariant"] == "hotel: ['hotel-1-alice'] still held after COMPENSATED"
    line = report["fail-nonretryable:book_flight#3"].reproduce
    assert line.startswith("await saga.testing.explore(TripMissingCompensation, ")
    assert line.endswith("only='fail-nonretryable:book_flight#3')")


async def test_without_declared_pairing_a_missing_compensation_is_caught_by_the_invariant() -> None:
    report = await explore(wrong.TripMissingCompensation, ALICE, **trip_options(compensations=None))

    found = broken(report)
    assert set(found) == {"fail:book_flight#3", "fail-nonretryable:book_flight#3"}
    assert set(found["fail-nonretryable:book_flight#3"]) == {"invariant"}


async def test_a_compensation_registered_for_the_wrong_step_is_caught() -> None:
    report = await explore(wrong.TripCompensatesTheWrongStep, ALICE, **trip_options())

    found = broken(report)
    assert set(found) == {"fail:book_flight#3", "fail-nonretryable:book_flight#3"}
    compensation = found["fail-nonretryable:book_flight#3"]["compensation"]
    assert "cancel_car ran 2 time(s) for 1 successful reserve_car step(s)" in compensation
    assert "book_hotel#2 succeeded but cancel_hotel ran 0 of 1 time(s)" in compensation
    assert "car cancelled more than once" in found["fail-nonretryable:book_flight#3"]["invariant"]


_bookings = itertools.count(1)


@activity.defn(name="book_hotel", queue="hotels")
async def book_hotel_every_time(request: TripRequest) -> str:
    """A hotel service that ignores the idempotency key: every call books a room."""
    return services.hotel.reserve(f"call-{next(_bookings)}", request.name, fail=False)


async def test_a_non_idempotent_service_is_caught_where_a_step_runs_twice() -> None:
    activities = [book_hotel_every_time if a is trip.book_hotel else a for a in trip.ACTIVITIES]

    report = await explore(TripBooking, ALICE, **trip_options(activities=activities))

    found = broken(report)
    assert set(found) == {"timeout:book_hotel#2", "redeliver:book_hotel#2", "crash:before-event-5"}
    for point, checks in found.items():
        assert set(checks) == {"invariant"}, point  # the engine did its part
        assert checks["invariant"].startswith("hotel booked 2 times"), point
    calls = [c for c in report["redeliver:book_hotel#2"].checks if c.name == "no-rerun"]
    assert calls[0].ok


async def test_a_transfer_without_refund_loses_money_when_the_deposit_fails() -> None:
    report = await explore(wrong.MoneyTransferWithoutRefund, TRANSFER, **bank_options())

    found = broken(report)
    assert set(found) == {"fail-nonretryable:deposit#2"}
    checks = found["fail-nonretryable:deposit#2"]
    assert checks["invariant"].startswith("balances {'alice': 70, 'bob': 0}")
    assert checks["compensation"] == "withdraw#1 succeeded but refund ran 0 of 1 time(s)"


_executions = itertools.count()


@workflow.defn
class TripReadsAGlobal:
    """Decides the order of its steps from a global: replay takes another path."""

    @workflow.run
    async def run(self, request: TripRequest) -> str:
        hotel_first = next(_executions) % 2 == 1  # as wrong as reading the clock
        async with Saga() as saga:
            first, undo_first = (
                (trip.book_hotel, trip.cancel_hotel)
                if hotel_first
                else (trip.reserve_car, trip.cancel_car)
            )
            done = await workflow.execute_activity(first, request, **STEP_OPTIONS)
            saga.add_compensation(undo_first, done)
        return done


async def test_nondeterministic_code_is_caught_where_a_crash_makes_it_replay() -> None:
    report = await explore(TripReadsAGlobal, ALICE, activities=trip.ACTIVITIES, kinds=["crash"])

    found = broken(report)
    # Nothing recorded yet: a new process starts afresh. Anything recorded: replay diverges.
    assert set(found) == {"crash:after-event-2", "crash:before-event-3"}
    for point in found:
        stuck = found[point]["final-status"]
        assert stuck.startswith(
            "stuck RUNNING: nondeterminism in workflow 'explore-TripReadsAGlobal' at event 2"
        ), point


@workflow.defn
class WaitsForever:
    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.wait_condition(lambda: False)
        return name


async def test_a_baseline_that_never_ends_is_the_finding() -> None:
    report = await explore(WaitsForever, "x", activities=[], run_timeout=0.5)

    assert report.points == ["baseline"]
    assert broken(report) == {"baseline": {"final-status": "still RUNNING after 0.5s"}}


# --- what the invariant sees -----------------------------------------------------------------
async def test_the_invariant_gets_the_services_state_and_the_outcome() -> None:
    seen: dict[str, tuple[Any, Outcome]] = {}

    async def reset() -> None:
        services.reset()

    async def state() -> dict[str, Any]:
        return trip_checks.state()

    def remember(services_state: Any, outcome: Outcome) -> None:
        seen[outcome.point] = (services_state, outcome)

    report = await explore(
        TripBooking,
        ALICE,
        activities=trip.ACTIVITIES,
        reset=reset,
        state=state,
        invariant=remember,
        only=["crash:after-event-4", "redeliver:book_hotel#2", "timeout:book_flight#3"],
    )

    assert report.points == [
        "redeliver:book_hotel#2",
        "timeout:book_flight#3",
        "crash:after-event-4",
    ]
    crash_state, crashed = seen["crash:after-event-4"]
    assert crashed.status is WorkflowStatus.COMPLETED and crashed.completed
    assert crashed.crashes == 1
    assert {c.generation for c in crashed.calls} == {0, 1}
    assert crashed.history[0].type == "WorkflowStarted"
    assert crash_state["hotel"]["active"] == ["hotel-1-alice"]
    _, redelivered = seen["redeliver:book_hotel#2"]
    hotel = [(c.seq, c.attempt, c.outcome) for c in redelivered.calls if c.activity == "book_hotel"]
    assert hotel == [(2, 1, "completed"), (2, 1, "completed")]
    _, timed_out = seen["timeout:book_flight#3"]
    flight = [
        (c.attempt, c.outcome, c.injected) for c in timed_out.calls if c.activity == "book_flight"
    ]
    assert flight == [(1, "timed out", "timeout:book_flight#3"), (2, "completed", None)]


async def test_an_invariant_may_return_false_or_raise() -> None:
    def picky(services_state: Any, outcome: Outcome) -> bool:
        if outcome.point == "baseline":
            raise KeyError("flight")
        return outcome.status is not WorkflowStatus.COMPENSATED

    report = await explore(
        TripBooking,
        ALICE,
        activities=trip.ACTIVITIES,
        invariant=picky,
        reset=services.reset,
        kinds=["fail-nonretryable"],
    )

    found = broken(report)
    assert found["baseline"] == {"invariant": "raised KeyError: 'flight'"}
    assert found["fail-nonretryable:book_flight#3"] == {"invariant": "returned False"}
    assert "fail-nonretryable:reserve_car#1" not in found  # FAILED, not COMPENSATED


async def test_only_and_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        await explore(TripBooking, ALICE, activities=trip.ACTIVITIES, kinds=["meteor"])
    with pytest.raises(ValueError, match="bad failure point 'nope'"):
        await explore(TripBooking, ALICE, activities=trip.ACTIVITIES, only="nope")
    with pytest.raises(ValueError, match=r"unknown failure point\(s\) crash:after-event-99"):
        await explore(
            TripBooking,
            ALICE,
            activities=trip.ACTIVITIES,
            reset=services.reset,
            only="crash:after-event-99",
        )


async def test_the_report_prints_a_table_and_serialises_to_json() -> None:
    report = await explore(
        wrong.TripMissingCompensation, ALICE, **trip_options(kinds=["fail-nonretryable"])
    )

    console = Console(record=True, width=120)
    report.print(console)
    text = console.export_text()
    assert "fail-nonretryable:book_flight#3" in text
    assert "✗ compensation, invariant" in text
    assert "reproduce: await saga.testing.explore(TripMissingCompensation" in text
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is False
    point = next(p for p in data["points"] if p["point"] == "fail-nonretryable:book_flight#3")
    assert point["status"] == "COMPENSATED"
    assert point["checks"]["compensation"]["ok"] is False
    assert point["checks"]["history"] == {"ok": True, "detail": "10 events, replays"}
    with pytest.raises(AssertionError, match="fail-nonretryable:book_flight#3"):
        report.assert_ok()


# --- saga explore ----------------------------------------------------------------------------
def _saga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "saga", "explore", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_saga_explore_passes_on_the_example() -> None:
    done = _saga(
        "--app",
        "examples.trip_booking.workflows",
        "TripBooking",
        "--input",
        '{"name": "alice"}',
        "--checks",
        "examples.trip_booking.checks",
        "--kind",
        "crash",
    )

    assert done.returncode == 0, done.stderr
    assert "crash:after-event-2" in done.stdout
    assert "0 broke an invariant" in done.stdout


@pytest.mark.slow
def test_saga_explore_names_the_broken_point_and_how_to_reproduce_it() -> None:
    args = [
        "--app",
        "tests.integration.explore_variants",
        "TripMissingCompensation",
        "--input",
        '{"name": "alice"}',
        "--checks",
        "examples.trip_booking.checks",
    ]

    done = _saga(*args, "--kind", "fail-nonretryable", "--json")

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "1 broke an invariant: fail-nonretryable:book_flight#3" in lines[0]
    data = json.loads(done.stdout)
    point = next(p for p in data["points"] if not p["ok"])
    assert point["point"] == "fail-nonretryable:book_flight#3"
    assert point["reproduce"] == (
        "saga explore --app tests.integration.explore_variants TripMissingCompensation "
        '--input \'{"name": "alice"}\' --checks examples.trip_booking.checks '
        "--only 'fail-nonretryable:book_flight#3'"
    )

    again = _saga(*args, "--only", "fail-nonretryable:book_flight#3")
    assert again.returncode == 1
    assert (
        "1 failure points" in again.stdout and "✗ fail-nonretryable:book_flight#3" in again.stdout
    )


@pytest.mark.slow
def test_saga_explore_refuses_an_unknown_point_with_exit_2() -> None:
    done = _saga(
        "--app",
        "examples.trip_booking.workflows",
        "TripBooking",
        "--input",
        '{"name": "alice"}',
        "--only",
        "crash:after-event-99",
    )

    assert done.returncode == 2
    assert done.stderr.startswith("saga: error: unknown failure point(s) crash:after-event-99")
