"""The coordinator: turns results, timers and client requests into history, durably.

One loop takes inputs in batches, advances each workflow from its cached (or replayed)
state, and commits every workflow's changes in one transaction (group commit). Only
after the commit are tasks published (transactional outbox) and inputs acknowledged,
so nothing is sent that was not recorded and nothing recorded is left unsent.

Several coordinators share the work by shards (:mod:`saga._runtime.ownership`): each
consumes the result queues, timers and outbox rows of the shards it holds a lease on,
and every commit is fenced by those leases as well as by each workflow's version.

Example:
    >>> async with Coordinator(database_url="sqlite+aiosqlite:///saga.db",
    ...                        broker_url="amqp://guest:guest@127.0.0.1:5672/",
    ...                        workflows=[TripBooking]):
    ...     await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import logging
import os
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from saga._runtime.execution import Execution
from saga._runtime.links import LINK_TIMERS, Links
from saga._runtime.ownership import Ownership
from saga.clock import Clock, SystemClock
from saga.config import Settings
from saga.errors import (
    InvalidArgumentsError,
    LeaseLostError,
    NondeterminismError,
    QueryFailedError,
    SagaError,
    StoreError,
    TransportError,
    WorkflowNotFoundError,
)
from saga.messages import (
    QueryReply,
    QueryRequest,
    ResultMessage,
    TaskMessage,
    WorkflowClosedNotice,
)
from saga.store.base import Store, TimerRow, WorkflowWrite, WriteBatch, open_store
from saga.tracing import Telemetry
from saga.transports.base import Subscription, Transport, open_transport
from saga.workflow import WorkflowDefinition, definition_of

log = logging.getLogger("saga.coordinator")

# A close notice goes to every client; a bigger outcome is left for the waiter to read.
_NOTICE_OUTCOME_LIMIT = 8192

_TIMER_REFRESH = timedelta(seconds=30)
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)

InputKind = Literal["result", "timer", "wake"]
_PROCESS_TASK = "saga-coordinator-process"
_RELEASE_WAIT = 5.0  # seconds a hand-over waits for the batch in hand
_COLLECT_EVERY = 1000  # cache evictions between full garbage collections
_FAILING_FOR = 30.0  # seconds a failed batch keeps the coordinator reported degraded
_KILL_AFTER_COMMIT = "SAGA_TEST_KILL_AFTER_COMMIT"
"""Fault injection for tests: SIGKILL ourselves after the N-th commit that wrote tasks,
before publishing them (the outbox relay of whoever takes over must send them)."""


@dataclass
class _Input:
    workflow_id: str
    kind: InputKind
    reason: Literal["start", "inbox"] | None = None  # of a wake; None: look at both
    result: ResultMessage | None = None
    timer: TimerRow | None = None
    done: asyncio.Future[None] | None = None


def _closed_notice(ex: Execution, write: WorkflowWrite) -> WorkflowClosedNotice:
    """The broadcast of a close, with its outcome unless too big for every client."""
    assert write.status is not None
    notice = WorkflowClosedNotice(
        workflow_id=ex.workflow_id,
        run_id=ex.run_id,
        status=write.status.value,
        outcome=True,
        result=write.result,
        error=write.error,
    )
    if len(notice.model_dump_json()) > _NOTICE_OUTCOME_LIMIT:
        return notice.model_copy(update={"outcome": False, "result": None, "error": None})
    return notice


def _give_back(items: list[_Input], exc: BaseException) -> None:
    """Inputs of a shard we no longer own: results go back to the queue (nacked)."""
    for item in items:
        if item.done is not None and not item.done.done():
            item.done.set_exception(exc)


@dataclass(order=True)
class _HeapEntry:
    due: datetime
    order: int
    timer: TimerRow = field(compare=False)


def _timer_key(t: TimerRow) -> tuple[str, str, int, int]:
    return (t.workflow_id, t.kind.value, t.seq, t.attempt)


class Coordinator:
    """The daemon that owns workflow histories and advances them.

    Args:
        workflows: Workflow classes or functions this coordinator runs.
        database_url: Defaults to ``SAGA_DATABASE_URL``.
        broker_url: Defaults to ``SAGA_BROKER_URL``.
        store, transport, clock: Injected instead of URLs (embedded mode, tests).
        cache_size: Live workflow instances kept in memory; a miss replays history.
        batch_size: Inputs committed together at most.
        drain_timeout: On :meth:`aclose`, how long the batch in hand may take to commit
            and publish before it is abandoned (its inputs are delivered again).
        lease_ttl: Seconds a shard lease lasts unrenewed: the shards of a coordinator
            that died move to the others within about this time.
        shards: The shards this coordinator may own (default: any).
    """

    def __init__(
        self,
        *,
        workflows: Sequence[Any],
        database_url: str | None = None,
        broker_url: str | None = None,
        store: Store | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        cache_size: int = 10_000,
        batch_size: int = 128,
        sweep_interval: float = 5.0,
        migrate: bool | None = None,
        drain_timeout: float = 10.0,
        telemetry: Telemetry | None = None,
        lease_ttl: float = 10.0,
        shards: Iterable[int] | None = None,
    ) -> None:
        settings = Settings.resolve(database_url=database_url, broker_url=broker_url)
        self.definitions: dict[str, WorkflowDefinition] = {}
        for wf in workflows:
            d = definition_of(wf)
            self.definitions[d.name] = d
        self.store = store or open_store(settings.database_url)
        # A paused coordinator's unacknowledged results must go back to the queue about
        # when its leases run out, not a minute later: the broker's heartbeat decides.
        heartbeat = max(1, int(lease_ttl / 2))
        self.transport = transport or open_transport(settings.broker_url, heartbeat=heartbeat)
        self.clock: Clock = clock or SystemClock()
        self.telemetry = telemetry or Telemetry()
        self.telemetry.observe_outbox(lambda: self._backlog + len(self._publishing))
        self.telemetry.observe_dead_letters(lambda: getattr(self.transport, "dead_lettered", 0))
        self._backlog = 0
        self.identity = f"coordinator-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._owns_store = store is None
        self._owns_transport = transport is None
        self._migrate = migrate
        self._cache: OrderedDict[str, Execution] = OrderedDict()
        self._cache_size = cache_size
        self._evictions = 0
        self._batch_size = batch_size
        self._sweep_interval = sweep_interval
        self._drain_timeout = drain_timeout
        self._stopping = False
        self._inputs: asyncio.Queue[_Input] = asyncio.Queue()
        self._busy = False
        self._batch_done = asyncio.Event()
        self._stuck: set[str] = set()
        self._heap: list[_HeapEntry] = []
        self._heap_keys: set[tuple[str, str, int, int]] = set()
        self._heap_limit = 1000
        self._loaded_until: datetime | None = None  # None: every DB timer is in the heap
        self._reload_timers = False
        self._timers_changed = asyncio.Event()
        self._order = itertools.count()
        self._publishing: set[tuple[str, int, int]] = set()
        self._sent_unmarked: set[tuple[str, int, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._queries: Subscription | None = None
        self._links = Links(self.store, self.transport)
        self._started = False
        self.ownership = Ownership(
            self.store,
            self.identity,
            ttl=lease_ttl,
            eligible=None if shards is None else frozenset(shards),
            alone=not self.transport.durable,
            on_gained=self._gained,
            on_lost=self._lost,
            on_releasing=self._releasing,
            health=self._health,
        )
        self._failing: tuple[float, str] | None = None  # (monotonic time, why) of a failed batch
        self._shard_subscriptions: dict[int, Subscription] = {}
        self._cancelling: set[asyncio.Task[None]] = set()
        self._publishers: set[asyncio.Task[None]] = set()
        self._sweep_now = asyncio.Event()
        self._kill_after = int(os.environ.get(_KILL_AFTER_COMMIT, "0") or 0)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, recover (outbox, timers, unfinished work) and start serving."""
        if self._started:
            return
        await self.store.connect()
        if self._migrate or (self._migrate is None and self.store.url.startswith("sqlite")):
            await self.store.migrate()
        await self.transport.connect()
        await self.store.register_workflow_types(list(self.definitions))
        self._started = True
        await self.ownership.start()  # subscribes to the shards it wins
        self._links.shard_count = self.ownership.shard_count
        await self._recover_outbox()
        self._tasks = [
            asyncio.create_task(self._process_loop(), name=_PROCESS_TASK),
            asyncio.create_task(self._timer_loop(), name="saga-coordinator-timers"),
            asyncio.create_task(self._sweep_loop(), name="saga-coordinator-sweep"),
            asyncio.create_task(self.ownership.run(), name="saga-coordinator-leases"),
        ]
        self._queries = await self.transport.serve_queries(self._answer_query)
        log.info(
            "coordinator started",
            extra={
                "coordinator": self.identity,
                "workflows": sorted(self.definitions),
                "shards": len(self.ownership.owned),
            },
        )

    async def run(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop consuming, finish the batch in hand, hand the shards over, close."""
        for shard in list(self._shard_subscriptions):
            await self._unsubscribe(shard)
        await asyncio.gather(*self._cancelling, return_exceptions=True)
        if self._queries is not None:
            await self._queries.cancel()
            self._queries = None
        # A batch in hand commits and publishes; unacknowledged results go back to the
        # broker and come again as harmless duplicates. (Idle, there is nothing to wait for.)
        self._stopping = True
        process = next((t for t in self._tasks if t.get_name() == _PROCESS_TASK), None)
        if process is not None and not process.done() and self._busy:
            try:
                await asyncio.wait_for(asyncio.shield(process), self._drain_timeout)
            except TimeoutError:
                log.warning(
                    "batch not finished %gs after shutdown began; abandoning it",
                    self._drain_timeout,
                    extra={"coordinator": self.identity},
                )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._publishers:  # tasks being published: let them reach the broker
            await asyncio.wait(list(self._publishers), timeout=self._drain_timeout)
            for job in list(self._publishers):
                job.cancel()  # unsent ones stay in the outbox for the relay
        if self._started and self._sent_unmarked:
            try:
                await self.store.mark_sent(list(self._sent_unmarked))
            except StoreError:
                log.warning("could not record sent tasks at shutdown; they will be resent")
        if self._started:
            try:
                await self.ownership.leave()
            except StoreError:
                log.warning("could not release shard leases; they expire by themselves")
        for ex in self._cache.values():
            ex.instance.dispose()
        self._cache.clear()
        if self._owns_transport:
            await self.transport.aclose()
        if self._owns_store:
            await self.store.aclose()
        self._started = False
        self._stopping = False

    async def __aenter__(self) -> Coordinator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def idle(self) -> bool:
        """No input queued or being processed (used by time skipping)."""
        return self._inputs.empty() and not self._busy and not self._publishing

    # --- intake --------------------------------------------------------------------------
    async def _on_message(self, msg: ResultMessage) -> None:
        if msg.shard not in self.ownership.owned:
            raise LeaseLostError([msg.shard])  # back to the queue, for the shard's owner
        if msg.kind == "wake":
            self._inputs.put_nowait(_Input(msg.workflow_id, "wake", reason=msg.wake_reason))
            return
        done = asyncio.get_running_loop().create_future()
        self._inputs.put_nowait(_Input(msg.workflow_id, "result", result=msg, done=done))
        await done  # acknowledged only once recorded

    def wake(self, workflow_id: str) -> None:
        """Look at a workflow's pending input now (in-process clients call this)."""
        self._inputs.put_nowait(_Input(workflow_id, "wake"))

    # --- processing ----------------------------------------------------------------------
    async def _process_loop(self) -> None:
        while not self._stopping:
            if self._inputs.empty():
                try:  # (a timeout scope: no task per wait, as wait_for would create)
                    async with asyncio.timeout(0.2):
                        first = await self._inputs.get()
                except TimeoutError:
                    if self._sent_unmarked:
                        await self._flush_sent()
                    continue
            else:
                first = self._inputs.get_nowait()
            batch = [first]
            while len(batch) < self._batch_size and not self._inputs.empty():
                batch.append(self._inputs.get_nowait())
            self._busy = True
            self._batch_done.clear()
            try:
                await self._process(batch)
            except Exception as exc:  # the loop must survive anything
                log.exception("batch failed; inputs will be retried")
                self._failing = (time.monotonic(), str(exc) or type(exc).__name__)
                self._fail_batch(batch, exc)
                await asyncio.sleep(1.0)
            finally:
                self._busy = False
                self._batch_done.set()

    async def _flush_sent(self) -> None:
        keys = list(self._sent_unmarked)
        try:
            await self.store.mark_sent(keys)
        except StoreError:
            return
        self._sent_unmarked.difference_update(keys)

    def _fail_batch(self, batch: list[_Input], exc: BaseException) -> None:
        for item in batch:
            self._evict(item.workflow_id)
            if item.done is not None and not item.done.done():
                item.done.set_exception(exc)
            elif item.kind == "timer" and item.timer is not None:
                self._heap_keys.discard(_timer_key(item.timer))
                self._reload_timers = True
        self._timers_changed.set()

    async def _process(self, batch: list[_Input]) -> None:
        by_workflow: dict[str, list[_Input]] = {}
        for item in batch:
            by_workflow.setdefault(item.workflow_id, []).append(item)
        now = self.clock.now()
        touched: dict[str, Execution] = {}
        for workflow_id, items in by_workflow.items():
            if workflow_id in self._stuck:
                await self._park(workflow_id, items, None)
                continue
            try:
                ex = await self._load(workflow_id)
                if ex is None:
                    continue
                if ex.record.shard not in self.ownership.owned:
                    self._evict(workflow_id)
                    _give_back(items, LeaseLostError([ex.record.shard]))
                    continue
                for item in items:
                    await self._apply(ex, item, now)
            except (NondeterminismError, SagaError) as exc:
                await self._park(workflow_id, items, exc)
                continue
            touched[workflow_id] = ex
        await self._commit(touched, by_workflow)

    async def _apply(self, ex: Execution, item: _Input, now: datetime) -> None:
        if item.kind == "result" and item.result is not None:
            ex.on_result(item.result, now)
        elif item.kind == "timer" and item.timer is not None:
            self._heap_keys.discard(_timer_key(item.timer))
            if item.timer.kind in LINK_TIMERS:
                await self._links.on_timer(ex, item.timer, now)
            else:
                ex.on_timer(item.timer, now)
        else:
            # Inbox first: a child's link to its parent (and the signal of a
            # signal-with-start) must be there when it starts. Starting is idempotent.
            rows = [] if item.reason == "start" else await self.store.inbox_for(ex.workflow_id)
            ex.on_start(now, rows)
            for row in rows:
                ex.on_inbox(row, now)

    async def _load(self, workflow_id: str) -> Execution | None:
        ex = self._cache.get(workflow_id)
        if ex is not None:
            self._cache.move_to_end(workflow_id)
            return ex
        record = await self.store.get_workflow(workflow_id)
        if record is None or record.status.is_closed:
            return None
        definition = self.definitions.get(record.workflow_type)
        if definition is None:
            raise SagaError(
                f"no definition of workflow type {record.workflow_type!r} on this coordinator"
            )
        events = await self.store.load_history(workflow_id, record.run_id) if record.version else []
        ex = Execution.restore(record, events, definition)
        ex.telemetry = self.telemetry
        ex.version = record.version
        self._cache[workflow_id] = ex
        while len(self._cache) > self._cache_size:
            _, old = self._cache.popitem(last=False)
            old.instance.dispose()
            self._evictions += 1
            if self._evictions % _COLLECT_EVERY == 0:
                # A disposed instance is a web of cycles (tasks, futures, its loop) that
                # only a full collection frees, and Python runs one only after the
                # long-lived heap grew by a quarter: a cache of 10,000 would carry
                # ~2,500 dead instances. Collecting now and then keeps memory flat.
                gc.collect()
        return ex

    def _evict(self, workflow_id: str) -> None:
        ex = self._cache.pop(workflow_id, None)
        if ex is not None:
            ex.instance.dispose()

    async def _park(self, workflow_id: str, items: list[_Input], exc: BaseException | None) -> None:
        """Keep a workflow whose code cannot run visible and its inputs safe until fixed."""
        self._evict(workflow_id)
        self._stuck.add(workflow_id)
        for item in items:
            if item.kind == "result" and item.result is not None:
                await self.store.add_inbox(
                    workflow_id, "result", item.result.model_dump(mode="json")
                )
            if item.done is not None and not item.done.done():
                item.done.set_result(None)
        if exc is None:
            return
        log.error("workflow stuck: %s", exc, extra={"workflow_id": workflow_id})
        record = await self.store.get_workflow(workflow_id)
        if record is not None and record.stuck_reason != str(exc):
            write = WorkflowWrite(workflow_id, record.run_id, record.version, stuck_reason=str(exc))
            await self.store.commit(WriteBatch([write]))

    async def _commit(
        self, touched: dict[str, Execution], by_workflow: dict[str, list[_Input]]
    ) -> None:
        writes: dict[str, WorkflowWrite] = {}
        for workflow_id, ex in touched.items():
            write = ex.take_write()
            if write is not None:
                if ex.record.stuck_reason is not None:
                    write.clear_stuck = True
                writes[workflow_id] = write
        await self._commit_continued(touched, writes, by_workflow)
        while writes:
            mark = list(self._sent_unmarked)
            try:
                fence = self.ownership.fence(touched[w].record.shard for w in writes)
                conflicts = await self.store.commit(WriteBatch(list(writes.values()), mark, fence))
            except LeaseLostError as exc:
                lost = exc.shards
                await self.ownership.lost(lost)
                for workflow_id in [w for w in writes if touched[w].record.shard in lost]:
                    writes.pop(workflow_id)
                    touched.pop(workflow_id)
                    self._evict(workflow_id)
                    _give_back(by_workflow.pop(workflow_id, []), LeaseLostError(lost))
                continue
            self._sent_unmarked.difference_update(mark)
            for workflow_id in conflicts:
                log.warning("stale workflow version; reloading", extra={"workflow_id": workflow_id})
                writes.pop(workflow_id, None)
                touched.pop(workflow_id, None)
                self._evict(workflow_id)
                for item in by_workflow.pop(workflow_id, []):
                    self._inputs.put_nowait(item)
            break
        tasks: list[TaskMessage] = []
        notices: list[WorkflowClosedNotice] = []
        for workflow_id, write in writes.items():
            ex = touched[workflow_id]
            ex.committed()
            ex.record.stuck_reason = None
            self._stuck.discard(workflow_id)
            tasks.extend(write.outbox_add)
            for timer in write.timers_add:
                self._push_timer(timer)
            if write.closes:
                self._evict(workflow_id)
                notices.append(_closed_notice(ex, write))
                await self._links.after_close(ex)
        for items in by_workflow.values():
            for item in items:
                if item.done is not None and not item.done.done():
                    item.done.set_result(None)
        if tasks:
            self._maybe_die_before_publishing()
            self._publish_behind(tasks)
        if notices:
            self._in_background(self._announce(notices))

    def _health(self) -> str | None:
        """Why this coordinator cannot do its work now, if it cannot."""
        if not getattr(self.transport, "connected", True):
            return "broker unreachable"
        if self._failing is not None and time.monotonic() - self._failing[0] < _FAILING_FOR:
            return f"commits failing: {self._failing[1][:200]}"
        return None

    def _maybe_die_before_publishing(self) -> None:
        if self._kill_after > 0:
            self._kill_after -= 1
            if self._kill_after == 0:
                log.warning("%s: killing myself before publishing", _KILL_AFTER_COMMIT)
                os.kill(os.getpid(), signal.SIGKILL)

    async def _commit_continued(
        self,
        touched: dict[str, Execution],
        writes: dict[str, WorkflowWrite],
        by_workflow: dict[str, list[_Input]],
    ) -> None:
        """Runs that continued as new: each ends and starts its next run in one transaction."""
        for workflow_id in [w for w in writes if touched[w].continued is not None]:
            ex = touched.pop(workflow_id)
            write = writes.pop(workflow_id)
            assert ex.continued is not None
            self._evict(workflow_id)
            conflicts = await self.store.continue_as_new(write, ex.continued, ex.continued_inbox())
            if conflicts:
                log.warning("stale workflow version; reloading", extra={"workflow_id": workflow_id})
                for item in by_workflow.pop(workflow_id, []):
                    self._inputs.put_nowait(item)
                continue
            self._stuck.discard(workflow_id)
            log.info(
                "workflow continued as new",
                extra={"workflow_id": workflow_id, "run_id": ex.continued.run_id},
            )
            self._inputs.put_nowait(_Input(workflow_id, "wake"))  # start the next run
            await self._links.after_close(ex)

    async def _announce(self, notices: list[WorkflowClosedNotice]) -> None:
        """Broadcast closes, all at once and off the batch's path: they are best effort."""
        outcomes = await asyncio.gather(
            *(self.transport.publish_notice(n) for n in notices), return_exceptions=True
        )
        for notice, outcome in zip(notices, outcomes, strict=True):
            fields = {"workflow_id": notice.workflow_id, "status": notice.status}
            log.info("workflow closed", extra=fields)
            if isinstance(outcome, Exception):
                log.warning(
                    "could not broadcast close; clients will poll: %s", outcome, extra=fields
                )

    # --- queries -------------------------------------------------------------------------
    async def _answer_query(self, request: QueryRequest) -> QueryReply:
        """Answer from the live instance, or by replaying the history; never write."""
        try:
            result = await self._query(request.workflow_id, request.query, request.args)
        except WorkflowNotFoundError as exc:
            return QueryReply(
                request_id=request.request_id, ok=False, error_type="not_found", error=str(exc)
            )
        except InvalidArgumentsError as exc:
            return QueryReply(
                request_id=request.request_id,
                ok=False,
                error_type="invalid_arguments",
                error=exc.detail,
            )
        except (SagaError, ValueError) as exc:
            detail = exc.detail if isinstance(exc, QueryFailedError) else str(exc)
            return QueryReply(
                request_id=request.request_id, ok=False, error_type="failed", error=detail
            )
        return QueryReply(request_id=request.request_id, ok=True, result=result)

    async def _query(self, workflow_id: str, name: str, args: list[Any]) -> Any:
        ex = self._cache.get(workflow_id)
        # (A run loaded but not yet started — its start awaits the inbox — is dry-run below.)
        if ex is not None and ex.started and workflow_id not in self._stuck:
            return ex.instance.query(name, args)
        record = await self.store.get_workflow(workflow_id)
        if record is None:
            raise WorkflowNotFoundError(workflow_id)
        definition = self.definitions.get(record.workflow_type)
        if definition is None:
            raise QueryFailedError(
                workflow_id, name, f"no definition of type {record.workflow_type!r} here"
            )
        events = await self.store.load_history(workflow_id, record.run_id) if record.version else []
        # A throwaway replay: the cache holds only what this coordinator advances.
        replayed = Execution.restore(record, events, definition)
        try:
            if not replayed.started:  # not activated yet: a dry run of its start, unwritten
                replayed.on_start(self.clock.now())
            return replayed.instance.query(name, args)
        finally:
            replayed.instance.dispose()

    # --- outbox --------------------------------------------------------------------------
    def _publish_behind(self, tasks: list[TaskMessage]) -> None:
        """Publish committed tasks while the next batch is processed.

        Nothing waits for the broker's confirms but the ``sent`` mark: the tasks are in
        the outbox already, and the relay sends again whatever fails here.
        """
        keys = self._claim_publishing(tasks)  # now: the relay and idle() must see them
        self._in_background(self._publish(tasks, keys))

    def _in_background(self, sending: Coroutine[Any, Any, None]) -> None:
        """Send while the next batch is processed; a graceful stop waits for it."""
        job = asyncio.create_task(sending)
        self._publishers.add(job)
        job.add_done_callback(self._publishers.discard)

    def _claim_publishing(self, tasks: list[TaskMessage]) -> list[tuple[str, int, int]]:
        keys = [(t.workflow_id, t.seq, t.attempt) for t in tasks]
        self._publishing.update(keys)
        return keys

    async def _publish(self, tasks: list[TaskMessage], keys: list[tuple[str, int, int]]) -> None:
        """Send claimed tasks, wait for the confirms, and release the claim."""
        try:
            results = await asyncio.gather(
                *(self.transport.publish_task(t) for t in tasks), return_exceptions=True
            )
        finally:
            self._publishing.difference_update(keys)
        for key, outcome in zip(keys, results, strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "publish failed; the relay will retry: %s",
                    outcome,
                    extra={"workflow_id": key[0], "seq": key[1]},
                )
            else:
                self._sent_unmarked.add(key)

    async def _recover_outbox(self) -> None:
        if not self.transport.durable:
            reset = await self.store.reset_outbox()
            if reset:
                log.info("republishing %d tasks lost with the in-process broker", reset)
        await self._relay()

    async def _relay(self) -> None:
        """Publish committed tasks that never reached the broker."""
        rows = await self.store.outbox(only_unsent=True, owner=self.identity)
        self._backlog = len(rows)
        pending = [
            r.message
            for r in rows
            if r.key not in self._publishing and r.key not in self._sent_unmarked
        ]
        if pending:
            log.info("outbox relay publishing %d task(s)", len(pending))
            await self._publish(pending, self._claim_publishing(pending))
            await self._flush_sent()

    # --- timers ----------------------------------------------------------------------------
    def _push_timer(self, timer: TimerRow) -> None:
        key = _timer_key(timer)
        if key in self._heap_keys:
            return
        if self._loaded_until is not None and timer.due_at > self._loaded_until:
            return  # beyond what we hold in memory; loaded from the database later
        heapq.heappush(self._heap, _HeapEntry(timer.due_at, next(self._order), timer))
        self._heap_keys.add(key)
        if len(self._heap) > self._heap_limit:  # memory stays bounded: keep the soonest half
            self._heap = heapq.nsmallest(self._heap_limit // 2, self._heap)  # sorted: a heap
            self._heap_keys = {_timer_key(e.timer) for e in self._heap}
            self._loaded_until = self._heap[-1].due
        self._timers_changed.set()

    async def _load_timers(self) -> None:
        rows = await self.store.timers_due_before(
            _FAR_FUTURE, limit=self._heap_limit, owner=self.identity
        )
        self._loaded_until = rows[-1].due_at if len(rows) >= self._heap_limit else None
        for row in rows:
            key = _timer_key(row)
            if key not in self._heap_keys:
                heapq.heappush(self._heap, _HeapEntry(row.due_at, next(self._order), row))
                self._heap_keys.add(key)

    async def _timer_loop(self) -> None:
        refresh_at = self.clock.now()
        while True:
            if (
                self._reload_timers
                or self.clock.now() >= refresh_at
                or (not self._heap and self._loaded_until is not None)
            ):
                self._reload_timers = False
                try:
                    await self._load_timers()
                except StoreError:
                    log.warning("could not load timers; retrying")
                refresh_at = self.clock.now() + _TIMER_REFRESH
            while self._heap and self._heap[0].due <= self.clock.now():
                entry = heapq.heappop(self._heap)
                self._inputs.put_nowait(_Input(entry.timer.workflow_id, "timer", timer=entry.timer))
            self._timers_changed.clear()
            # Timers written by other coordinators appear on refresh (real time); our own
            # are pushed as we commit them and wake this loop.
            await self.clock.wait_until(
                self._heap[0].due if self._heap else None,
                self._timers_changed,
                max_real_wait=_TIMER_REFRESH.total_seconds(),
            )

    # --- sweeping ------------------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        first = True
        while True:
            try:
                needing = await self.store.workflows_needing_work(owner=self.identity)
                if first:
                    self._stuck.clear()
                else:
                    await self._relay()
                for workflow_id in needing:
                    if first or workflow_id not in self._stuck:
                        self._inputs.put_nowait(_Input(workflow_id, "wake"))
                first = False
            except SagaError as exc:
                log.warning("sweep failed: %s", exc)
            self._sweep_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_now.wait(), self._sweep_interval)

    # --- shards ----------------------------------------------------------------------------
    async def _gained(self, shards: list[int]) -> None:
        """New shards: consume their results; their timers, outbox and work come next."""
        for shard in shards:
            if shard not in self._shard_subscriptions:
                self._shard_subscriptions[shard] = await self.transport.consume_results(
                    self._on_message, prefetch=self._batch_size, shards=[shard]
                )
        self._reload_timers = True
        self._timers_changed.set()
        self._sweep_now.set()  # unactivated work, inbox rows, unsent outbox rows

    async def _lost(self, shards: list[int]) -> None:
        """Another coordinator holds these now: keep nothing of them, stop consuming.

        Quick: the lease renewal waits for this. Messages still arriving meanwhile are
        handed back to the broker by :meth:`_on_message`.
        """
        self._forget(set(shards))
        for shard in shards:
            subscription = self._shard_subscriptions.pop(shard, None)
            if subscription is not None:
                task = asyncio.create_task(self._cancel(shard, subscription))
                self._cancelling.add(task)
                task.add_done_callback(self._cancelling.discard)

    async def _releasing(self, shards: list[int]) -> None:
        """Hand-over: stop consuming, let the batch in hand commit, then forget them."""
        for shard in shards:
            await self._unsubscribe(shard)
        if self._busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_done.wait(), _RELEASE_WAIT)
        self._forget(set(shards))

    async def _unsubscribe(self, shard: int) -> None:
        subscription = self._shard_subscriptions.pop(shard, None)
        if subscription is not None:
            await self._cancel(shard, subscription)

    async def _cancel(self, shard: int, subscription: Subscription) -> None:
        try:
            await subscription.cancel()
        except TransportError as exc:
            log.warning("could not stop consuming shard %d: %s", shard, exc)

    def _forget(self, shards: set[int]) -> None:
        """Drop cached workflows and timers of ``shards``."""
        for workflow_id in [w for w, ex in self._cache.items() if ex.record.shard in shards]:
            self._evict(workflow_id)
        kept = [e for e in self._heap if e.timer.shard not in shards]
        if len(kept) != len(self._heap):
            heapq.heapify(kept)
            self._heap = kept
            self._heap_keys = {_timer_key(e.timer) for e in kept}
