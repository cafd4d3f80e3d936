"""One workflow's code, driven one input event at a time.

The instance turns (input event) into (commands). When the activation being applied
was recorded before, its recorded commands are passed in and every command the code
produces is checked against them in order; a mismatch is a NondeterminismError.
"""

from __future__ import annotations

import asyncio
import collections
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from saga import errors
from saga._runtime.loop import WorkflowLoop
from saga.converter import Signature
from saga.failure import from_failure, to_failure
from saga.history import (
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    EventAttributes,
    HistoryEvent,
    MarkerRecorded,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCancelRequested,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowSignaled,
    WorkflowStarted,
    WorkflowStatus,
)

if TYPE_CHECKING:
    from saga.workflow import WorkflowDefinition


@dataclass(frozen=True)
class WorkflowInfo:
    """What a workflow knows about itself (``workflow.info()``)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    start_time: datetime


@dataclass
class _PendingActivity:
    future: asyncio.Future[Any]
    name: str
    signature: Signature | None


@dataclass
class _Compensations:
    succeeded: int = 0
    failed: bool = False


@dataclass
class _Condition:
    predicate: Callable[[], bool]
    future: asyncio.Future[None]


def _same_command(a: EventAttributes, b: EventAttributes) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, ActivityScheduled) and isinstance(b, ActivityScheduled):
        return a.seq == b.seq and a.activity == b.activity
    if isinstance(a, TimerStarted | TimerCancelled | ActivityCancelRequested):
        return bool(a.seq == b.seq)  # type: ignore[attr-defined]
    if isinstance(a, MarkerRecorded) and isinstance(b, MarkerRecorded):
        return a.patch_id == b.patch_id
    return True


def _describe(attrs: EventAttributes) -> str:
    fields = {k: v for k, v in attrs.__dict__.items() if k in ("seq", "activity", "patch_id")}
    inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{attrs.event_type()}({inner})"


class WorkflowInstance:
    """Live state of one workflow run: its object, tasks, futures and counters."""

    def __init__(self, definition: WorkflowDefinition, workflow_id: str, run_id: str) -> None:
        self.definition = definition
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.loop = WorkflowLoop(self)
        self.random = random.Random(uuid.UUID(run_id).int if _is_uuid(run_id) else run_id)
        self.compensations = _Compensations()
        self.closed = False
        self._now = datetime.fromtimestamp(0).astimezone()
        self._start_time = self._now
        self._seq = 0
        self._object: Any = None
        self._main: asyncio.Task[Any] | None = None
        self._activities: dict[int, _PendingActivity] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._conditions: list[_Condition] = []
        self._patches: dict[str, bool] = {}
        self._new: list[EventAttributes] = []
        self._recorded: collections.deque[HistoryEvent] | None = None
        self._last_event_id = 0
        self._nondeterminism: errors.NondeterminismError | None = None

    # --- reading state -------------------------------------------------------------
    def now(self) -> datetime:
        return self._now

    def info(self) -> WorkflowInfo:
        return WorkflowInfo(
            self.workflow_id, self.run_id, self.definition.name, self._start_time
        )

    @property
    def replaying(self) -> bool:
        """True while re-running an activation that history already records."""
        return self._recorded is not None

    # --- activation ----------------------------------------------------------------
    def activate(
        self, event: HistoryEvent, recorded: list[HistoryEvent] | None
    ) -> list[EventAttributes]:
        """Apply one input event and run the code until it blocks.

        ``recorded`` holds the commands history recorded for this activation (replay),
        or None for a new activation. Returns the commands produced.
        """
        self._now = event.timestamp
        self._last_event_id = event.event_id
        self._recorded = collections.deque(recorded) if recorded is not None else None
        self._new = []
        self._apply(event.attributes)
        self._run()
        if self._nondeterminism is not None:
            raise self._nondeterminism
        if self._recorded:
            extra = self._recorded[0]
            raise errors.NondeterminismError(
                self.workflow_id,
                extra.event_id,
                f"history has {_describe(extra.attributes)} but the code did not produce it",
            )
        self._recorded = None
        return self._new

    def _apply(self, attrs: EventAttributes) -> None:
        if isinstance(attrs, WorkflowStarted):
            self._start_time = self._now
            self._start(attrs)
        elif isinstance(attrs, ActivityCompleted):
            pending = self._activities.pop(attrs.seq, None)
            if pending is not None and not pending.future.done():
                value = (
                    pending.signature.decode_result(attrs.result)
                    if pending.signature is not None
                    else attrs.result
                )
                pending.future.set_result(value)
        elif isinstance(attrs, ActivityFailed):
            pending = self._activities.pop(attrs.seq, None)
            if pending is not None and not pending.future.done():
                pending.future.set_exception(
                    errors.ActivityError(
                        f"activity {pending.name!r} failed after {attrs.attempt} attempt(s): "
                        f"{attrs.failure.describe()}",
                        activity=pending.name,
                        seq=attrs.seq,
                        attempt=attrs.attempt,
                        cause=from_failure(attrs.failure),
                    )
                )
        elif isinstance(attrs, TimerFired):
            handle = self._timers.pop(attrs.seq, None)
            if handle is not None and not handle.cancelled():
                handle._run()
        elif isinstance(attrs, WorkflowCancelRequested):
            if self._main is not None and not self._main.done():
                self._main.cancel(attrs.reason or "workflow cancelled")
        elif isinstance(attrs, WorkflowSignaled):
            self._signal(attrs)

    def _start(self, attrs: WorkflowStarted) -> None:
        defn = self.definition
        args = defn.signature.decode_args(attrs.args)
        if defn.cls is not None:
            self._object = defn.cls()
            coro = defn.run_fn(self._object, *args)
        else:
            coro = defn.run_fn(*args)
        self._main = self.loop.create_task(coro, name=f"workflow:{self.workflow_id}")

    def _signal(self, attrs: WorkflowSignaled) -> None:
        handler = self.definition.signals.get(attrs.name)
        if handler is None or self._object is None:
            return  # unknown signals are dropped, as in Temporal; the client refuses them first
        args = handler.signature.decode_args(attrs.args)
        outcome = handler.fn(self._object, *args)
        if asyncio.iscoroutine(outcome):
            self.loop.create_task(outcome, name=f"signal:{attrs.name}")

    def _run(self) -> None:
        while True:
            self.loop.run_until_idle()
            fired = False
            for cond in list(self._conditions):
                if cond.future.done():
                    self._conditions.remove(cond)
                elif cond.predicate():
                    cond.future.set_result(None)
                    self._conditions.remove(cond)
                    fired = True
            if not fired:
                break
        if self._main is not None and self._main.done() and not self.closed:
            self.closed = True
            self._emit(self._closing_command(self._main))

    def _closing_command(self, main: asyncio.Task[Any]) -> EventAttributes:
        if main.cancelled():
            return WorkflowCancelled(compensated=self.compensations.succeeded > 0)
        exc = main.exception()
        if exc is None:
            return WorkflowCompleted(result=self.definition.signature.encode_result(main.result()))
        if isinstance(exc, errors.NondeterminismError):
            raise exc
        if self.compensations.failed:
            status = WorkflowStatus.COMPENSATION_FAILED
        elif self.compensations.succeeded > 0:
            status = WorkflowStatus.COMPENSATED
        else:
            status = WorkflowStatus.FAILED
        return WorkflowFailed(failure=to_failure(exc), status=status)

    # --- commands --------------------------------------------------------------------
    def _emit(self, command: EventAttributes) -> None:
        if self._recorded is None:
            self._new.append(command)
            return
        if not self._recorded:
            err = errors.NondeterminismError(
                self.workflow_id,
                self._last_event_id,
                f"the code produced {_describe(command)} that history does not have",
            )
        else:
            expected = self._recorded.popleft()
            if _same_command(expected.attributes, command):
                return
            err = errors.NondeterminismError(
                self.workflow_id,
                expected.event_id,
                f"history has {_describe(expected.attributes)} "
                f"but the code produced {_describe(command)}",
            )
        self._nondeterminism = self._nondeterminism or err
        raise err

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def schedule_activity(
        self, command: ActivityScheduled, signature: Signature | None
    ) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        self._activities[command.seq] = _PendingActivity(future, command.activity, signature)
        self._emit(command)

        def on_done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() and self._activities.pop(command.seq, None) is not None:
                self._emit(ActivityCancelRequested(seq=command.seq))

        future.add_done_callback(on_done)
        return future

    def start_timer(self, delay: float, handle: asyncio.TimerHandle) -> int:
        seq = self.next_seq()
        self._timers[seq] = handle
        fire_at = self._now + timedelta(seconds=delay)
        self._emit(TimerStarted(seq=seq, fire_at=fire_at, duration=delay))
        return seq

    def cancel_timer(self, seq: int) -> None:
        if self._timers.pop(seq, None) is not None:
            self._emit(TimerCancelled(seq=seq))

    def patched(self, patch_id: str) -> bool:
        if patch_id in self._patches:
            return self._patches[patch_id]
        if self._recorded is not None:
            head = self._recorded[0].attributes if self._recorded else None
            taken = isinstance(head, MarkerRecorded) and head.patch_id == patch_id
            if taken:
                self._recorded.popleft()
        else:
            self._emit(MarkerRecorded(patch_id=patch_id))
            taken = True
        self._patches[patch_id] = taken
        return taken

    def wait_condition(self, predicate: Callable[[], bool]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        if predicate():
            future.set_result(None)
        else:
            self._conditions.append(_Condition(predicate, future))
        return future

    def query(self, name: str, args: list[Any]) -> Any:
        handler = self.definition.queries.get(name)
        if handler is None:
            known = ", ".join(sorted(self.definition.queries)) or "none"
            raise errors.InvalidArgumentsError(
                f"workflow {self.definition.name}", f"no query named {name!r} (known: {known})"
            )
        decoded = handler.signature.decode_args(args)
        return handler.signature.encode_result(handler.fn(self._object, *decoded))

    def dispose(self) -> None:
        """Drop the coroutines without running them further (cache eviction)."""
        self.loop.close()
        for task in (self._main,):
            if task is not None and not task.done():
                coro = task.get_coro()
                if coro is not None and hasattr(coro, "close"):
                    coro.close()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True

