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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

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
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"
    """A run that ended by starting the next one (``workflow.continue_as_new``); the
    workflow id goes on under a new run id, so only old runs' histories end this way."""

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


class ParentInfo(BaseModel):
    """Which workflow started this one as a child, and which of its steps waits for it."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    run_id: str
    seq: int


class WorkflowStarted(EventAttributes):
    """The workflow's first event: its type and input (and its parent, for a child)."""

    kind: ClassVar[str] = "input"
    workflow_type: str
    args: list[Any]
    run_id: str
    trace_context: dict[str, str] = {}
    execution_timeout: float | None = None
    parent: ParentInfo | None = None

    @model_serializer(mode="wrap")
    def _without_unset_parent(self, handler: SerializerFunctionWrapHandler) -> Any:
        # ``parent`` came after format version 1: left out when unset, so the JSON of a
        # workflow that is nobody's child is byte for byte what it always was.
        data = handler(self)
        if isinstance(data, dict) and data.get("parent") is None:
            data.pop("parent", None)
        return data


class ActivityCompleted(EventAttributes):
    """A step returned; ``result`` is its JSON return value."""

    kind: ClassVar[str] = "input"
    seq: int
    attempt: int
    result: Any = None
    started_at: datetime | None = None
    worker: str = ""


class ActivityFailed(EventAttributes):
    """A step failed for good (retries exhausted, not retryable, or timed out)."""

    kind: ClassVar[str] = "input"
    seq: int
    attempt: int
    failure: FailureInfo
    started_at: datetime | None = None
    worker: str = ""


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


class ChildWorkflowStarted(EventAttributes):
    """The child asked for by ``ChildWorkflowInitiated(seq)`` exists and runs."""

    kind: ClassVar[str] = "input"
    seq: int
    workflow_id: str
    run_id: str


class ChildWorkflowStartFailed(EventAttributes):
    """The child could not start: another workflow with its id is running."""

    kind: ClassVar[str] = "input"
    seq: int
    workflow_id: str
    running_run_id: str
    """The run that holds the id."""


class ChildWorkflowCompleted(EventAttributes):
    """The child returned ``result`` (``run_id``: its last run, after any continue-as-new)."""

    kind: ClassVar[str] = "input"
    seq: int
    workflow_id: str
    run_id: str
    result: Any = None


class ChildWorkflowFailed(EventAttributes):
    """The child ended otherwise (``status``), after running its own compensations."""

    kind: ClassVar[str] = "input"
    seq: int
    workflow_id: str
    run_id: str
    status: WorkflowStatus
    failure: FailureInfo


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


class ChildWorkflowInitiated(EventAttributes):
    """The code started a child workflow; the coordinator creates it after the commit."""

    kind: ClassVar[str] = "command"
    seq: int
    workflow_id: str
    workflow_type: str
    run_id: str
    args: list[Any]
    execution_timeout: float | None = None


class ChildWorkflowCancelRequested(EventAttributes):
    """The code cancelled a child (or was cancelled while awaiting it)."""

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


class WorkflowContinuedAsNew(EventAttributes):
    """The run ended by starting a fresh one under the same id with ``args``."""

    kind: ClassVar[str] = "command"
    args: list[Any]
    new_run_id: str


class ActivityAttemptFailed(EventAttributes):
    """One attempt failed and a retry is due at ``next_attempt_at``."""

    seq: int
    attempt: int
    failure: FailureInfo
    next_attempt_at: datetime
    heartbeat_details: list[Any] = []
    started_at: datetime | None = None
    worker: str = ""


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
        ChildWorkflowStarted,
        ChildWorkflowStartFailed,
        ChildWorkflowCompleted,
        ChildWorkflowFailed,
        ActivityScheduled,
        ActivityCancelRequested,
        TimerStarted,
        TimerCancelled,
        MarkerRecorded,
        ChildWorkflowInitiated,
        ChildWorkflowCancelRequested,
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCancelled,
        WorkflowContinuedAsNew,
        ActivityAttemptFailed,
        WorkflowTerminated,
        WorkflowTimedOut,
    )
}

CLOSING_EVENTS: tuple[type[EventAttributes], ...] = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCancelled,
    WorkflowContinuedAsNew,
    WorkflowTerminated,
    WorkflowTimedOut,
)


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One event of a workflow's history.

    A plain dataclass, not a pydantic model: a cache miss rebuilds thousands of these, and
    the attributes are already validated models.
    """

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
            # Unset fields stay out, so a file exported before a field existed round-trips.
            "attributes": self.attributes.model_dump(mode="json", exclude_unset=True),
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
        return cls(event_id, timestamp, attr_cls.model_validate(attributes))

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
