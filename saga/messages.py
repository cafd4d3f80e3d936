"""Wire messages: the JSON envelopes that travel between client, coordinator and workers.

Each carries ``schema_version`` so a reader can refuse what it does not understand,
and ``headers`` for W3C trace context (``traceparent``, ``tracestate``, ``baggage``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from saga.failure import FailureInfo

SCHEMA_VERSION = 1


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


class WorkflowClosedNotice(_Message):
    """Broadcast when a workflow reaches a final status, so waiting clients wake at once."""

    workflow_id: str
    run_id: str
    status: str
