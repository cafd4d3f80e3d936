"""Fault injection through the real engine: wrapped activities, a broker tap, a dying store.

Each run assembles what :class:`saga.testing.WorkflowEnvironment` does (a coordinator,
a worker, a SQLite file, the in-process broker, a skipping clock) and injects faults at
the three seams a production system has:

* **activities** are wrapped: the wrapper records every execution and raises the
  injected failure, or does the work and then outlives its start-to-close timeout;
* **the worker's transport** is tapped: a task is delivered twice, a result published
  twice, or a task's start-to-close timeout shortened so the worker's own timeout fires
  at once instead of after minutes;
* **the coordinator's store** dies: right after (or instead of) the commit that records
  a given event, every call on it hangs, as in a process that stopped; the explorer then
  drops the whole environment (broker, caches, running activities) and starts a new one
  on the same database file, which replays the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from saga import activity as activity_api
from saga._explore.points import FailurePoint, Fault
from saga.client import Client
from saga.clock import SkippingClock
from saga.coordinator import Coordinator
from saga.errors import ApplicationError, StoreError
from saga.history import HistoryEvent
from saga.messages import ResultMessage, TaskMessage
from saga.store.base import Store, WorkflowRecord, WriteBatch, open_store
from saga.transports.base import Subscription, TaskHandler, Transport
from saga.transports.memory import MemoryBroker, MemoryTransport
from saga.worker import Worker

INJECTED_TIMEOUT = 0.01
"""Seconds a timed-out attempt is given (its real timeout may be minutes)."""

INJECTED_ERROR_TYPE = "InjectedFailure"


@dataclass
class ActivityCall:
    """One execution of an activity attempt, as the worker ran it during a run.

    ``generation`` counts restarts: 0 before the first crash, 1 after it. ``outcome`` is
    ``completed``, ``failed``, ``timed out`` (the work was done, the attempt timed out)
    or ``cancelled`` (the process died under it). ``injected`` names the fault, if any.
    """

    activity: str
    seq: int
    attempt: int
    compensation: bool
    generation: int
    outcome: str = "running"
    injected: str | None = None


@dataclass
class RunContext:
    """Faults of one run and what happened in it, shared by its generations."""

    point: FailurePoint
    workflow_id: str
    retry_cap: int
    generation: int = 0
    calls: list[ActivityCall] = field(default_factory=list)
    background: set[asyncio.Future[Any]] = field(default_factory=set)
    redelivered: set[tuple[int, int]] = field(default_factory=set)

    def step_fault(self, seq: int, kinds: tuple[str, ...]) -> Fault | None:
        fault = self.point.step_fault(seq)
        return fault if fault is not None and fault.kind in kinds else None


# --- activities ------------------------------------------------------------------------------
def wrap_activity(original: Any, ctx: RunContext) -> Any:
    """An activity with the same name, queue and signature that records and injects."""
    d = activity_api.definition_of(original)

    async def call(args: tuple[Any, ...]) -> Any:
        if d.is_async:
            return await d.fn(*args)
        run = functools.partial(contextvars.copy_context().run, d.fn, *args)
        return await asyncio.to_thread(run)

    @functools.wraps(d.fn)
    async def injected(*args: Any) -> Any:
        info = activity_api.info()
        rec = ActivityCall(d.name, info.seq, info.attempt, info.compensation, ctx.generation)
        ctx.calls.append(rec)
        fault = ctx.step_fault(info.seq, ("fail", "fail-nonretryable", "timeout"))
        try:
            if fault is not None and fault.kind == "fail-nonretryable":
                rec.injected = str(fault)
                raise ApplicationError(
                    f"injected by the explorer ({fault})",
                    type=INJECTED_ERROR_TYPE,
                    non_retryable=True,
                )
            if fault is not None and fault.kind == "fail" and info.attempt <= ctx.retry_cap:
                rec.injected = str(fault)
                raise ApplicationError(
                    f"injected by the explorer ({fault}, attempt {info.attempt})",
                    type=INJECTED_ERROR_TYPE,
                )
            if fault is not None and fault.kind == "timeout" and info.attempt == 1:
                rec.injected = str(fault)
                # The work completes whatever happens to this attempt (shielded), as in a
                # service that did it but answered too late; then the attempt hangs until
                # the worker's start-to-close timeout (shortened by the tap) cancels it.
                work = asyncio.ensure_future(call(args))
                ctx.background.add(work)
                await asyncio.shield(work)
                rec.outcome = "timed out"
                await asyncio.Event().wait()
            result = await call(args)
        except asyncio.CancelledError:  # a timeout (the worker's), or the process going down
            if rec.outcome == "running":
                timed_out = fault is not None and fault.kind == "timeout" and info.attempt == 1
                rec.outcome = "timed out" if timed_out else "cancelled"
            raise
        except BaseException:
            rec.outcome = "failed"
            raise
        rec.outcome = "completed"
        return result

    return activity_api.defn(name=d.name, queue=d.queue)(injected)


# --- the worker's transport ------------------------------------------------------------------
class FaultTransport:
    """The worker's transport, tapped: redeliver tasks, duplicate results, cut timeouts."""

    def __init__(self, inner: Transport, ctx: RunContext) -> None:
        self.inner = inner
        self.ctx = ctx
        self.durable = inner.durable

    async def connect(self) -> None:
        await self.inner.connect()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def publish_task(self, task: TaskMessage) -> None:
        await self.inner.publish_task(task)

    async def publish_result(self, result: ResultMessage) -> None:
        await self.inner.publish_result(result)
        if self.ctx.step_fault(result.seq, ("duplicate-result",)) is not None:
            await self.inner.publish_result(result)

    async def publish_notice(self, notice: Any) -> None:
        await self.inner.publish_notice(notice)

    async def consume_tasks(
        self, queues: Sequence[str], handler: TaskHandler, *, prefetch: int
    ) -> Subscription:
        ctx = self.ctx

        async def tapped(task: TaskMessage) -> None:
            timeout = ctx.step_fault(task.seq, ("timeout",))
            if timeout is not None and task.attempt == 1 and task.start_to_close_timeout:
                task = task.model_copy(update={"start_to_close_timeout": INJECTED_TIMEOUT})
            await handler(task)
            key = (task.seq, task.attempt)
            if ctx.step_fault(task.seq, ("redeliver",)) and key not in ctx.redelivered:
                ctx.redelivered.add(key)  # as if the acknowledgement had been lost
                await handler(task)

        return await self.inner.consume_tasks(queues, tapped, prefetch=prefetch)

    async def consume_results(
        self, handler: Any, *, prefetch: int, shards: Sequence[int]
    ) -> Subscription:
        return await self.inner.consume_results(handler, prefetch=prefetch, shards=shards)

    async def subscribe_notices(self, handler: Any) -> Subscription:
        return await self.inner.subscribe_notices(handler)

    async def request_query(self, request: Any, *, timeout: float) -> Any:  # noqa: ASYNC109
        return await self.inner.request_query(request, timeout=timeout)

    async def serve_queries(self, handler: Any) -> Subscription:
        return await self.inner.serve_queries(handler)


# --- the coordinator's store -----------------------------------------------------------------
class CrashingStore:
    """The coordinator's store; dies at the commit that records ``crash.event``.

    Records every commit of the explored workflow (event ids per commit: the crash
    points of later runs) and the events durable when it died.
    """

    def __init__(self, inner: Store, workflow_id: str, crash: Fault | None) -> None:
        self._inner = inner
        self._workflow_id = workflow_id
        self._crash = crash
        self.commits: list[list[HistoryEvent]] = []
        self.crashed = asyncio.Event()
        self.dead = False
        self.closing = False

    @property
    def committed(self) -> list[HistoryEvent]:
        """Every event of the workflow this store committed."""
        return [e for commit in self.commits for e in commit]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not self.dead or not callable(attr):
            return attr
        return self._dead_call

    async def _dead_call(self, *args: Any, **kwargs: Any) -> Any:
        if self.closing:
            raise StoreError("the process crashed")  # only shutdown code still asks
        await asyncio.Future()  # a dead process never hears back

    async def _die(self) -> None:
        self.dead = True
        self.crashed.set()
        await self._dead_call()

    def _hits(self, kind: str, events: list[HistoryEvent]) -> bool:
        crash = self._crash
        if crash is None or crash.kind != kind or not events:
            return False
        if kind == "crash-before":
            return events[0].event_id <= crash.event <= events[-1].event_id
        return events[-1].event_id >= crash.event

    async def commit(self, batch: WriteBatch) -> list[str]:
        if self.dead:
            return cast(list[str], await self._dead_call())
        ours = [e for w in batch.writes if w.workflow_id == self._workflow_id for e in w.events]
        if self._hits("crash-before", ours):
            await self._die()
        conflicts = await self._inner.commit(batch)
        if ours and not conflicts:  # any conflict: nothing at all was written
            self.commits.append(ours)
            if self._hits("crash-after", ours):
                await self._die()
        return conflicts


# --- one process ---------------------------------------------------------------------------------
class Engine:
    """Coordinator, worker, client, SQLite file and in-process broker: one "process"."""

    def __init__(
        self,
        *,
        database_url: str,
        workflows: Sequence[Any],
        activities: Sequence[Any],
        ctx: RunContext,
        crash: Fault | None,
        migrate: bool = True,
    ) -> None:
        self.broker = MemoryBroker()
        self.store = open_store(database_url)
        self.dying = CrashingStore(self.store, ctx.workflow_id, crash)
        self.clock = SkippingClock(self._idle)
        self.coordinator = Coordinator(
            workflows=workflows,
            store=cast(Store, self.dying),
            transport=MemoryTransport(self.broker),
            clock=self.clock,
            migrate=migrate,
            sweep_interval=1.0,
            drain_timeout=0.0,  # a crash drains nothing; a finished run has nothing to drain
        )
        self.worker = Worker(
            activities=[wrap_activity(a, ctx) for a in activities],
            transport=FaultTransport(MemoryTransport(self.broker), ctx),
            drain_timeout=0.0,
        )
        self.client = Client(self.store, MemoryTransport(self.broker), workflows=workflows)
        self.ctx = ctx

    def _idle(self) -> bool:
        return self.broker.idle() and self.coordinator.idle()

    async def start(self) -> None:
        await self.coordinator.start()
        await self.worker.start()

    async def wait(self, deadline: float) -> WorkflowRecord | None:
        """Until the workflow closes (its record), the process crashes or time is up (None)."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            if self.dying.crashed.is_set():
                return None
            record = await self.store.get_workflow(self.ctx.workflow_id)
            if record is not None and (record.status.is_closed or record.stuck_reason):
                return record  # stuck: parked by the coordinator, nothing more will happen
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dying.crashed.wait(), 0.005)
        return None

    async def settle(self, limit: float = 2.0) -> None:
        """Let late work finish (a redelivered task, a timed-out attempt's work)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + limit
        quiet = 0
        while quiet < 3 and loop.time() < give_up:
            pending = [f for f in self.ctx.background if not f.done()]
            quiet = quiet + 1 if self._idle() and not pending else 0
            await asyncio.sleep(0.002)
        await asyncio.gather(*self.ctx.background, return_exceptions=True)

    async def stop(self) -> None:
        """Shut down (also after a crash: the dead store refuses what shutdown asks)."""
        self.dying.closing = True
        await self.worker.aclose()
        await self.coordinator.aclose()
        await self.client.aclose()
        await self.store.aclose()


async def call_hook(hook: Callable[..., Any] | None, *args: Any) -> Any:
    """Call a user hook that may be sync or async."""
    if hook is None:
        return None
    value = hook(*args)
    if isinstance(value, Awaitable):
        return await value
    return value
