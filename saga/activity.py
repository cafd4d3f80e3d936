"""Authoring API for activities: the steps with side effects, run by workers.

Example:
    >>> from saga import activity
    >>> @activity.defn(queue="cars")
    ... async def reserve_car(name: str) -> str:
    ...     key = activity.info().idempotency_key   # dedupe retries in your service
    ...     return await cars.reserve(name, key)
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, overload

from saga.converter import Signature, to_json_value
from saga.errors import SagaError

__all__ = ["ActivityDefinition", "ActivityInfo", "defn", "heartbeat", "info"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
_ATTR = "__saga_activity__"


@dataclass(frozen=True)
class ActivityDefinition:
    """An activity as the worker and workflows know it."""

    name: str
    fn: Callable[..., Any]
    queue: str
    signature: Signature
    is_async: bool


@dataclass(frozen=True)
class ActivityInfo:
    """What a running activity knows about its step (``activity.info()``)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    activity: str
    seq: int
    attempt: int
    queue: str
    idempotency_key: str
    scheduled_at: datetime
    started_at: datetime
    compensation: bool = False
    heartbeat_details: list[Any] = field(default_factory=list)


class ActivityContext:
    """Per-attempt state behind ``activity.info()`` and ``activity.heartbeat()``."""

    def __init__(
        self, info: ActivityInfo, on_heartbeat: Callable[[list[Any]], None] | None = None
    ) -> None:
        self.info = info
        self.heartbeats: list[list[Any]] = []
        self._on_heartbeat = on_heartbeat

    def heartbeat(self, details: list[Any]) -> None:
        self.heartbeats.append(details)
        self.info = replace(self.info, heartbeat_details=details)
        if self._on_heartbeat is not None:
            self._on_heartbeat(details)


_context: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("saga_activity")


@overload
def defn(
    fn: Callable[P, R], *, name: str | None = None, queue: str | None = None
) -> Callable[P, R]: ...
@overload
def defn(
    fn: None = None, *, name: str | None = None, queue: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def defn(fn: Any = None, *, name: str | None = None, queue: str | None = None) -> Any:
    """Declare an activity; ``queue`` names the worker queue that runs it (default "default").

    The function is returned unchanged, so it can still be called directly in tests.
    """

    def wrap(f: Callable[P, R]) -> Callable[P, R]:
        definition = ActivityDefinition(
            name=name or f.__name__,
            fn=f,
            queue=queue or DEFAULT_QUEUE,
            signature=Signature(f),
            is_async=inspect.iscoroutinefunction(f),
        )
        setattr(f, _ATTR, definition)
        return f

    return wrap(fn) if fn is not None else wrap


def definition_of(fn: Any) -> ActivityDefinition:
    """The definition behind a decorated activity function."""
    definition = getattr(fn, _ATTR, None)
    if not isinstance(definition, ActivityDefinition):
        raise TypeError(f"{fn!r} is not an activity; decorate it with @activity.defn")
    return definition


def is_activity(fn: Any) -> bool:
    """True for a function decorated with ``@activity.defn``."""
    return isinstance(getattr(fn, _ATTR, None), ActivityDefinition)


def current_context() -> ActivityContext:
    """The context of the running activity attempt."""
    try:
        return _context.get()
    except LookupError:
        raise SagaError("activity.info() and heartbeat() only work inside an activity") from None


def use_context(ctx: ActivityContext) -> contextvars.Token[ActivityContext]:
    """Make ``ctx`` current (worker and ActivityEnvironment use this)."""
    return _context.set(ctx)


def reset_context(token: contextvars.Token[ActivityContext]) -> None:
    """Undo :func:`use_context`."""
    _context.reset(token)


def info() -> ActivityInfo:
    """Workflow id, attempt, idempotency key and more for the running attempt."""
    return current_context().info


def heartbeat(*details: Any) -> None:
    """Report progress; ``details`` reach the next attempt as ``info().heartbeat_details``."""
    current_context().heartbeat([to_json_value(d) for d in details])
