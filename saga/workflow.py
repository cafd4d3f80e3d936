"""Authoring API for workflows: deterministic orchestration code.

Example:
    >>> from saga import workflow
    >>> @workflow.defn
    ... class Greeting:
    ...     @workflow.run
    ...     async def run(self, name: str) -> str:
    ...         return await workflow.execute_activity(greet, name)

Workflow code runs on a deterministic loop and is replayed from history after a
restart, so it must not read the clock, random numbers or the network directly: use
``workflow.now()``, ``workflow.random()``, ``workflow.uuid4()`` and activities.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, NoReturn, TypeVar, overload

from saga._runtime.instance import (
    ContinueAsNewError,
    PendingChild,
    WorkflowInfo,
    WorkflowInstance,
)
from saga._runtime.loop import WorkflowLoop
from saga.activity import ActivityDefinition
from saga.activity import definition_of as activity_definition_of
from saga.converter import Signature, to_json_value
from saga.errors import InvalidArgumentsError, SagaError
from saga.history import ActivityScheduled, ChildWorkflowInitiated
from saga.retry import RetryPolicy

__all__ = [
    "ChildWorkflowHandle",
    "ContinueAsNewError",
    "WorkflowDefinition",
    "WorkflowInfo",
    "continue_as_new",
    "defn",
    "execute_activity",
    "execute_child_workflow",
    "gather",
    "info",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "signal",
    "sleep",
    "start_child_workflow",
    "uuid4",
    "wait_condition",
]

T = TypeVar("T")
C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class HandlerDefinition:
    """A signal or query method."""

    name: str
    fn: Callable[..., Any]
    signature: Signature


@dataclass(frozen=True)
class WorkflowDefinition:
    """Everything the runtime needs to know about one workflow type."""

    name: str
    cls: type | None
    run_fn: Callable[..., Any]
    signature: Signature
    signals: dict[str, HandlerDefinition] = field(default_factory=dict)
    queries: dict[str, HandlerDefinition] = field(default_factory=dict)


_ATTR = "__saga_workflow__"


def run(fn: F) -> F:
    """Mark the method that runs a class workflow."""
    fn.__saga_run__ = True  # type: ignore[attr-defined]
    return fn


def _handler_marker(kind: str) -> Callable[..., Any]:
    def marker(fn: F | None = None, *, name: str | None = None) -> Any:
        def wrap(f: F) -> F:
            setattr(f, f"__saga_{kind}__", name or f.__name__)
            return f

        return wrap(fn) if fn is not None else wrap

    return marker


signal = _handler_marker("signal")
signal.__doc__ = "Mark a method as a signal handler: ``@workflow.signal`` or ``(name=...)``."
query = _handler_marker("query")
query.__doc__ = "Mark a method as a query handler: read-only, answered from current state."


@overload
def defn(target: C, *, name: str | None = None) -> C: ...
@overload
def defn(target: None = None, *, name: str | None = None) -> Callable[[C], C]: ...
def defn(target: Any = None, *, name: str | None = None) -> Any:
    """Declare a workflow: a class with one ``@workflow.run`` method, or an async function."""

    def wrap(obj: Any) -> Any:
        if inspect.isclass(obj):
            definition = _class_definition(obj, name)
            setattr(definition.run_fn, _ATTR, definition)
        elif inspect.iscoroutinefunction(obj):
            definition = WorkflowDefinition(
                name=name or obj.__name__, cls=None, run_fn=obj, signature=Signature(obj)
            )
        else:
            raise TypeError(f"@workflow.defn needs a class or an async function, not {obj!r}")
        setattr(obj, _ATTR, definition)
        return obj

    return wrap(target) if target is not None else wrap


def _members(cls: type) -> dict[str, Any]:
    """Attributes of ``cls`` and its bases, a subclass's overriding its bases' by name."""
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):  # object has nothing of ours
        members.update(vars(klass))
    return members


def _class_definition(cls: type, name: str | None) -> WorkflowDefinition:
    members = _members(cls)  # handlers may be inherited from a base class
    run_fns = [m for m in members.values() if callable(m) and getattr(m, "__saga_run__", False)]
    if len(run_fns) != 1:
        raise TypeError(f"workflow class {cls.__name__} needs exactly one @workflow.run method")
    run_fn = run_fns[0]
    if not inspect.iscoroutinefunction(run_fn):
        raise TypeError(f"{cls.__name__}.{run_fn.__name__} must be async")
    signals, queries = {}, {}
    for member in members.values():
        if not callable(member):
            continue
        if sig_name := getattr(member, "__saga_signal__", None):
            signals[sig_name] = HandlerDefinition(
                sig_name, member, Signature(member, skip_self=True)
            )
        if q_name := getattr(member, "__saga_query__", None):
            queries[q_name] = HandlerDefinition(q_name, member, Signature(member, skip_self=True))
    return WorkflowDefinition(
        name=name or cls.__name__,
        cls=cls,
        run_fn=run_fn,
        signature=Signature(run_fn, skip_self=True),
        signals=signals,
        queries=queries,
    )


def definition_of(obj: Any) -> WorkflowDefinition:
    """The definition behind a workflow class, its run method, or a workflow function."""
    definition = getattr(obj, _ATTR, None)
    if definition is None:
        func = getattr(obj, "__func__", None)
        definition = getattr(func, _ATTR, None)
    if not isinstance(definition, WorkflowDefinition):
        raise TypeError(f"{obj!r} is not a workflow; decorate it with @workflow.defn")
    return definition


# --- inside workflow code ------------------------------------------------------------
def _instance() -> WorkflowInstance:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, WorkflowLoop):
        raise SagaError("this function can only be called from workflow code")
    if loop.is_closed():
        raise SagaError("this workflow instance was disposed; its code cannot go on")
    return loop.instance


def in_workflow() -> bool:
    """True when called from workflow code."""
    try:
        return isinstance(asyncio.get_running_loop(), WorkflowLoop)
    except RuntimeError:
        return False


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def schedule_activity(
    fn_or_name: Callable[..., Awaitable[Any]] | str,
    args: tuple[Any, ...],
    *,
    queue: str | None,
    start_to_close_timeout: timedelta | float | None,
    schedule_to_close_timeout: timedelta | float | None,
    heartbeat_timeout: timedelta | float | None,
    retry_policy: RetryPolicy | None,
    compensation: bool = False,
) -> asyncio.Future[Any]:
    """Record an ActivityScheduled command and return the future of its result."""
    inst = _instance()
    definition: ActivityDefinition | None = None
    if isinstance(fn_or_name, str):
        name = fn_or_name
    else:
        definition = activity_definition_of(fn_or_name)
        name = definition.name
    chosen_queue = queue or (definition.queue if definition else None)
    if chosen_queue is None:
        raise InvalidArgumentsError(
            f"activity {name!r}", "started by name, so it needs queue=… to know where to go"
        )
    encoded = definition.signature.encode_args(args) if definition else list(args)
    command = ActivityScheduled(
        seq=inst.next_seq(),
        activity=name,
        queue=chosen_queue,
        args=encoded,
        start_to_close_timeout=_seconds(start_to_close_timeout),
        schedule_to_close_timeout=_seconds(schedule_to_close_timeout),
        heartbeat_timeout=_seconds(heartbeat_timeout),
        retry_policy=retry_policy or RetryPolicy(),
        compensation=compensation,
    )
    return inst.schedule_activity(command, definition.signature if definition else None)


async def execute_activity(
    fn_or_name: Callable[..., Awaitable[T]] | str,
    *args: Any,
    queue: str | None = None,
    start_to_close_timeout: timedelta | float | None = None,
    schedule_to_close_timeout: timedelta | float | None = None,
    heartbeat_timeout: timedelta | float | None = None,
    retry_policy: RetryPolicy | None = None,
) -> T:
    """Run an activity durably and return its result.

    The step is recorded before it is dispatched, retried per ``retry_policy``
    (default: Temporal's, unlimited attempts), and never run again once it succeeded.
    Raises :class:`saga.ActivityError` when it fails for good.
    """
    future = schedule_activity(
        fn_or_name,
        args,
        queue=queue,
        start_to_close_timeout=start_to_close_timeout,
        schedule_to_close_timeout=schedule_to_close_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=retry_policy,
    )
    result: T = await future
    return result


async def sleep(duration: timedelta | float) -> None:
    """Sleep on a durable timer: it survives restarts and fires once, at its due time."""
    seconds = _seconds(duration) or 0.0
    _instance()
    await asyncio.sleep(seconds)


async def wait_condition(
    predicate: Callable[[], bool],
    *,
    timeout: timedelta | float | None = None,  # noqa: ASYNC109 - the API's (and Temporal's) name
) -> None:
    """Wait until ``predicate()`` is true; raises ``asyncio.TimeoutError`` after ``timeout``."""
    future = _instance().wait_condition(predicate)
    if timeout is None:
        await future
    else:
        await asyncio.wait_for(future, _seconds(timeout))


gather = asyncio.gather


# --- child workflows and continue-as-new -------------------------------------------------
class ChildWorkflowHandle(Generic[T]):
    """A child workflow that started: ``await handle`` (or ``handle.result()``) for its result.

    The child is a workflow of its own (own id, history and row), linked to this one by
    ``ChildWorkflow*`` events. Awaiting it raises :class:`saga.errors.ChildWorkflowError`
    when it did not complete; it has then already run its own compensations.
    """

    def __init__(self, inst: WorkflowInstance, child: PendingChild, run_id: str) -> None:
        self._inst = inst
        self._child = child
        self.id = child.workflow_id
        """The child's workflow id."""
        self.first_run_id = run_id
        """The child's first run (a later one, after continue-as-new, keeps the id)."""

    async def result(self) -> T:
        """Wait for the child to end; its result, or ChildWorkflowError.

        If the waiting task is cancelled (this workflow is being cancelled, say), the
        child is asked to cancel too, and the wait goes on until it has ended (and
        compensated); then the cancellation goes on here.
        """
        value: T = await _child_wait(self._inst, self._child, self._child.result)
        return value

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()

    def cancel(self) -> None:
        """Ask the child to cancel; its outcome (CANCELLED, usually) still comes back."""
        self._inst.cancel_child(self._child)


async def _child_wait(
    inst: WorkflowInstance, child: PendingChild, future: asyncio.Future[Any]
) -> Any:
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        inst.cancel_child(child)  # (nothing to do if it has ended)
        while not child.result.done():  # the child's end (and compensations) first
            try:
                await asyncio.shield(child.result)
            except asyncio.CancelledError:
                continue
            except BaseException:
                break  # its failure: this task is being cancelled all the same
        raise


@overload
async def start_child_workflow(
    workflow: Callable[..., Awaitable[T]],
    *args: Any,
    id: str | None = None,
    execution_timeout: timedelta | float | None = None,
) -> ChildWorkflowHandle[T]: ...
@overload
async def start_child_workflow(
    workflow: type | str,
    *args: Any,
    id: str | None = None,
    execution_timeout: timedelta | float | None = None,
) -> ChildWorkflowHandle[Any]: ...
async def start_child_workflow(
    workflow: Any,
    *args: Any,
    id: str | None = None,
    execution_timeout: timedelta | float | None = None,
) -> ChildWorkflowHandle[Any]:
    """Start a child workflow and return its handle once it runs.

    ``workflow`` is a workflow class, its run method, a workflow function, or a type
    name (then the arguments are not checked here). ``id`` defaults to one derived
    from this workflow's id. Raises WorkflowAlreadyStartedError if ``id`` is running.

    Rule for sagas: a child compensates its own steps when it fails or is cancelled,
    *before* its parent hears of it; a child that completed is undone by its parent
    only through a compensation the parent registered, for instance another child
    workflow: ``saga.add_compensation(partial(workflow.execute_child_workflow,
    id=...), Refund.run, x)``.
    Cancelling the parent cancels the children it waits for; children still running
    when the parent closes are asked to cancel.
    """
    inst = _instance()
    definition: WorkflowDefinition | None = None
    if isinstance(workflow, str):
        name = workflow
        try:
            encoded = [to_json_value(a) for a in args]
        except Exception as exc:
            raise InvalidArgumentsError(f"workflow {name}", str(exc)) from exc
    else:
        definition = definition_of(workflow)
        name = definition.name
        encoded = definition.signature.encode_args(args)
    seq = inst.next_seq()
    run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"saga:{inst.run_id}:child:{seq}"))
    command = ChildWorkflowInitiated(
        seq=seq,
        workflow_id=id or f"{inst.workflow_id}/{name}-{run_id[:8]}",
        workflow_type=name,
        run_id=run_id,
        args=encoded,
        execution_timeout=_seconds(execution_timeout),
    )
    child = inst.start_child(command, definition.signature if definition else None)
    started = await _child_wait(inst, child, child.started)
    return ChildWorkflowHandle(inst, child, started)


@overload
async def execute_child_workflow(
    workflow: Callable[..., Awaitable[T]],
    *args: Any,
    id: str | None = None,
    execution_timeout: timedelta | float | None = None,
) -> T: ...
@overload
async def execute_child_workflow(
    workflow: type | str,
    *args: Any,
    id: str | None = None,
    execution_timeout: timedelta | float | None = None,
) -> Any: ...
async def execute_child_workflow(
    workflow: Any,
    *args: Any,
    id: str | None = None,
    execution_timeout: timedelta | float | None = None,
) -> Any:
    """Start a child workflow and wait for its result (see :func:`start_child_workflow`).

    Example:
        >>> receipt = await workflow.execute_child_workflow(
        ...     ChargeCustomer.run, order, id=f"charge-{order.id}"
        ... )
    """
    handle = await start_child_workflow(workflow, *args, id=id, execution_timeout=execution_timeout)
    return await handle


def continue_as_new(*args: Any) -> NoReturn:
    """End this run and start a fresh one, same workflow id, new run id, with ``args``.

    The history starts again from ``WorkflowStarted``, so a workflow that loops for
    ever (a subscription, a poller) stays cheap to replay: carry its state in ``args``.
    Do it when ``workflow.info().history_length`` passes a few thousand events
    (``describe()`` warns past ``HISTORY_WARNING_THRESHOLD``). Signals not yet applied
    stay for the next run; children still running are asked to cancel.
    """
    inst = _instance()
    definition = inst.definition
    raise ContinueAsNewError(definition.signature.encode_args(args))


def now() -> datetime:
    """The workflow's current time: the time of the event being processed (UTC)."""
    return _instance().now()


def info() -> WorkflowInfo:
    """Id, run id, type and start time of the running workflow."""
    return _instance().info()


def random() -> float:
    """A deterministic random float in [0, 1): the same on every replay."""
    return _instance().random.random()


def uuid4() -> uuid.UUID:
    """A deterministic UUID: the same on every replay."""
    return uuid.UUID(int=_instance().random.getrandbits(128), version=4)


def patched(patch_id: str) -> bool:
    """True on the new code path; False when replaying history made before the patch."""
    return _instance().patched(patch_id)


def current_instance() -> WorkflowInstance:
    """The running instance (for saga's own helpers such as compensation)."""
    return _instance()
