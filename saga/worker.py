"""The worker: runs activities from their queues inside the service that owns them.

Example:
    >>> async with Worker(broker_url="amqp://guest:guest@127.0.0.1:5672/",
    ...                   activities=[reserve_car, cancel_car]):
    ...     await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from saga import activity as activity_api
from saga.activity import ActivityContext, ActivityDefinition, ActivityInfo
from saga.config import Settings
from saga.errors import (
    ApplicationError,
    InvalidArgumentsError,
    PayloadError,
    TimeoutError,
    TimeoutKind,
)
from saga.failure import to_failure
from saga.messages import ResultMessage, TaskMessage
from saga.tracing import Telemetry
from saga.transports.base import Subscription, Transport, open_transport

log = logging.getLogger("saga.worker")


class Worker:
    """Consumes the queues of its activities, runs each attempt, reports the outcome.

    A task is acknowledged only after its result reached the broker, so a worker that
    dies mid-activity leaves the task to be delivered again (to this or another worker).

    Args:
        activities: Functions decorated with ``@activity.defn``.
        queues: Restrict to these queues (default: every queue of the activities).
        concurrency: Activities run at once at most (the prefetch bound).
        drain_timeout: On shutdown, how long in-flight activities may take to finish
            before they are cancelled and their tasks returned to the queue.
    """

    def __init__(
        self,
        *,
        activities: Sequence[Any],
        broker_url: str | None = None,
        transport: Transport | None = None,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        drain_timeout: float = 10.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.telemetry = telemetry or Telemetry()
        self.telemetry.observe_dead_letters(lambda: getattr(self.transport, "dead_lettered", 0))
        self.definitions: dict[str, ActivityDefinition] = {}
        for fn in activities:
            d = activity_api.definition_of(fn)
            self.definitions[d.name] = d
        all_queues = sorted({d.queue for d in self.definitions.values()})
        self.queues = list(queues) if queues else all_queues
        self.transport = transport or open_transport(
            Settings.resolve(broker_url=broker_url).broker_url
        )
        self._owns_transport = transport is None
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self.identity = f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._subscription: Subscription | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._draining = False
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Connect and start consuming."""
        await self.transport.connect()
        self._subscription = await self.transport.consume_tasks(
            self.queues, self._on_task, prefetch=self.concurrency
        )
        log.info("worker started", extra={"worker": self.identity, "queues": self.queues})

    async def run(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Drain: stop taking tasks, let running ones finish within ``drain_timeout``.

        Tasks delivered meanwhile are held unacknowledged, and go back to the queue
        (for another worker) with those still running when the time is up.
        """
        self._draining = True
        if self._running:
            log.info(
                "draining %d running activities (up to %gs)",
                len(self._running),
                self.drain_timeout,
                extra={"worker": self.identity},
            )
            _, late = await asyncio.wait(set(self._running), timeout=self.drain_timeout)
            if late:
                log.warning(
                    "cancelling %d activities at shutdown; they will be redelivered",
                    len(late),
                    extra={"worker": self.identity},
                )
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        if self._owns_transport:
            await self.transport.aclose()
        self._stopped.set()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _on_task(self, task: TaskMessage) -> None:
        if self._draining:
            # Not started, not acknowledged: cancelling the subscription at the end of the
            # drain hands it back to the broker. (Failing it would only have the broker
            # offer it to this worker again, and again, until then.)
            await asyncio.Future()
        current = asyncio.current_task()
        if current is not None:
            self._running.add(current)
        try:
            result = await self.execute(task)
            await self.transport.publish_result(result)
        finally:
            if current is not None:
                self._running.discard(current)

    async def execute(self, task: TaskMessage) -> ResultMessage:
        """Run one attempt and describe its outcome (never raises for activity errors).

        The attempt runs inside a ``RunActivity`` span whose parent came in the task's
        headers, so spans the activity makes itself join the saga's trace.
        """
        started = datetime.now(UTC)
        with self.telemetry.run_activity(
            task.headers,
            activity=task.activity,
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            seq=task.seq,
            attempt=task.attempt,
            queue=task.queue,
            compensation=task.compensation,
            schedule_to_start_ms=max(0.0, (started - task.scheduled_at).total_seconds() * 1000),
        ) as finish:
            result = await self._attempt(task, started)
            finish(result.failure)
        self.telemetry.step_latency.record(
            (datetime.now(UTC) - started).total_seconds() * 1000,
            {"saga.activity": task.activity, "saga.queue": task.queue},
        )
        return result

    async def _attempt(self, task: TaskMessage, started: datetime) -> ResultMessage:
        ctx: ActivityContext | None = None
        try:
            definition = self.definitions.get(task.activity)
            if definition is None:
                raise ApplicationError(
                    f"activity {task.activity!r} is not registered on worker {self.identity} "
                    f"(queue {task.queue!r}; it knows {', '.join(sorted(self.definitions))})",
                    type="ActivityNotRegistered",
                    non_retryable=True,
                )
            try:
                args = definition.signature.decode_args(task.args)
            except InvalidArgumentsError as exc:
                raise ApplicationError(
                    str(exc), type="InvalidArguments", non_retryable=True
                ) from exc
            ctx = ActivityContext(_info(task, started))
            value = await _run_with_timeout(definition, args, ctx, task.start_to_close_timeout)
            encoded = definition.signature.encode_result(value)
            # Check the result fits the declared type here, where it fails this step,
            # rather than in the workflow, where it could only leave the workflow stuck.
            definition.signature.decode_result(encoded)
        except asyncio.CancelledError:
            raise
        except PayloadError as exc:
            return self._failed(
                task,
                started,
                ApplicationError(str(exc), type="PayloadError", non_retryable=True),
                ctx,
            )
        except Exception as exc:
            log.info(
                "activity attempt failed: %s",
                exc,
                extra={
                    "workflow_id": task.workflow_id,
                    "activity": task.activity,
                    "attempt": task.attempt,
                },
            )
            return self._failed(task, started, exc, ctx)
        return ResultMessage(
            kind="completed",
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            seq=task.seq,
            attempt=task.attempt,
            result=encoded,
            started_at=started,
            finished_at=datetime.now(UTC),
            worker=self.identity,
            headers=task.headers,
            shard=task.shard,
        )

    def _failed(
        self, task: TaskMessage, started: datetime, exc: BaseException, ctx: ActivityContext | None
    ) -> ResultMessage:
        return ResultMessage(
            kind="failed",
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            seq=task.seq,
            attempt=task.attempt,
            failure=to_failure(exc),
            started_at=started,
            finished_at=datetime.now(UTC),
            worker=self.identity,
            heartbeat_details=ctx.info.heartbeat_details if ctx else [],
            headers=task.headers,
            shard=task.shard,
        )


def _info(task: TaskMessage, started: datetime) -> ActivityInfo:
    return ActivityInfo(
        workflow_id=task.workflow_id,
        run_id=task.run_id,
        workflow_type=task.workflow_type,
        activity=task.activity,
        seq=task.seq,
        attempt=task.attempt,
        queue=task.queue,
        idempotency_key=task.idempotency_key,
        scheduled_at=task.scheduled_at,
        started_at=started,
        compensation=task.compensation,
        heartbeat_details=list(task.heartbeat_details),
    )


async def _run_with_timeout(
    definition: ActivityDefinition, args: list[Any], ctx: ActivityContext, limit: float | None
) -> Any:
    async def call() -> Any:
        token = activity_api.use_context(ctx)
        try:
            if definition.is_async:
                return await definition.fn(*args)
            run = functools.partial(contextvars.copy_context().run, definition.fn, *args)
            return await asyncio.to_thread(run)
        finally:
            activity_api.reset_context(token)

    if limit is None:
        return await call()
    try:
        async with asyncio.timeout(limit):
            return await call()
    except asyncio.TimeoutError as exc:  # noqa: UP041 - the builtin is shadowed here
        raise TimeoutError(
            f"activity {definition.name!r} exceeded its start-to-close timeout of {limit}s",
            kind=TimeoutKind.START_TO_CLOSE,
        ) from exc
