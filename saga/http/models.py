"""Request and response bodies of the HTTP API: frozen pydantic models, one per shape.

Field names follow the Python objects (``WorkflowDescription``, ``StepInfo``,
``HistoryEvent``) so the API, ``saga describe --json`` and the client read alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from saga.failure import FailureInfo
from saga.history import WorkflowStatus
from saga.status import ClusterStatus

# Text that PostgreSQL and the JSON encoder both accept: no NUL, no lone surrogates.
TEXT_PATTERN = r"^[^\x00]*$"


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]


def text_field(*, min_length: int = 0, max_length: int = 1000, **kwargs: Any) -> Any:
    """A ``Field`` for a string the store will keep (documented limits, no NUL)."""
    return Field(min_length=min_length, max_length=max_length, pattern=TEXT_PATTERN, **kwargs)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- errors ----------------------------------------------------------------------------


class ErrorBody(_Model):
    """Every error answer of the API that is not FastAPI's own 422."""

    detail: str = Field(description="What went wrong, for a person.")
    code: str = Field(description="What went wrong, for a program, e.g. 'workflow_not_found'.")
    field: str | None = Field(None, description="The request field at fault, if one is.")


# -- workflows -------------------------------------------------------------------------


class WorkflowSummary(_Model):
    """One row of the workflow list."""

    id: str
    run_id: str
    type: str
    status: WorkflowStatus
    start_time: datetime
    close_time: datetime | None
    history_length: int
    stuck_reason: str | None = None
    error_message: str | None = Field(None, description="One line: type, message, root cause.")


class WorkflowList(_Model):
    """A page of workflows, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    workflows: list[WorkflowSummary]
    next_cursor: str | None


class Step(_Model):
    """A step or a compensation, with its attempts and timings."""

    seq: int
    activity: str
    queue: str
    args: list[Any]
    compensation: bool
    status: Literal["SCHEDULED", "RETRYING", "COMPLETED", "FAILED", "CANCELLED"]
    attempts: int
    scheduled_at: datetime
    closed_at: datetime | None
    next_attempt_at: datetime | None = Field(None, description="When a retrying step runs again.")
    result: Any = None
    error: FailureInfo | None = None


class PendingTimer(_Model):
    """A durable timer (``workflow.sleep``) that has not fired yet."""

    seq: int
    fire_at: datetime
    duration: float


class WorkflowDetail(_Model):
    """Everything ``describe`` knows, plus what is pending and where the trace is."""

    id: str
    run_id: str
    type: str
    status: WorkflowStatus
    start_time: datetime
    close_time: datetime | None
    execution_deadline: datetime | None
    input: list[Any]
    result: Any = None
    error: FailureInfo | None = None
    history_length: int
    stuck_reason: str | None = None
    warnings: list[str]
    steps: list[Step]
    compensations: list[Step]
    pending_steps: list[Step]
    pending_timers: list[PendingTimer]
    trace_url: str | None = Field(None, description="The saga's trace in Jaeger, if configured.")


class HistoryEventBody(_Model):
    """One event in its stable JSON form (docs/history-format.md)."""

    event_id: int
    type: str
    timestamp: datetime
    attributes: dict[str, Any]


class History(_Model):
    """A whole history, as ``saga history ID --json`` exports it (replayable)."""

    format_version: int
    workflow_id: str
    events: list[HistoryEventBody]


class StartWorkflow(_Model):
    """Start a workflow by type name."""

    type: Annotated[Text, text_field(min_length=1, max_length=200)]
    args: list[Any] = Field(default_factory=list, description="Positional arguments, as JSON.")
    id: Annotated[Text, text_field(min_length=1, max_length=500)] | None = Field(
        None, description="Workflow id; a new unique one if left out."
    )
    execution_timeout: float | None = Field(
        None, gt=0, le=10 * 365 * 86400, description="Seconds the whole workflow may take."
    )


class Started(_Model):
    """Where to find the workflow just started."""

    id: str
    run_id: str


class SignalWorkflow(_Model):
    """A signal: name and positional arguments."""

    name: Annotated[Text, text_field(min_length=1, max_length=200)]
    args: list[Any] = Field(default_factory=list)


class QueryWorkflow(_Model):
    """A query: name and positional arguments."""

    name: Annotated[Text, text_field(min_length=1, max_length=200)]
    args: list[Any] = Field(default_factory=list)
    timeout: float = Field(10.0, gt=0, le=60, description="Seconds to wait for a coordinator.")


class QueryResult(_Model):
    """What the query handler returned."""

    result: Any = None


class CancelWorkflow(_Model):
    """Ask the workflow to cancel; its compensations still run."""

    reason: Annotated[Text, text_field(max_length=1000)] = ""


class TerminateWorkflow(_Model):
    """End the workflow now; no more of its code runs. A person says why."""

    reason: Annotated[Text, text_field(min_length=1, max_length=1000)]


class Accepted(_Model):
    """The request is recorded; the coordinator acts on it shortly."""

    id: str
    action: Literal["signal", "cancel", "terminate"]
    accepted: bool = True


class WorkflowTypes(_Model):
    """Workflow types some coordinator registered."""

    types: list[str]


# -- operations ------------------------------------------------------------------------


class DeadLetterBody(_Model):
    """A message the broker parked in ``saga.dead-letter``."""

    queue: str
    reason: str
    body: str
    headers: dict[str, str]


class DeadLetters(_Model):
    """Dead letters, left in place; ``supported`` is false for transports without any."""

    supported: bool
    dead_letters: list[DeadLetterBody]
    note: str | None = None


class Redrive(_Model):
    """Move dead letters back to the queues they came from."""

    limit: int = Field(100, ge=1, le=10_000)
    queue: Annotated[Text, text_field(min_length=1, max_length=255)] | None = Field(
        None, description="Only those taken from this broker queue, e.g. 'saga.tasks.cars'."
    )


class Redriven(_Model):
    """How many dead letters went back."""

    supported: bool
    moved: int


class Counts(_Model):
    """Workflows by status (every status present, zero included)."""

    counts: dict[str, int]
    total: int


class OutboxState(_Model):
    """Tasks committed with their command and not finished yet."""

    unsent: int = Field(description="Not yet confirmed by the broker: the relay's backlog.")
    pending: int = Field(description="Every outbox row: tasks whose step is not over.")
    truncated: bool = Field(description="True when the numbers are lower bounds.")


class Cluster(_Model):
    """The system as one operator view."""

    counts: dict[str, int]
    total: int
    outbox: OutboxState
    workflow_types: list[str]
    broker: str = Field(description="'connected', 'in-process' or 'unavailable'.")
    coordinators: ClusterStatus = Field(
        description="Coordinators, shard owners and health (as `saga status` shows them)."
    )
    notes: list[str] = Field(default_factory=list)


class ConsoleConfig(_Model):
    """What the web console needs before its first API call (no token needed)."""

    auth_required: bool
    jaeger_url: str | None
    poll_seconds: float
