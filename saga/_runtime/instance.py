"""One workflow's code, driven one input event at a time.

The instance turns (input event) into (commands). When the activation being applied
was recorded before, its recorded commands are passed in and every command the code
produces is checked against them in order; a mismatch is a NondeterminismError.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
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
    ChildWorkflowCancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowInitiated,
    ChildWorkflowStarted,
    ChildWorkflowStartFailed,
    EventAttributes,
    HistoryEvent,
    MarkerRecorded,
    ParentInfo,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCancelRequested,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowSignaled,
    WorkflowStarted,
    WorkflowStatus,
)

if TYPE_CHECKING:
    from saga.workflow import WorkflowDefinition

log = logging.getLogger("saga.workflow")

compensating: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "saga_compensating", default=False
)
"""True inside the task that runs a Saga's compensations (and the tasks it starts)."""


class ContinueAsNewError(BaseException):  # noqa: N818 - Temporal's name for it
    """Raised by ``workflow.continue_as_new``: ends this run and starts the next one.

    A BaseException, like ``asyncio.CancelledError``, so that ``except Exception`` in
    workflow code does not swallow it; ``Saga`` does not compensate on it either.
    """

    def __init__(self, args: list[Any]) -> None:
        super().__init__("continue as new")
        self.encoded_args = args


@dataclass(frozen=True)
class WorkflowInfo:
    """What a workflow knows about itself (``workflow.info()``)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    start_time: datetime
    history_length: int = 0
    """Events in this run's history so far; past a few thousand, consider continue-as-new."""
    parent: ParentInfo | None = None
    """The workflow that started this one as a child, if any."""


@dataclass
class _PendingActivity:
    future: asyncio.Future[Any]
    name: str
    signature: Signature | None


@dataclass
class PendingChild:
    """A child workflow the code started and still waits for."""

    seq: int
    workflow_id: str
    workflow_type: str
    signature: Signature | None
    started: asyncio.Future[str]  # the child's run id, once it runs
    result: asyncio.Future[Any]
    cancel_requested: bool = False


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
    if isinstance(a, ChildWorkflowInitiated) and isinstance(b, ChildWorkflowInitiated):
        return (a.seq, a.workflow_id, a.workflow_type) == (b.seq, b.workflow_id, b.workflow_type)
    if isinstance(a, ChildWorkflowCancelRequested) and isinstance(b, ChildWorkflowCancelRequested):
        return a.seq == b.seq
    if isinstance(a, MarkerRecorded) and isinstance(b, MarkerRecorded):
        return a.patch_id == b.patch_id
    return True


def _describe(attrs: EventAttributes) -> str:
    shown = ("seq", "activity", "patch_id", "workflow_type", "workflow_id")
    fields = {k: v for k, v in attrs.__dict__.items() if k in shown}
    inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{attrs.event_type()}({inner})"


class WorkflowInstance:
    """Live state of one workflow run: its object, tasks, futures and counters."""

    def __init__(self, definition: WorkflowDefinition, workflow_id: str, run_id: str) -> None:
        self.definition = definition
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.loop = WorkflowLoop(self)  # type: ignore[abstract]  # no I/O methods, on purpose
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
        self._children: dict[int, PendingChild] = {}
        self._parent: ParentInfo | None = None
        self._querying = False
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
            self.workflow_id,
            self.run_id,
            self.definition.name,
            self._start_time,
            history_length=self._last_event_id,
            parent=self._parent,
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
            self._parent = attrs.parent
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
        elif isinstance(
            attrs,
            ChildWorkflowStarted
            | ChildWorkflowStartFailed
            | ChildWorkflowCompleted
            | ChildWorkflowFailed,
        ):
            self._child_event(attrs)

    def _child_event(
        self,
        attrs: ChildWorkflowStarted
        | ChildWorkflowStartFailed
        | ChildWorkflowCompleted
        | ChildWorkflowFailed,
    ) -> None:
        child = self._children.get(attrs.seq)
        if child is None:
            return
        if isinstance(attrs, ChildWorkflowStarted):
            if not child.started.done():
                child.started.set_result(attrs.run_id)
            return
        del self._children[attrs.seq]
        if isinstance(attrs, ChildWorkflowStartFailed):
            exc: BaseException = errors.WorkflowAlreadyStartedError(
                attrs.workflow_id, attrs.running_run_id
            )
            for future in (child.started, child.result):
                if not future.done():
                    future.set_exception(exc)
            child.result.exception()  # the start's failure is the one to see
            return
        if not child.started.done():
            child.started.set_result(attrs.run_id)
        if isinstance(attrs, ChildWorkflowCompleted):
            value = (
                child.signature.decode_result(attrs.result)
                if child.signature is not None
                else attrs.result
            )
            child.result.set_result(value)
            return
        child.result.set_exception(
            errors.ChildWorkflowError(
                f"child workflow {attrs.workflow_id!r} ({child.workflow_type}) ended "
                f"{attrs.status.value}: {attrs.failure.describe()}",
                workflow_id=attrs.workflow_id,
                run_id=attrs.run_id,
                workflow_type=child.workflow_type,
                status=attrs.status.value,
                cause=from_failure(attrs.failure),
            )
        )

    def _start(self, attrs: WorkflowStarted) -> None:
        defn = self.definition
        try:
            args = defn.signature.decode_args(attrs.args)
        except errors.InvalidArgumentsError as exc:
            # Input no code change can fix (a start by type name skips the client's
            # check): fail the workflow, as replay will, rather than leave it stuck.
            self.closed = True
            self._emit(WorkflowFailed(failure=to_failure(exc, with_stack=False)))
            return
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
        try:
            args = handler.signature.decode_args(attrs.args)
        except errors.InvalidArgumentsError as exc:
            # Dropped like an unknown signal: it could never be applied, and must not
            # block the workflow's other input forever.
            log.warning(
                "dropping signal %r: %s", attrs.name, exc, extra={"workflow_id": self.workflow_id}
            )
            return
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
        if isinstance(exc, ContinueAsNewError):
            new_run = uuid.uuid5(uuid.NAMESPACE_URL, f"saga:{self.run_id}:continue-as-new")
            return WorkflowContinuedAsNew(args=exc.encoded_args, new_run_id=str(new_run))
        if exc is None:
            try:
                result = self.definition.signature.encode_result(main.result())
            except errors.PayloadError as payload_exc:
                # A result that cannot be stored fails the workflow (deterministically:
                # replay meets the same value) instead of failing every commit.
                return WorkflowFailed(failure=to_failure(payload_exc))
            return WorkflowCompleted(result=result)
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
        if self._querying:
            raise errors.SagaError(
                f"a query handler tried to {_describe(command)}; queries only read state"
            )
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

    @property
    def querying(self) -> bool:
        """True while a query handler runs: nothing may change, nothing may be decided."""
        return self._querying

    def _refuse_in_query(self, what: str) -> None:
        if self._querying:
            raise errors.SagaError(f"a query handler tried to {what}; queries only read state")

    def next_seq(self) -> int:
        self._refuse_in_query("start a step, a timer or a child workflow")
        self._seq += 1
        return self._seq

    def schedule_activity(
        self, command: ActivityScheduled, signature: Signature | None
    ) -> asyncio.Future[Any]:
        if compensating.get() and not command.compensation:
            # Run by a compensation written as workflow code: a compensation step too.
            command = command.model_copy(update={"compensation": True})
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
        self._refuse_in_query("cancel a timer")
        if self._timers.pop(seq, None) is not None:
            self._emit(TimerCancelled(seq=seq))

    def start_child(
        self, command: ChildWorkflowInitiated, signature: Signature | None
    ) -> PendingChild:
        child = PendingChild(
            seq=command.seq,
            workflow_id=command.workflow_id,
            workflow_type=command.workflow_type,
            signature=signature,
            started=self.loop.create_future(),
            result=self.loop.create_future(),
        )
        self._children[command.seq] = child
        self._emit(command)
        return child

    def cancel_child(self, child: PendingChild) -> None:
        """Ask a child to cancel (once); its outcome still arrives as an input."""
        self._refuse_in_query("cancel a child workflow")
        if child.cancel_requested or child.result.done():
            return
        child.cancel_requested = True
        self._emit(ChildWorkflowCancelRequested(seq=child.seq))

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
        self._refuse_in_query("wait")
        future: asyncio.Future[None] = self.loop.create_future()
        if predicate():
            future.set_result(None)
        else:
            self._conditions.append(_Condition(predicate, future))
        return future

    def query(self, name: str, args: list[Any]) -> Any:
        """Answer a query from the current state, changing nothing.

        Raises InvalidArgumentsError for an unknown name or bad arguments, and
        QueryFailedError when the handler cannot run or raises.
        """
        handler = self.definition.queries.get(name)
        if handler is None:
            known = ", ".join(sorted(self.definition.queries)) or "none"
            raise errors.InvalidArgumentsError(
                f"workflow {self.definition.name}", f"no query named {name!r} (known: {known})"
            )
        decoded = handler.signature.decode_args(args)
        if self._object is None:
            raise errors.QueryFailedError(self.workflow_id, name, "the workflow has not started")
        # On the workflow's loop, so workflow.now() and info() work; any command the
        # handler tries (a step, a timer, a task) is refused, and the random numbers it
        # draws are given back, so the next activation decides as replay will.
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self.loop)
        random_state = self.random.getstate()
        self._querying = True
        try:
            value = handler.fn(self._object, *decoded)
            if asyncio.iscoroutine(value):
                value.close()
                raise errors.QueryFailedError(
                    self.workflow_id, name, "query handlers must be plain (not async) methods"
                )
            return handler.signature.encode_result(value)
        except errors.SagaError as exc:
            if isinstance(exc, errors.QueryFailedError):
                raise
            raise errors.QueryFailedError(self.workflow_id, name, str(exc)) from exc
        except Exception as exc:
            raise errors.QueryFailedError(
                self.workflow_id, name, f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._querying = False
            self.random.setstate(random_state)
            asyncio.events._set_running_loop(outer)

    def dispose(self) -> None:
        """Drop the coroutines without letting them act (eviction, termination, shutdown).

        Every pending task's coroutine is closed now, on this loop, rather than by the
        garbage collector at an arbitrary moment (possibly while another workflow's
        loop is running). Python still runs ``finally`` blocks on close; any workflow
        API they call fails because the loop is closed, and nothing they do is recorded.
        """
        self.loop.close()
        pending = [t for t in self.loop.tasks if not t.done()]
        if self._main is not None and not self._main.done() and self._main not in pending:
            pending.append(self._main)
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self.loop)
        try:
            for task in pending:
                task._log_destroy_pending = False  # type: ignore[attr-defined]
                coro = task.get_coro()
                if coro is None or not hasattr(coro, "close"):
                    continue
                try:
                    coro.close()
                except BaseException as exc:  # user code reacting to its disposal
                    log.debug(
                        "workflow code raised while being disposed: %r",
                        exc,
                        extra={"workflow_id": self.workflow_id},
                    )
        finally:
            asyncio.events._set_running_loop(outer)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
