"""Failures as data: exceptions turned into JSON on one side and rebuilt on the other."""

from __future__ import annotations

import traceback
from typing import Any

from pydantic import BaseModel, ConfigDict

from saga import errors
from saga.converter import to_json_value


class FailureInfo(BaseModel):
    """An exception as it is stored in history and sent over the wire."""

    model_config = ConfigDict(frozen=True)

    message: str
    type: str
    kind: str = "application"
    non_retryable: bool = False
    details: list[Any] = []
    stack_trace: str = ""
    activity: str | None = None
    seq: int | None = None
    attempt: int | None = None
    timeout_kind: str | None = None
    cause: FailureInfo | None = None
    causes: list[FailureInfo] = []

    def describe(self) -> str:
        """One line: type and message, with the root cause."""
        text = f"{self.type}: {self.message}"
        if self.cause is not None and self.cause.message not in self.message:
            text += f" (caused by {self.cause.describe()})"
        return text


def to_failure(exc: BaseException, *, with_stack: bool = True) -> FailureInfo:
    """Capture ``exc`` (and its causes) as data."""
    stack = "".join(traceback.format_exception(exc)) if with_stack else ""
    cause = exc.__cause__ if exc.__cause__ is not None else None
    cause_info = to_failure(cause, with_stack=False) if cause is not None else None
    common: dict[str, Any] = {
        "message": str(exc),
        "stack_trace": stack[-8000:],
        "cause": cause_info,
    }
    if isinstance(exc, errors.ApplicationError):
        return FailureInfo(
            type=exc.type,
            non_retryable=exc.non_retryable,
            details=[to_json_value(d) for d in exc.details],
            **common,
        )
    if isinstance(exc, errors.ActivityError):
        return FailureInfo(
            type="ActivityError",
            kind="activity",
            activity=exc.activity,
            seq=exc.seq,
            attempt=exc.attempt,
            **common,
        )
    if isinstance(exc, errors.ChildWorkflowError):
        child = {
            "workflow_id": exc.workflow_id,
            "run_id": exc.run_id,
            "workflow_type": exc.workflow_type,
            "status": exc.status,
        }
        return FailureInfo(
            type="ChildWorkflowError", kind="child_workflow", details=[child], **common
        )
    if isinstance(exc, errors.TimeoutError):
        return FailureInfo(
            type="TimeoutError", kind="timeout", timeout_kind=exc.kind.value, **common
        )
    if isinstance(exc, errors.CompensationError):
        return FailureInfo(
            type="CompensationError",
            kind="compensation",
            causes=[to_failure(c, with_stack=False) for c in exc.causes],
            **common,
        )
    if isinstance(exc, errors.CancelledError):
        return FailureInfo(type="CancelledError", kind="cancelled", **common)
    if isinstance(exc, errors.TerminatedError):
        return FailureInfo(type="TerminatedError", kind="terminated", **common)
    return FailureInfo(type=type(exc).__name__, **common)


def from_failure(info: FailureInfo) -> errors.FailureError:
    """Rebuild the exception a :class:`FailureInfo` describes."""
    cause = from_failure(info.cause) if info.cause is not None else None
    exc: errors.FailureError
    if info.kind == "activity":
        exc = errors.ActivityError(
            info.message,
            activity=info.activity or "?",
            seq=info.seq or 0,
            attempt=info.attempt or 0,
            cause=cause,
        )
        return exc
    if info.kind == "child_workflow":
        child = info.details[0] if info.details and isinstance(info.details[0], dict) else {}
        return errors.ChildWorkflowError(
            info.message,
            workflow_id=str(child.get("workflow_id", "?")),
            run_id=str(child.get("run_id", "")),
            workflow_type=str(child.get("workflow_type", "?")),
            status=str(child.get("status", "FAILED")),
            cause=cause,
        )
    if info.kind == "timeout":
        exc = errors.TimeoutError(
            info.message, kind=errors.TimeoutKind(info.timeout_kind or "START_TO_CLOSE")
        )
    elif info.kind == "compensation":
        exc = errors.CompensationError(info.message, causes=[from_failure(c) for c in info.causes])
        return exc
    elif info.kind == "cancelled":
        exc = errors.CancelledError(info.message)
    elif info.kind == "terminated":
        exc = errors.TerminatedError(info.message)
    else:
        exc = errors.ApplicationError(
            info.message, *info.details, type=info.type, non_retryable=info.non_retryable
        )
    if cause is not None:
        exc.__cause__ = cause
    return exc
