"""The client: start workflows, wait for results, inspect and steer them.

Example:
    >>> client = await Client.connect(database_url=..., broker_url=...)
    >>> handle = await client.start_workflow(TripBooking.run, "alice", id="trip-alice")
    >>> await handle.result()
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from saga.config import Settings
from saga.converter import to_json_value
from saga.errors import (
    InvalidArgumentsError,
    QueryFailedError,
    QueryTimeoutError,
    UnknownWorkflowTypeError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from saga.failure import FailureInfo, from_failure
from saga.history import (
    ActivityAttemptFailed,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    HistoryEvent,
    WorkflowStatus,
)
from saga.messages import QueryRequest, ResultMessage, WorkflowClosedNotice
from saga.store.base import Store, WorkflowRecord, open_store
from saga.tracing import Telemetry
from saga.transports.base import Subscription, Transport, open_transport
from saga.workflow import WorkflowDefinition, definition_of

DEFAULT_SHARDS = 64
HISTORY_WARNING_THRESHOLD = 10_000
"""Events in one run past which ``describe()`` suggests continue-as-new."""
QUERY_TIMEOUT = 10.0
"""Seconds a query waits for a coordinator's answer by default."""


def shard_of(workflow_id: str, shards: int = DEFAULT_SHARDS) -> int:
    """The shard a workflow id hashes into (stable across processes and versions)."""
    return zlib.crc32(workflow_id.encode()) % shards


PENDING_STATUSES = frozenset({"SCHEDULED", "RETRYING"})
"""Step statuses of a step that has not ended yet."""


@dataclass(frozen=True)
class StepInfo:
    """One step (or compensation) as ``describe()`` shows it."""

    seq: int
    activity: str
    queue: str
    args: list[Any]
    compensation: bool
    status: str  # SCHEDULED, RETRYING, COMPLETED, FAILED, CANCELLED
    attempts: int
    scheduled_at: datetime
    closed_at: datetime | None
    result: Any = None
    error: FailureInfo | None = None


@dataclass(frozen=True)
class WorkflowDescription:
    """What ``handle.describe()`` and ``client.list_workflows()`` return."""

    id: str
    run_id: str
    type: str
    status: WorkflowStatus
    start_time: datetime
    close_time: datetime | None
    input: list[Any]
    result: Any
    error: FailureInfo | None
    history_length: int
    stuck_reason: str | None
    steps: list[StepInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def compensations(self) -> list[StepInfo]:
        """The compensation steps, in the order they were scheduled."""
        return [s for s in self.steps if s.compensation]

    @property
    def pending_steps(self) -> list[StepInfo]:
        """Steps not finished yet."""
        return [s for s in self.steps if s.status in PENDING_STATUSES]

    @classmethod
    def from_record(
        cls, rec: WorkflowRecord, events: Sequence[HistoryEvent] = ()
    ) -> WorkflowDescription:
        """Build from a workflows row and (optionally) its history."""
        warnings = []
        if rec.history_length > HISTORY_WARNING_THRESHOLD:
            warnings.append(f"history has {rec.history_length} events; consider continue-as-new")
        if rec.stuck_reason:
            warnings.append(f"stuck: {rec.stuck_reason}")
        return cls(
            id=rec.workflow_id,
            run_id=rec.run_id,
            type=rec.workflow_type,
            status=rec.status,
            start_time=rec.start_time,
            close_time=rec.close_time,
            input=rec.input,
            result=rec.result,
            error=rec.error,
            history_length=rec.history_length,
            stuck_reason=rec.stuck_reason,
            steps=_steps(events),
            warnings=warnings,
        )


def _steps(events: Sequence[HistoryEvent]) -> list[StepInfo]:
    steps: dict[int, dict[str, Any]] = {}
    for e in events:
        a = e.attributes
        if isinstance(a, ActivityScheduled):
            steps[a.seq] = {
                "seq": a.seq,
                "activity": a.activity,
                "queue": a.queue,
                "args": a.args,
                "compensation": a.compensation,
                "status": "SCHEDULED",
                "attempts": 1,
                "scheduled_at": e.timestamp,
                "closed_at": None,
            }
        elif isinstance(a, ActivityAttemptFailed) and a.seq in steps:
            steps[a.seq].update(status="RETRYING", attempts=a.attempt + 1, error=a.failure)
        elif isinstance(a, ActivityCompleted) and a.seq in steps:
            steps[a.seq].update(
                status="COMPLETED",
                attempts=a.attempt,
                closed_at=e.timestamp,
                result=a.result,
                error=None,
            )
        elif isinstance(a, ActivityFailed) and a.seq in steps:
            steps[a.seq].update(
                status="FAILED", attempts=a.attempt, closed_at=e.timestamp, error=a.failure
            )
        elif isinstance(a, ActivityCancelRequested) and a.seq in steps:
            steps[a.seq].update(status="CANCELLED", closed_at=e.timestamp)
    return [StepInfo(**s) for s in steps.values()]


def _json_args(target: str, args: Sequence[Any]) -> list[Any]:
    try:
        return [to_json_value(a) for a in args]
    except Exception as exc:
        raise InvalidArgumentsError(target, str(exc)) from exc


def _signal_payload(
    definition: WorkflowDefinition | None, name: str, args: Sequence[Any]
) -> dict[str, Any]:
    """The inbox payload of a signal, checked against the definition when there is one.

    The name and the number of arguments are checked here; whether each value fits
    its parameter is the workflow's to decide (one that does not fit is recorded, then
    dropped with a warning, never leaving the workflow stuck).
    """
    encoded = [to_json_value(a) for a in args]  # PayloadError if it cannot be JSON
    if definition is None:
        return {"name": name, "args": encoded}
    handler = definition.signals.get(name)
    if handler is None:
        known = ", ".join(sorted(definition.signals)) or "none"
        raise InvalidArgumentsError(
            f"workflow {definition.name}", f"no signal named {name!r} (known: {known})"
        )
    handler.signature.check_arity(len(encoded))
    return {"name": name, "args": encoded}


def _outcome(
    workflow_id: str, status: WorkflowStatus, result: Any, error: FailureInfo | None
) -> Any:
    """A closed run's result, or its failure raised."""
    if status is WorkflowStatus.COMPLETED:
        return result
    cause = from_failure(error) if error is not None else None
    raise WorkflowFailureError(workflow_id, status.value, cause)


class WorkflowHandle:
    """A reference to one workflow by id."""

    def __init__(
        self,
        client: Client,
        workflow_id: str,
        run_id: str | None = None,
        *,
        closed: asyncio.Future[WorkflowClosedNotice] | None = None,
    ) -> None:
        self.client = client
        self.id = workflow_id
        self.run_id = run_id
        # Set by start_workflow, which listens for the close before it wakes the coordinator.
        self._closed = closed

    async def _record(self) -> WorkflowRecord:
        rec = await self.client.store.get_workflow(self.id)
        if rec is None:
            raise WorkflowNotFoundError(self.id)
        return rec

    async def result(self, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - public API
        """Wait for the workflow to end; its result, or WorkflowFailureError with the cause."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        poll = 0.25  # close notices wake us at once; polling is only the fallback
        # A handle fresh from start_workflow has listened since before the start: no
        # notice can have gone by, so the first look at the database can wait.
        waiter, self._closed = self._closed, None
        while True:
            if waiter is None:
                waiter = self.client._waiter(self.id)
                rec = await self._record()
                if rec.status.is_closed:
                    return _outcome(self.id, rec.status, rec.result, rec.error)
            wait = poll
            if deadline is not None:
                wait = min(wait, deadline - asyncio.get_running_loop().time())
                if wait <= 0:
                    raise TimeoutError(f"workflow {self.id!r} still running after {timeout}s")
            try:
                async with asyncio.timeout(wait):
                    notice = await asyncio.shield(waiter)
            except TimeoutError:
                poll = min(poll * 2, 2.0)  # notices are best effort: poll as a fallback
            else:
                if notice.outcome and self.run_id in (None, notice.run_id):
                    status = WorkflowStatus(notice.status)
                    return _outcome(self.id, status, notice.result, notice.error)
            waiter = None

    async def describe(self) -> WorkflowDescription:
        """Status, input, result or error, and every step with attempts and timings."""
        rec = await self._record()
        events = await self.client.store.load_history(rec.workflow_id, rec.run_id)
        return WorkflowDescription.from_record(rec, events)

    async def history(self) -> list[HistoryEvent]:
        """Every event of the current run, in order."""
        rec = await self._record()
        return await self.client.store.load_history(rec.workflow_id, rec.run_id)

    async def signal(self, name: str, *args: Any) -> None:
        """Send a signal; recorded in history before the workflow sees it.

        Signals reach the workflow in the order they were sent, and survive restarts
        (they wait in the database). Raises WorkflowNotFoundError for an unknown or
        closed workflow, and, when this client was given the workflow's definition,
        InvalidArgumentsError for a signal it does not have or a wrong number of
        arguments; PayloadError for arguments that cannot be JSON.
        """
        definition = await self._known_definition()
        payload = _signal_payload(definition, name, args)
        await self.client._send(self.id, "signal", payload)

    async def query(self, name: str, *args: Any, timeout: float = QUERY_TIMEOUT) -> Any:  # noqa: ASYNC109
        """Ask a ``@workflow.query`` handler; answered from the workflow's current state.

        A coordinator answers, from its live instance or by replaying the history (a
        closed workflow can be queried too). Nothing is written and nothing changes.

        Raises:
            WorkflowNotFoundError: No workflow with this id.
            InvalidArgumentsError: No query of that name, or arguments that do not fit.
            QueryFailedError: The handler raised, or the workflow cannot run (stuck).
            QueryTimeoutError: No coordinator answered within ``timeout`` seconds.
        """
        rec = await self._record()
        definition = self.client._definitions.get(rec.workflow_type)
        handler = None
        if definition is not None:
            handler = definition.queries.get(name)
            if handler is None:
                known = ", ".join(sorted(definition.queries)) or "none"
                raise InvalidArgumentsError(
                    f"workflow {definition.name}", f"no query named {name!r} (known: {known})"
                )
            encoded = handler.signature.encode_args(args)
            handler.signature.decode_args(encoded)
        else:
            encoded = _json_args(f"query {name!r}", args)
        request = QueryRequest(
            request_id=uuid.uuid4().hex, workflow_id=self.id, query=name, args=encoded
        )
        try:
            reply = await self.client.transport.request_query(request, timeout=timeout)
        except TimeoutError:
            raise QueryTimeoutError(self.id, name, timeout) from None
        if reply.ok:
            return (
                reply.result if handler is None else handler.signature.decode_result(reply.result)
            )
        if reply.error_type == "not_found":
            raise WorkflowNotFoundError(self.id)
        if reply.error_type == "invalid_arguments":
            target = f"workflow {definition.name if definition else rec.workflow_type}"
            raise InvalidArgumentsError(target, reply.error)
        raise QueryFailedError(self.id, name, reply.error)

    async def _known_definition(self) -> WorkflowDefinition | None:
        """The definition of this workflow's type if the client has it (for checks)."""
        if not self.client._definitions:
            return None
        rec = await self._record()
        if rec.status.is_closed:  # as the inbox would say, before any other complaint
            raise WorkflowNotFoundError(self.id, f"it is {rec.status.value}")
        return self.client._definitions.get(rec.workflow_type)

    async def cancel(self, reason: str = "") -> None:
        """Ask the workflow to cancel: its code sees ``asyncio.CancelledError``."""
        await self.client._send(self.id, "cancel", {"reason": reason})

    async def terminate(self, reason: str = "") -> None:
        """End the workflow now, without running any more of its code."""
        await self.client._send(self.id, "terminate", {"reason": reason})


class Client:
    """Starts and steers workflows through the database and the broker."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        workflows: Sequence[Any] = (),
        owns_connections: bool = False,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.telemetry = telemetry or Telemetry()
        self._definitions: dict[str, WorkflowDefinition] = {}
        for wf in workflows:
            d = definition_of(wf)
            self._definitions[d.name] = d
        self._owns = owns_connections
        # Weak: a waiter lives as long as someone waits on it (or holds a fresh handle).
        self._waiters: weakref.WeakValueDictionary[str, asyncio.Future[WorkflowClosedNotice]] = (
            weakref.WeakValueDictionary()
        )
        self._notices: Subscription | None = None

    @classmethod
    async def connect(
        cls,
        *,
        database_url: str | None = None,
        broker_url: str | None = None,
        workflows: Sequence[Any] = (),
    ) -> Client:
        """Connect to the database and broker named (or taken from ``SAGA_*`` variables)."""
        settings = Settings.resolve(database_url=database_url, broker_url=broker_url)
        store = open_store(settings.database_url)
        transport = open_transport(settings.broker_url)
        await store.connect()
        try:
            await transport.connect()
        except BaseException:
            await store.aclose()
            raise
        client = cls(store, transport, workflows=workflows, owns_connections=True)
        await client._subscribe()
        return client

    async def _subscribe(self) -> None:
        self._notices = await self.transport.subscribe_notices(self._on_notice)

    async def _on_notice(self, notice: WorkflowClosedNotice) -> None:
        waiter = self._waiters.pop(notice.workflow_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(notice)

    def _waiter(self, workflow_id: str) -> asyncio.Future[WorkflowClosedNotice]:
        waiter = self._waiters.get(workflow_id)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[workflow_id] = waiter
        return waiter

    async def aclose(self) -> None:
        """Close connections this client opened."""
        if self._notices is not None:
            await self._notices.cancel()
            self._notices = None
        if self._owns:
            await self.transport.aclose()
            await self.store.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _definition(self, workflow: Any) -> tuple[str, WorkflowDefinition | None]:
        if isinstance(workflow, str):
            if workflow in self._definitions:
                return workflow, self._definitions[workflow]
            known = await self.store.known_workflow_types()
            if workflow not in known:
                raise UnknownWorkflowTypeError(workflow, known)
            return workflow, None
        d = definition_of(workflow)
        return d.name, d

    async def start_workflow(
        self,
        workflow: Any,
        *args: Any,
        id: str | None = None,
        execution_timeout: timedelta | float | None = None,
        start_signal: str | None = None,
        start_signal_args: Sequence[Any] = (),
    ) -> WorkflowHandle:
        """Start a workflow (class, run method, function, or type name) with ``args``.

        Raises WorkflowAlreadyStartedError when ``id`` is running, UnknownWorkflowTypeError
        or InvalidArgumentsError before anything is written.

        With ``start_signal`` (signal-with-start): if ``id`` is running, it is only sent
        that signal (and its handle returned); otherwise the workflow is started and the
        signal is its first input after ``WorkflowStarted``, both in one transaction.
        """
        name, definition = await self._definition(workflow)
        if definition is not None:
            encoded = definition.signature.encode_args(args)
            definition.signature.decode_args(encoded)  # validate types now, not in the coordinator
        else:
            try:
                encoded = [to_json_value(a) for a in args]
            except Exception as exc:
                raise InvalidArgumentsError(f"workflow {name}", str(exc)) from exc
        workflow_id = id or f"{name}-{uuid.uuid4()}"
        timeout = (
            execution_timeout.total_seconds()
            if isinstance(execution_timeout, timedelta)
            else execution_timeout
        )
        with self.telemetry.start_workflow(name, workflow_id) as trace:
            record = WorkflowRecord(
                workflow_id=workflow_id,
                run_id=str(uuid.uuid4()),
                workflow_type=name,
                status=WorkflowStatus.RUNNING,
                version=0,
                shard=shard_of(workflow_id, await self.store.shard_count()),
                input=encoded,
                start_time=datetime.now(UTC),
                trace_context=trace,
                execution_timeout=timeout,
            )
            if start_signal is not None:
                payload = _signal_payload(definition, start_signal, start_signal_args)
                return await self._signal_with_start(record, payload)
            closed = self._waiter(workflow_id)
            await self.store.create_workflow(record)
        await self._wake(workflow_id, "start")
        return WorkflowHandle(self, workflow_id, record.run_id, closed=closed)

    async def _signal_with_start(
        self, record: WorkflowRecord, payload: dict[str, Any]
    ) -> WorkflowHandle:
        workflow_id = record.workflow_id
        while True:
            try:
                await self.store.create_workflow_with_inbox(record, [("signal", payload)])
            except WorkflowAlreadyStartedError as running:
                try:
                    await self.store.add_inbox(workflow_id, "signal", payload)
                except WorkflowNotFoundError:
                    continue  # it closed in between: start it after all
                await self._wake(workflow_id, "inbox")
                return WorkflowHandle(self, workflow_id, running.run_id)
            await self._wake(workflow_id, None)  # start, then the inbox
            return WorkflowHandle(self, workflow_id, record.run_id)

    def get_workflow_handle(self, workflow_id: str) -> WorkflowHandle:
        """A handle to an existing workflow."""
        return WorkflowHandle(self, workflow_id)

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | str | None = None,
        type: str | None = None,
        id_prefix: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[WorkflowDescription]:
        """Every matching workflow, newest first (steps are not loaded)."""
        wanted = WorkflowStatus(status) if status is not None else None
        cursor: str | None = None
        while True:
            page = await self.store.list_workflows(
                status=wanted,
                workflow_type=type,
                id_prefix=id_prefix,
                cursor=cursor,
                limit=page_size,
            )
            for rec in page.workflows:
                yield WorkflowDescription.from_record(rec)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _send(self, workflow_id: str, kind: str, payload: dict[str, Any]) -> None:
        await self.store.add_inbox(workflow_id, kind, payload)
        await self._wake(workflow_id, "inbox")

    async def _wake(self, workflow_id: str, reason: Literal["start", "inbox"] | None) -> None:
        # Best effort: if this is lost, the coordinator's sweep finds the work anyway.
        try:
            shard = shard_of(workflow_id, await self.store.shard_count())
            await self.transport.publish_result(
                ResultMessage(kind="wake", workflow_id=workflow_id, wake_reason=reason, shard=shard)
            )
        except Exception:  # noqa: BLE001 - the durable write already happened
            return
