"""The error tree of saga.

Every error saga raises derives from :class:`SagaError`::

    SagaError
    ├── ConfigurationError            bad URL, option or --app module
    ├── StoreError                    the database failed or is unreachable
    ├── LeaseLostError                another coordinator took over these shards
    ├── TransportError                the broker failed or is unreachable
    ├── PayloadError                  a value could not be turned into JSON or back
    ├── InvalidArgumentsError         arguments do not fit a workflow or activity signature
    ├── UnknownWorkflowTypeError      no coordinator knows this workflow type
    ├── WorkflowNotFoundError         no workflow with this id
    ├── WorkflowAlreadyStartedError   a workflow with this id is still running
    ├── NondeterminismError           workflow code no longer matches its history
    ├── WorkflowFailureError          handle.result() of a workflow that did not complete
    ├── QueryFailedError              a query was refused or its handler raised
    ├── QueryTimeoutError             no coordinator answered a query in time (also a TimeoutError)
    └── FailureError                  failures that travel: raised inside workflows and activities
        ├── ApplicationError          raised by user code; type, non_retryable, details
        ├── ActivityError             an activity failed for good; .cause, .attempt
        ├── ChildWorkflowError        a child workflow did not complete; .status, .cause
        ├── TimeoutError              a step ran out of time; .kind
        ├── CancelledError            the workflow or step was cancelled
        ├── TerminatedError           the workflow was terminated by an operator
        └── CompensationError         compensations failed; .causes holds every one

``FailureError`` subclasses survive the wire: a worker turns them into a
:class:`saga.failure.FailureInfo` and the workflow sees the same class again.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Sequence
from typing import Any


class SagaError(Exception):
    """Root of every error raised by saga."""


class ConfigurationError(SagaError):
    """A setting, URL or application module is unusable."""


class StoreError(SagaError):
    """The database failed or could not be reached."""


class LeaseLostError(SagaError):
    """A coordinator's shard lease moved to another owner; it must stop advancing them."""

    def __init__(self, shards: list[int]) -> None:
        super().__init__(f"lost shard(s) {shards}: another coordinator holds them now")
        self.shards = shards


class TransportError(SagaError):
    """The message broker failed or could not be reached."""


class PayloadError(SagaError):
    """A value could not be converted to JSON, or JSON to the expected type."""


class InvalidArgumentsError(SagaError, ValueError):
    """Arguments do not fit the signature of a workflow or activity."""

    def __init__(self, target: str, detail: str) -> None:
        super().__init__(f"bad arguments for {target}: {detail}")
        self.target = target
        self.detail = detail


class UnknownWorkflowTypeError(SagaError):
    """No registered workflow has this type name."""

    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        hint = f" (known: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown workflow type {name!r}{hint}")
        self.name = name
        self.known = list(known)


class WorkflowNotFoundError(SagaError):
    """No workflow with this id exists (or it is closed, for operations needing a live one)."""

    def __init__(self, workflow_id: str, detail: str = "") -> None:
        super().__init__(f"workflow {workflow_id!r} not found{': ' + detail if detail else ''}")
        self.workflow_id = workflow_id


class WorkflowAlreadyStartedError(SagaError):
    """A workflow with this id is still running."""

    def __init__(self, workflow_id: str, run_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} is already running (run {run_id})")
        self.workflow_id = workflow_id
        self.run_id = run_id


class NondeterminismError(SagaError):
    """Replaying workflow code produced a different command than its history records.

    The workflow is left running but stuck; it resumes when compatible code is deployed.
    """

    def __init__(self, workflow_id: str, event_id: int, detail: str) -> None:
        super().__init__(
            f"nondeterminism in workflow {workflow_id!r} at event {event_id}: {detail}"
        )
        self.workflow_id = workflow_id
        self.event_id = event_id
        self.detail = detail


class FailureError(SagaError):
    """A failure that crosses process boundaries and is seen again on the other side."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        if cause is not None:
            self.__cause__ = cause

    @property
    def cause(self) -> BaseException | None:
        """The failure that led to this one, if any."""
        return self.__cause__


class ApplicationError(FailureError):
    """An error raised by user code, with a type name retry policies can match.

    Args:
        message: What went wrong.
        type: Name matched against ``RetryPolicy.non_retryable_error_types``;
            defaults to the class name.
        non_retryable: Stop retrying whatever the policy says.
        details: JSON-able values for the caller.
    """

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.type = type or self.__class__.__name__
        self.non_retryable = non_retryable
        self.details = list(details)


class ActivityError(FailureError):
    """An activity failed for good: retries exhausted or not allowed."""

    def __init__(
        self, message: str, *, activity: str, seq: int, attempt: int, cause: BaseException | None
    ) -> None:
        super().__init__(message, cause=cause)
        self.activity = activity
        self.seq = seq
        self.attempt = attempt


class ChildWorkflowError(FailureError):
    """A child workflow ended without completing; it compensated itself first.

    ``status`` is how it ended (``FAILED``, ``COMPENSATED``, ``CANCELLED``…) and
    ``cause`` the failure it ended with.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str,
        run_id: str,
        workflow_type: str,
        status: str,
        cause: BaseException | None,
    ) -> None:
        super().__init__(message, cause=cause)
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.workflow_type = workflow_type
        self.status = status


class TimeoutKind(enum.StrEnum):
    """Which limit ran out."""

    START_TO_CLOSE = "START_TO_CLOSE"
    SCHEDULE_TO_CLOSE = "SCHEDULE_TO_CLOSE"
    HEARTBEAT = "HEARTBEAT"
    WORKFLOW_EXECUTION = "WORKFLOW_EXECUTION"


class TimeoutError(FailureError):  # noqa: A001 - the name users of Temporal expect
    """A step or workflow ran out of time."""

    def __init__(self, message: str, *, kind: TimeoutKind) -> None:
        super().__init__(message)
        self.kind = kind


class CancelledError(FailureError):
    """The workflow or step was cancelled."""


class TerminatedError(FailureError):
    """The workflow was terminated by an operator; no code of it ran afterwards."""


class CompensationError(FailureError):
    """One or more compensations failed for good. ``causes`` keeps every failure."""

    def __init__(self, message: str, *, causes: Sequence[BaseException]) -> None:
        super().__init__(message, cause=causes[0] if causes else None)
        self.causes = list(causes)


class QueryFailedError(SagaError):
    """A query could not be answered: the workflow cannot run here, or its handler raised."""

    def __init__(self, workflow_id: str, query: str, detail: str) -> None:
        super().__init__(f"query {query!r} of workflow {workflow_id!r} failed: {detail}")
        self.workflow_id = workflow_id
        self.query = query
        self.detail = detail


class QueryTimeoutError(builtins.TimeoutError, SagaError):
    """No coordinator answered a query within its deadline (is one running?)."""

    def __init__(self, workflow_id: str, query: str, timeout: float) -> None:
        super().__init__(
            f"query {query!r} of workflow {workflow_id!r}: no coordinator answered within "
            f"{timeout:g}s (is one running on this broker?)"
        )
        self.workflow_id = workflow_id
        self.query = query
        self.timeout = timeout


class WorkflowFailureError(SagaError):
    """Raised by ``handle.result()`` when the workflow did not complete."""

    def __init__(self, workflow_id: str, status: str, cause: BaseException | None) -> None:
        reason = f": {cause}" if cause is not None else ""
        super().__init__(f"workflow {workflow_id!r} ended {status}{reason}")
        self.workflow_id = workflow_id
        self.status = status
        if cause is not None:
            self.__cause__ = cause

    @property
    def cause(self) -> BaseException | None:
        """The failure the workflow ended with."""
        return self.__cause__
