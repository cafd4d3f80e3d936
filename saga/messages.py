"""Wire messages: the JSON envelopes that travel between client, coordinator and workers.

Each carries ``schema_version`` so a reader can refuse what it does not understand,
and ``headers`` for W3C trace context (``traceparent``, ``tracestate``, ``baggage``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from saga.failure import FailureInfo

SCHEMA_VERSION: Literal[1] = 1


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    headers: dict[str, str] = {}


class TaskMessage(_Message):
    """One attempt of one activity, sent to ``saga.tasks.<queue>``."""

    workflow_id: str
    run_id: str
    workflow_type: str
    seq: int
    attempt: int
    activity: str
    queue: str
    args: list[Any]
    scheduled_at: datetime
    start_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    compensation: bool = False
    heartbeat_details: list[Any] = []
    shard: int = 0
    """The workflow's shard: where the worker sends the result (``saga.results.<shard>``)."""

    @property
    def idempotency_key(self) -> str:
        """Stable across retries of the same step: ``<workflow id>/<run id>/<seq>``."""
        return f"{self.workflow_id}/{self.run_id}/{self.seq}"


class ResultMessage(_Message):
    """What a worker reports about one attempt, or a client's nudge to the coordinator.

    ``kind="wake"`` carries only ``workflow_id`` and ``wake_reason``: new input (a start,
    or a signal, cancel or terminate in the inbox) waits in the database for that workflow.
    """

    kind: Literal["completed", "failed", "wake"]
    workflow_id: str
    run_id: str = ""
    seq: int = 0
    attempt: int = 0
    result: Any = None
    failure: FailureInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str = ""
    heartbeat_details: list[Any] = []
    wake_reason: Literal["start", "inbox"] | None = None
    shard: int = 0
    """The workflow's shard; only the coordinator holding its lease consumes it."""


class WorkflowClosedNotice(_Message):
    """Broadcast when a workflow reaches a final status, so waiting clients wake at once."""

    workflow_id: str
    run_id: str
    status: str
    outcome: bool = False
    """``result`` and ``error`` are the run's, so a waiting client need not read them;
    False when they were too big to broadcast to every client."""
    result: Any = None
    error: FailureInfo | None = None


class QueryRequest(_Message):
    """A client's question to the coordinators about one workflow's current state.

    Any coordinator may answer: from its live instance, or by replaying the history.
    ``reply_to`` names where the answer goes (the asking client's private queue).
    """

    request_id: str
    workflow_id: str
    query: str
    args: list[Any] = []
    reply_to: str = ""


class QueryReply(_Message):
    """The answer to a :class:`QueryRequest`: a result, or why there is none.

    ``error_type`` is ``not_found`` (no such workflow), ``invalid_arguments`` (unknown
    query or bad arguments) or ``failed`` (the workflow cannot run here, or the handler
    raised); empty on success.
    """

    request_id: str
    ok: bool
    result: Any = None
    error_type: Literal["", "not_found", "invalid_arguments", "failed"] = ""
    error: str = ""
