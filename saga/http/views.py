"""From the engine's records to the API's bodies: what is pending, and where the trace is."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import quote

from saga.client import PENDING_STATUSES, StepInfo, WorkflowDescription
from saga.history import (
    ActivityAttemptFailed,
    ActivityCompleted,
    ActivityFailed,
    HistoryEvent,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    history_to_json,
)
from saga.http.models import (
    History,
    PendingTimer,
    Step,
    WorkflowDetail,
    WorkflowSummary,
)
from saga.store.base import WorkflowRecord


def summary(desc: WorkflowDescription) -> WorkflowSummary:
    """A list row."""
    return WorkflowSummary(
        id=desc.id,
        run_id=desc.run_id,
        type=desc.type,
        status=desc.status,
        start_time=desc.start_time,
        close_time=desc.close_time,
        history_length=desc.history_length,
        stuck_reason=desc.stuck_reason,
        error_message=desc.error.describe() if desc.error is not None else None,
    )


def _next_attempts(events: Sequence[HistoryEvent]) -> dict[int, datetime]:
    """When each step that is waiting to retry runs again."""
    due: dict[int, datetime] = {}
    for e in events:
        a = e.attributes
        if isinstance(a, ActivityAttemptFailed):
            due[a.seq] = a.next_attempt_at
        elif isinstance(a, ActivityCompleted | ActivityFailed):
            due.pop(a.seq, None)
    return due


def pending_timers(events: Sequence[HistoryEvent]) -> list[PendingTimer]:
    """Timers started and neither fired nor cancelled, soonest first."""
    timers: dict[int, PendingTimer] = {}
    for e in events:
        a = e.attributes
        if isinstance(a, TimerStarted):
            timers[a.seq] = PendingTimer(seq=a.seq, fire_at=a.fire_at, duration=a.duration)
        elif isinstance(a, TimerFired | TimerCancelled):
            timers.pop(a.seq, None)
    return sorted(timers.values(), key=lambda t: (t.fire_at, t.seq))


def _step(info: StepInfo, next_attempt: dict[int, datetime]) -> Step:
    return Step(
        seq=info.seq,
        activity=info.activity,
        queue=info.queue,
        args=info.args,
        compensation=info.compensation,
        status=info.status,
        attempts=info.attempts,
        scheduled_at=info.scheduled_at,
        closed_at=info.closed_at,
        next_attempt_at=next_attempt.get(info.seq) if info.status == "RETRYING" else None,
        result=info.result,
        error=info.error,
    )


def trace_url(jaeger_url: str | None, service: str, workflow_id: str) -> str | None:
    """A Jaeger search for the saga's spans (they carry ``saga.workflow_id``)."""
    if not jaeger_url:
        return None
    tags = quote(json.dumps({"saga.workflow_id": workflow_id}, separators=(",", ":")))
    return f"{jaeger_url.rstrip('/')}/search?service={quote(service)}&tags={tags}"


def detail(
    record: WorkflowRecord,
    events: Sequence[HistoryEvent],
    *,
    jaeger_url: str | None,
    service: str,
) -> WorkflowDetail:
    """The saga page's data: describe() plus what is pending and the trace link."""
    desc = WorkflowDescription.from_record(record, events)
    due = _next_attempts(events)
    steps = [_step(s, due) for s in desc.steps]
    running = not desc.status.is_closed
    deadline = None
    if record.execution_timeout is not None:
        try:
            deadline = record.start_time + timedelta(seconds=record.execution_timeout)
        except OverflowError:
            deadline = None  # a timeout past year 9999 is no deadline at all
    return WorkflowDetail(
        id=desc.id,
        run_id=desc.run_id,
        type=desc.type,
        status=desc.status,
        start_time=desc.start_time,
        close_time=desc.close_time,
        execution_deadline=deadline if running else None,
        input=desc.input,
        result=desc.result,
        error=desc.error,
        history_length=desc.history_length,
        stuck_reason=desc.stuck_reason,
        warnings=desc.warnings,
        steps=steps,
        compensations=[s for s in steps if s.compensation],
        pending_steps=[s for s in steps if s.status in PENDING_STATUSES] if running else [],
        pending_timers=pending_timers(events) if running else [],
        trace_url=trace_url(jaeger_url, service, desc.id),
    )


def history(workflow_id: str, events: list[HistoryEvent]) -> History:
    """The replayable export."""
    return History.model_validate(history_to_json(workflow_id, events))
