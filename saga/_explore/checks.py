"""The built-in invariants the explorer checks after every run.

* ``final-status``: the workflow reached a final status (not stuck, not still running);
* ``compensation``: when the saga did not complete, every forward step that succeeded
  and has a compensation was compensated exactly once, no compensation ran for a step
  that never succeeded (unless the workflow registers it before the call), and no
  compensation failed for good unless the point made it fail;
* ``no-rerun``: no attempt ran twice in one process (beyond an injected redelivery), no
  attempt ran again after a restart when history had already recorded its outcome, and
  no step ran more attempts than its retry policy allows;
* ``history``: the history is well formed (ids without gaps, one outcome per step, one
  closing event at the end) and replays on the workflow code without nondeterminism;
* ``invariant``: the user's own ``invariant(services_state, outcome)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga._explore.engine import ActivityCall, call_hook
from saga.errors import NondeterminismError, SagaError
from saga.history import (
    CLOSING_EVENTS,
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    HistoryEvent,
    WorkflowStarted,
    WorkflowStatus,
)
from saga.replay import replay_history

NOT_COMPLETED = (
    WorkflowStatus.FAILED,
    WorkflowStatus.COMPENSATED,
    WorkflowStatus.COMPENSATION_FAILED,
    WorkflowStatus.CANCELLED,
)


@dataclass(frozen=True)
class CheckResult:
    """One invariant after one run: ``ok`` and, when broken, what was seen."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Pairing:
    """Which compensation activities undo which forward activities.

    ``declared`` when the user passed ``compensations=``; otherwise inferred from the
    runs in which each forward step failed (a compensation that first runs when step
    k fails was registered after step k-1 succeeded, so it undoes step k-1).
    ``preregistered`` holds forward activities whose compensation runs even when they
    fail: registered before the call, it must be harmless if the step never happened.
    """

    undo: dict[str, set[str]] = field(default_factory=dict)
    preregistered: set[str] = field(default_factory=set)
    declared: bool = False

    def forwards_of(self, compensation: str) -> set[str]:
        return {a for a, comps in self.undo.items() if compensation in comps}


@dataclass
class Steps:
    """A history's steps by seq: activity, compensation flag, policy and outcome."""

    scheduled: dict[int, ActivityScheduled] = field(default_factory=dict)
    completed: set[int] = field(default_factory=set)
    outcome_at: dict[tuple[int, int], int] = field(default_factory=dict)  # (seq, attempt) -> id

    @classmethod
    def of(cls, events: Sequence[HistoryEvent]) -> Steps:
        steps = cls()
        for e in events:
            a = e.attributes
            if isinstance(a, ActivityScheduled):
                steps.scheduled[a.seq] = a
            elif isinstance(a, ActivityCompleted | ActivityFailed | ActivityAttemptFailed):
                steps.outcome_at.setdefault((a.seq, a.attempt), e.event_id)
                if isinstance(a, ActivityCompleted):
                    steps.completed.add(a.seq)
        return steps

    def forward(self, activity: str) -> list[int]:
        return [
            s for s, c in self.scheduled.items() if c.activity == activity and not c.compensation
        ]

    def compensations(self, activity: str) -> list[int]:
        return [s for s, c in self.scheduled.items() if c.activity == activity and c.compensation]


def check_final_status(status: WorkflowStatus, stuck: str | None, waited: float) -> CheckResult:
    if status.is_closed:
        return CheckResult("final-status", True, status.value)
    if stuck:
        return CheckResult("final-status", False, f"stuck {status.value}: {stuck}")
    return CheckResult("final-status", False, f"still {status.value} after {waited:g}s")


def check_history(
    workflows: Sequence[Any], workflow_id: str, events: Sequence[HistoryEvent], closed: bool
) -> CheckResult:
    problems: list[str] = []
    ids = [e.event_id for e in events]
    if ids != list(range(1, len(ids) + 1)):
        problems.append(f"event ids are not 1..{len(ids)} without gaps")
    if not events or not isinstance(events[0].attributes, WorkflowStarted):
        problems.append("the history does not begin with WorkflowStarted")
    closing = [e for e in events if isinstance(e.attributes, CLOSING_EVENTS)]
    if closed and (len(closing) != 1 or closing[0] is not events[-1]):
        problems.append(f"{len(closing)} closing event(s), expected one, last")
    outcomes: Counter[int] = Counter()
    scheduled: Counter[int] = Counter()
    for e in events:
        a = e.attributes
        if isinstance(a, ActivityScheduled):
            scheduled[a.seq] += 1
        elif isinstance(a, ActivityCompleted | ActivityFailed):
            outcomes[a.seq] += 1
            if not scheduled[a.seq]:
                problems.append(f"event {e.event_id}: an outcome of step {a.seq} never scheduled")
    problems += [f"step {s} scheduled {n} times" for s, n in scheduled.items() if n > 1]
    problems += [
        f"step {s} has {n} outcomes (event types ActivityCompleted/Failed)"
        for s, n in outcomes.items()
        if n > 1
    ]
    if events and isinstance(events[0].attributes, WorkflowStarted):
        try:
            replay_history(workflows, workflow_id, list(events))
        except (NondeterminismError, SagaError, ValueError) as exc:
            problems.append(f"does not replay: {exc}")
    if problems:
        return CheckResult("history", False, "; ".join(problems))
    return CheckResult("history", True, f"{len(events)} events, replays")


def check_compensations(
    status: WorkflowStatus,
    events: Sequence[HistoryEvent],
    pairing: Pairing,
    compensation_fault_injected: bool,
    error: str,
) -> CheckResult:
    if status not in NOT_COMPLETED:
        return CheckResult("compensation", True, f"n/a ({status.value})")
    steps = Steps.of(events)
    problems: list[str] = []
    if status is WorkflowStatus.COMPENSATION_FAILED and not compensation_fault_injected:
        problems.append(f"a compensation failed for good though none was made to: {error}")
    every_comp = {c for comps in pairing.undo.values() for c in comps}
    for comp in sorted(every_comp):
        forwards = sorted(pairing.forwards_of(comp))
        succeeded = [s for a in forwards for s in steps.forward(a) if s in steps.completed]
        unknown = [
            s
            for a in forwards
            if a in pairing.preregistered
            for s in steps.forward(a)
            if s not in steps.completed
        ]
        ran = steps.compensations(comp)
        done = [s for s in ran if s in steps.completed]
        names = "/".join(forwards)
        if len(ran) > len(succeeded) + len(unknown):
            what = f"{comp} ran {len(ran)} time(s) for {len(succeeded)} successful {names} step(s)"
            if not succeeded:
                what += f" ({names} never succeeded and its compensation is registered after it)"
            problems.append(what)
        if status is WorkflowStatus.COMPENSATION_FAILED:
            continue
        if len(ran) < len(succeeded):
            missing = ", ".join(f"{steps.scheduled[s].activity}#{s}" for s in succeeded)
            problems.append(
                f"{missing} succeeded but {comp} ran {len(ran)} of {len(succeeded)} time(s)"
            )
        if len(done) < len(ran):
            problems.append(f"{comp} ran {len(ran)} time(s) but completed {len(done)}")
    if problems:
        return CheckResult("compensation", False, "; ".join(problems))
    count = sum(1 for c in steps.scheduled.values() if c.compensation)
    return CheckResult("compensation", True, f"{count} compensation step(s), each once")


def check_reruns(
    calls: Sequence[ActivityCall],
    events: Sequence[HistoryEvent],
    durable_at_crash: Mapping[int, Sequence[HistoryEvent]],
    redelivered: set[tuple[int, int]],
) -> CheckResult:
    """``durable_at_crash[g]``: the events committed when generation ``g`` died."""
    steps = Steps.of(events)
    problems: list[str] = []
    per_process: Counter[tuple[int, int, int]] = Counter()
    for call in calls:
        label = f"{call.activity}#{call.seq} attempt {call.attempt}"
        command = steps.scheduled.get(call.seq)
        if command is None or command.activity != call.activity:
            problems.append(f"{label} ran, but history never scheduled that step")
            continue
        limit = command.retry_policy.maximum_attempts
        if limit and call.attempt > limit:
            problems.append(f"{label} ran, beyond maximum_attempts={limit}")
        per_process[(call.generation, call.seq, call.attempt)] += 1
        for generation in range(call.generation):
            recorded = Steps.of(durable_at_crash.get(generation, ())).outcome_at
            if (call.seq, call.attempt) in recorded:
                problems.append(
                    f"{label} ran again after restart {generation + 1} although event "
                    f"{recorded[(call.seq, call.attempt)]} had recorded its outcome"
                )
                break
    for (_, seq, attempt), n in per_process.items():
        allowed = 2 if (seq, attempt) in redelivered else 1
        if n > allowed:
            name = steps.scheduled[seq].activity
            problems.append(f"{name}#{seq} attempt {attempt} ran {n} times in one process")
    if problems:
        return CheckResult("no-rerun", False, "; ".join(dict.fromkeys(problems)))
    return CheckResult("no-rerun", True, f"{len(calls)} execution(s)")


async def check_user_invariant(
    invariant: Callable[[Any, Any], Any] | None, state: Any, outcome: Any
) -> CheckResult:
    if invariant is None:
        return CheckResult("invariant", True, "none given")
    try:
        verdict = await call_hook(invariant, state, outcome)
    except AssertionError as exc:
        return CheckResult("invariant", False, str(exc) or "assertion failed")
    except Exception as exc:  # the user's code: report whatever it raised as a violation
        return CheckResult("invariant", False, f"raised {type(exc).__name__}: {exc}")
    if verdict is False:
        return CheckResult("invariant", False, "returned False")
    return CheckResult("invariant", True, "holds")
