"""Run one activity function as a worker would, without a worker.

``activity.info()`` returns a fake you shape (attempt, idempotency key, heartbeat
details of the previous attempt…), ``activity.heartbeat()`` is captured, and
:meth:`ActivityEnvironment.cancel` cancels the running activity, which sees
``asyncio.CancelledError`` exactly as it would when its workflow is cancelled or its
worker shuts down.

Example:
    >>> env = ActivityEnvironment(attempt=2, idempotency_key="trip-1/run-1/1")
    >>> reservation = await env.run(reserve_car, TripRequest(name="alice"))
    >>> env.heartbeats
    [['50%'], ['done']]
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from saga import activity as activity_api
from saga.activity import ActivityContext, ActivityInfo

__all__ = ["ActivityEnvironment"]


class ActivityEnvironment:
    """A fake activity context for one activity call at a time.

    Args:
        attempt: ``info().attempt`` (1 for the first attempt).
        idempotency_key: ``info().idempotency_key``; defaults to
            ``<workflow_id>/<run_id>/<seq>``, as the worker builds it.
        heartbeat_details: ``info().heartbeat_details``: what the previous attempt
            reported last, for an activity that resumes from it.
        workflow_id, run_id, workflow_type, seq, compensation: The rest of ``info()``.
        on_heartbeat: Called with each heartbeat's details (already JSON values).

    Attributes:
        heartbeats: Every heartbeat's details, in order, across calls of :meth:`run`.
    """

    def __init__(
        self,
        *,
        attempt: int = 1,
        idempotency_key: str | None = None,
        heartbeat_details: Sequence[Any] = (),
        workflow_id: str = "test-workflow",
        run_id: str = "test-run",
        workflow_type: str = "TestWorkflow",
        seq: int = 1,
        compensation: bool = False,
        on_heartbeat: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.attempt = attempt
        self.idempotency_key = idempotency_key or f"{workflow_id}/{run_id}/{seq}"
        self.heartbeat_details = list(heartbeat_details)
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.workflow_type = workflow_type
        self.seq = seq
        self.compensation = compensation
        self.on_heartbeat = on_heartbeat
        self.heartbeats: list[list[Any]] = []
        self._task: asyncio.Task[Any] | None = None
        self._cancel_requested = False

    def info_for(self, fn: Callable[..., Any]) -> ActivityInfo:
        """The ``activity.info()`` an activity ``fn`` sees."""
        if activity_api.is_activity(fn):
            definition = activity_api.definition_of(fn)
            name, queue = definition.name, definition.queue
        else:
            name, queue = getattr(fn, "__name__", "activity"), activity_api.DEFAULT_QUEUE
        now = datetime.now(UTC)
        return ActivityInfo(
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            workflow_type=self.workflow_type,
            activity=name,
            seq=self.seq,
            attempt=self.attempt,
            queue=queue,
            idempotency_key=self.idempotency_key,
            scheduled_at=now,
            started_at=now,
            compensation=self.compensation,
            heartbeat_details=list(self.heartbeat_details),
        )

    def _heartbeat(self, details: list[Any]) -> None:
        self.heartbeats.append(details)
        if self.on_heartbeat is not None:
            self.on_heartbeat(details)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args)`` inside the fake context and return what it returns.

        A plain (sync) function runs in a thread, as the worker runs it; a cancellation
        cannot interrupt a thread, so only async activities see it.

        Raises:
            asyncio.CancelledError: :meth:`cancel` was called and the activity let the
                cancellation propagate (as it should).
            Exception: Whatever the activity raised.
        """
        if self._task is not None and not self._task.done():
            raise RuntimeError("this ActivityEnvironment is already running an activity")
        target = fn
        ctx = ActivityContext(self.info_for(fn), on_heartbeat=self._heartbeat)

        async def call() -> Any:
            token = activity_api.use_context(ctx)
            try:
                if inspect.iscoroutinefunction(target):
                    return await target(*args)
                run = functools.partial(contextvars.copy_context().run, target, *args)
                return await asyncio.to_thread(run)
            finally:
                activity_api.reset_context(token)

        self._task = asyncio.create_task(call(), name=f"activity:{ctx.info.activity}")
        if self._cancel_requested:
            self._task.cancel()
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.done():  # our caller was cancelled: take the activity along
                self._task.cancel()
            raise
        finally:
            self._cancel_requested = False

    def cancel(self) -> None:
        """Cancel the running activity (or the next one to start): it sees CancelledError."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        else:
            self._cancel_requested = True
