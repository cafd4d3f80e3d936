"""History events: the append-only record that is the truth about every workflow.

Events come in three kinds, and replay treats each differently:

* **inputs** reach the workflow code (a start, a result, a fired timer, a signal,
  a cancel request); replay applies them one at a time, in order;
* **commands** are what the code decided (schedule a step, start a timer, finish);
  replay checks that the code decides the same again;
* **records** are the engine's own notes (a failed attempt that will be retried,
  a termination); the code never sees them.

The JSON form (``HistoryEvent.to_json`` / ``from_json``) is stable and documented in
``docs/history-format.md``; ``saga history ID --json`` writes it.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from saga.failure import FailureInfo
from saga.retry import RetryPolicy

HISTORY_FORMAT_VERSION = 1


class WorkflowStatus(enum.StrEnum):
    """Where a workflow stands. Every status but RUNNING is final."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    CANCELLED = "CANCELLED"
    TERMINATED = "TERMINATED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_closed(self) -> bool:
        """True for every final status."""
        return self is not WorkflowStatus.RUNNING


class EventAttributes(BaseModel):
    """Base of every event's attributes; the class name is the event type."""

    model_config = ConfigDict(frozen=True)
    kind: ClassVar[str] = "record"

    @classmethod
    def event_type(cls) -> str:
        """The type name stored with the event."""
        return cls.__name__


class WorkflowStarted(EventAttributes):
    """The workflow's first event: its type and input."""

    kind: ClassVar[str] = "input"
    workflow_type: str
    args: list[Any]
    run_id: str
    trace_context: dict[str, str] = {}
    execution_timeout: float | None = None


class ActivityCompleted(EventAttributes):
    """A step returned; ``result`` is its JSON return value."""

    kind: ClassVar[str] = "input"
    seq: int
    attempt: int
    result: Any = None


class ActivityFailed(EventAttributes):
    """A step failed for good (retries exhausted, not retryable, or timed out)."""

    kind: ClassVar[str] = "input"
    seq: int
    attempt: int
    failure: FailureInfo


class TimerFired(EventAttributes):
    """A durable timer reached its due time."""

    kind: ClassVar[str] = "input"
    seq: int


class WorkflowSignaled(EventAttributes):
    """A signal, recorded before the workflow sees it."""

    kind: ClassVar[str] = "input"
    name: str
    args: list[Any] = []


class WorkflowCancelRequested(EventAttributes):
    """Someone asked the workflow to cancel; the code sees ``asyncio.CancelledError``."""

    kind: ClassVar[str] = "input"
    reason: str = ""


class ActivityScheduled(EventAttributes):
    """The code asked for a step; the task goes out through the outbox."""

    kind: ClassVar[str] = "command"
    seq: int
    activity: str
    queue: str
    args: list[Any]
    start_to_close_timeout: float | None = None
    schedule_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    retry_policy: RetryPolicy = RetryPolicy()
    compensation: bool = False


class ActivityCancelRequested(EventAttributes):
    """The code stopped waiting for a step (cancellation); a late result is ignored."""

    kind: ClassVar[str] = "command"
    seq: int


class TimerStarted(EventAttributes):
    """A durable timer; it fires at ``fire_at`` unless cancelled."""

    kind: ClassVar[str] = "command"
    seq: int
    fire_at: datetime
    duration: float


class TimerCancelled(EventAttributes):
    """A timer the code no longer waits for."""

    kind: ClassVar[str] = "command"
    seq: int


class MarkerRecorded(EventAttributes):
    """``workflow.patched(id)`` took the new code path here."""

    kind: ClassVar[str] = "command"
    patch_id: str


class WorkflowCompleted(EventAttributes):
    """The workflow returned ``result``."""

    kind: ClassVar[str] = "command"
    result: Any = None


class WorkflowFailed(EventAttributes):
    """The workflow raised; ``status`` says whether compensations ran and how they went."""

    kind: ClassVar[str] = "command"
    failure: FailureInfo
    status: WorkflowStatus = WorkflowStatus.FAILED


class WorkflowCancelled(EventAttributes):
    """The workflow ended by cancellation (after running any compensations)."""

    kind: ClassVar[str] = "command"
    compensated: bool = False


class ActivityAttemptFailed(EventAttributes):
    """One attempt failed and a retry is due at ``next_attempt_at``."""

    seq: int
    attempt: int
    failure: FailureInfo
    next_attempt_at: datetime
    heartbeat_details: list[Any] = []


class WorkflowTerminated(EventAttributes):
    """An operator ended the workflow; none of its code ran afterwards."""

    reason: str = ""


class WorkflowTimedOut(EventAttributes):
    """The workflow's execution timeout ran out."""


EVENT_TYPES: dict[str, type[EventAttributes]] = {
    cls.__name__: cls
    for cls in (
        WorkflowStarted,
        ActivityCompleted,
        ActivityFailed,
        TimerFired,
        WorkflowSignaled,
        WorkflowCancelRequested,
        ActivityScheduled,
        ActivityCancelRequested,
        TimerStarted,
        TimerCancelled,
        MarkerRecorded,
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCancelled,
        ActivityAttemptFailed,
        WorkflowTerminated,
        WorkflowTimedOut,
    )
}

CLOSING_EVENTS: tuple[type[EventAttributes], ...] = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowTerminated,
    WorkflowTimedOut,
)


class HistoryEvent(BaseModel):
    """One event of a workflow's history."""

    model_config = ConfigDict(frozen=True)

    event_id: int
    timestamp: datetime
    attributes: EventAttributes

    @property
    def type(self) -> str:
        """The event type name, e.g. ``ActivityScheduled``."""
        return self.attributes.event_type()

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form: ``event_id``, ``type``, ``timestamp``, ``attributes``."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "timestamp": self.timestamp.isoformat(),
            "attributes": self.attributes.model_dump(mode="json"),
        }

    @classmethod
    def build(
        cls, event_id: int, type: str, timestamp: datetime, attributes: dict[str, Any]
    ) -> HistoryEvent:
        """Rebuild an event from its stored parts."""
        try:
            attr_cls = EVENT_TYPES[type]
        except KeyError:
            raise ValueError(f"unknown history event type {type!r}") from None
        return cls.model_construct(
            event_id=event_id,
            timestamp=timestamp,
            attributes=attr_cls.model_validate(attributes),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryEvent:
        """Parse the stable JSON form."""
        ts = data["timestamp"]
        when = ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)
        return cls.build(int(data["event_id"]), data["type"], when, data.get("attributes", {}))


def history_to_json(workflow_id: str, events: list[HistoryEvent]) -> dict[str, Any]:
    """A whole history as exported by ``saga history ID --json``."""
    return {
        "format_version": HISTORY_FORMAT_VERSION,
        "workflow_id": workflow_id,
        "events": [e.to_json() for e in events],
    }


def history_from_json(data: dict[str, Any] | list[Any]) -> tuple[str, list[HistoryEvent]]:
    """Parse an exported history; a bare list of events is accepted too."""
    if isinstance(data, list):
        return "replay", [HistoryEvent.from_json(e) for e in data]
    version = data.get("format_version", HISTORY_FORMAT_VERSION)
    if version != HISTORY_FORMAT_VERSION:
        raise ValueError(f"unsupported history format_version {version}")
    return str(data.get("workflow_id", "replay")), [
        HistoryEvent.from_json(e) for e in data["events"]
    ]
