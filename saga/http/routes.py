"""The ``/api`` endpoints: list, describe, history, start, steer, dead letters, cluster."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Path, Query, Response
from pydantic_core import to_jsonable_python

from saga.client import Client, WorkflowDescription, WorkflowHandle
from saga.converter import to_json_value
from saga.history import WorkflowStatus
from saga.http import views
from saga.http.models import (
    TEXT_PATTERN,
    Accepted,
    CancelWorkflow,
    Cluster,
    Counts,
    DeadLetterBody,
    DeadLetters,
    History,
    OutboxState,
    QueryResult,
    QueryWorkflow,
    Redrive,
    Redriven,
    SignalWorkflow,
    Started,
    StartWorkflow,
    TerminateWorkflow,
    WorkflowDetail,
    WorkflowList,
    WorkflowTypes,
)
from saga.http.problems import ApiError, responses
from saga.status import cluster_status
from saga.store.base import WorkflowRecord

OUTBOX_SCAN_LIMIT = 10_000
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"  # what the store's cursors look like (urlsafe base64)

WorkflowId = Annotated[
    str,
    Path(min_length=1, max_length=1000, pattern=TEXT_PATTERN, description="The workflow id."),
]


@dataclass(frozen=True)
class ApiState:
    """What the endpoints work with."""

    client: Client
    jaeger_url: str | None
    trace_service: str
    broker_state: str


def _utc(value: datetime | None, field: str) -> datetime | None:
    """Aware UTC (a time without an offset is taken as UTC)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        detail = f"{field} is out of range"
        raise ApiError(422, "out_of_range", detail, field, where="query") from None


async def _record(client: Client, workflow_id: str) -> WorkflowRecord:
    record = await client.store.get_workflow(workflow_id)
    if record is None:
        raise ApiError(
            404, "workflow_not_found", f"workflow {workflow_id!r} not found", "workflow_id"
        )
    return record


async def _running(client: Client, workflow_id: str) -> WorkflowHandle:
    record = await _record(client, workflow_id)
    if record.status.is_closed:
        raise ApiError(
            409,
            "workflow_closed",
            f"workflow {workflow_id!r} is {record.status.value}",
            "workflow_id",
        )
    return client.get_workflow_handle(workflow_id)


def _accepts(fn: Any, keyword: str) -> bool:
    try:
        return keyword in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _json_args(args: list[Any]) -> list[Any]:
    """Refuse, naming the field, what the store could not write (huge ints, surrogates)."""
    return [to_json_value(a) for a in args]


def build_router(state: ApiState) -> APIRouter:
    """Every ``/api`` route, bound to ``state``."""
    api = APIRouter(prefix="/api")
    client = state.client

    # -- reading ------------------------------------------------------------------------

    @api.get("/workflows", response_model=WorkflowList, tags=["workflows"], responses=responses())
    async def list_workflows(
        status: Annotated[WorkflowStatus | None, Query()] = None,
        type: Annotated[str | None, Query(max_length=200, pattern=TEXT_PATTERN)] = None,
        id_prefix: Annotated[str | None, Query(max_length=500, pattern=TEXT_PATTERN)] = None,
        started_after: Annotated[datetime | None, Query()] = None,
        started_before: Annotated[datetime | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=2000, pattern=CURSOR_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> WorkflowList:
        """Workflows newest first, filtered; page with ``cursor`` = the last ``next_cursor``."""
        try:
            page = await client.store.list_workflows(
                status=status,
                workflow_type=type or None,
                id_prefix=id_prefix or None,
                started_after=_utc(started_after, "started_after"),
                started_before=_utc(started_before, "started_before"),
                cursor=cursor,
                limit=limit,
            )
        except ValueError as exc:  # a cursor the store did not make
            raise ApiError(422, "invalid_cursor", str(exc), "cursor", where="query") from exc
        return WorkflowList(
            workflows=[views.summary(WorkflowDescription.from_record(r)) for r in page.workflows],
            next_cursor=page.next_cursor,
        )

    @api.get("/counts", response_model=Counts, tags=["cluster"], responses=responses())
    async def counts() -> Counts:
        """How many workflows have each status (the console polls this)."""
        by_status = await client.store.count_by_status()
        full = {s.value: by_status.get(s.value, 0) for s in WorkflowStatus}
        return Counts(counts=full, total=sum(full.values()))

    @api.get(
        "/workflow-types", response_model=WorkflowTypes, tags=["workflows"], responses=responses()
    )
    async def workflow_types() -> WorkflowTypes:
        """Workflow types some coordinator registered (what ``start`` accepts)."""
        return WorkflowTypes(types=sorted(await client.store.known_workflow_types()))

    # The id may contain "/" (it is percent-decoded before routing), hence ":path"; the
    # routes with a suffix come first so that ".../history" is not read as an id.
    @api.get(
        "/workflows/{workflow_id:path}/history",
        response_model=History,
        tags=["workflows"],
        responses=responses(404),
    )
    async def history(workflow_id: WorkflowId) -> History:
        """Every event of the current run: the replayable export (``saga replay``)."""
        record = await _record(client, workflow_id)
        events = await client.store.load_history(record.workflow_id, record.run_id)
        return views.history(workflow_id, events)

    # -- steering -----------------------------------------------------------------------

    @api.post(
        "/workflows/{workflow_id:path}/signal",
        response_model=Accepted,
        status_code=202,
        tags=["steering"],
        responses=responses(404, 409),
    )
    async def signal(workflow_id: WorkflowId, body: SignalWorkflow) -> Accepted:
        """Send a signal; it is recorded in history before the workflow sees it."""
        args = _json_args(body.args)
        handle = await _running(client, workflow_id)
        await handle.signal(body.name, *args)
        return Accepted(id=workflow_id, action="signal")

    @api.post(
        "/workflows/{workflow_id:path}/query",
        response_model=QueryResult,
        tags=["steering"],
        responses=responses(400, 404, 409, 501, 504),
    )
    async def query(workflow_id: WorkflowId, body: QueryWorkflow) -> QueryResult:
        """Ask a ``@workflow.query`` handler; 501 if this saga version has no queries."""
        handle = client.get_workflow_handle(workflow_id)
        ask = getattr(handle, "query", None)
        if ask is None or not callable(ask):
            raise ApiError(
                501,
                "queries_unavailable",
                "queries are not available in this version of saga",
                "name",
            )
        args = _json_args(body.args)
        await _record(client, workflow_id)
        options = {"timeout": body.timeout} if _accepts(ask, "timeout") else {}
        result = ask(body.name, *args, **options)
        if inspect.isawaitable(result):
            result = await result
        return QueryResult(result=to_jsonable_python(result, fallback=repr))

    @api.post(
        "/workflows/{workflow_id:path}/cancel",
        response_model=Accepted,
        status_code=202,
        tags=["steering"],
        responses=responses(404, 409),
    )
    async def cancel(
        workflow_id: WorkflowId, body: Annotated[CancelWorkflow | None, Body()] = None
    ) -> Accepted:
        """Ask the workflow to cancel; its code sees CancelledError and compensates."""
        handle = await _running(client, workflow_id)
        await handle.cancel(body.reason if body is not None else "")
        return Accepted(id=workflow_id, action="cancel")

    @api.post(
        "/workflows/{workflow_id:path}/terminate",
        response_model=Accepted,
        status_code=202,
        tags=["steering"],
        responses=responses(404, 409),
    )
    async def terminate(workflow_id: WorkflowId, body: TerminateWorkflow) -> Accepted:
        """End the workflow now; none of its code (compensations included) runs again."""
        handle = await _running(client, workflow_id)
        await handle.terminate(body.reason)
        return Accepted(id=workflow_id, action="terminate")

    @api.get(
        "/workflows/{workflow_id:path}",
        response_model=WorkflowDetail,
        tags=["workflows"],
        responses=responses(404),
    )
    async def describe(workflow_id: WorkflowId) -> WorkflowDetail:
        """Status, input, result or error, every step and compensation, what is pending."""
        record = await _record(client, workflow_id)
        events = await client.store.load_history(record.workflow_id, record.run_id)
        return views.detail(
            record, events, jaeger_url=state.jaeger_url, service=state.trace_service
        )

    @api.post(
        "/workflows",
        response_model=Started,
        status_code=201,
        tags=["steering"],
        responses=responses(400, 409),
    )
    async def start(body: StartWorkflow, response: Response) -> Started:
        """Start a workflow by type name with JSON arguments."""
        handle = await client.start_workflow(
            body.type, *body.args, id=body.id, execution_timeout=body.execution_timeout
        )
        response.headers["Location"] = f"/api/workflows/{quote(handle.id, safe='')}"
        return Started(id=handle.id, run_id=handle.run_id or "")

    # -- operations -----------------------------------------------------------------------

    @api.get(
        "/dead-letters", response_model=DeadLetters, tags=["operations"], responses=responses()
    )
    async def dead_letters(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DeadLetters:
        """Messages the broker could not deliver, left in place (RabbitMQ only)."""
        listing = getattr(client.transport, "dead_letters", None)
        if not callable(listing):
            return DeadLetters(
                supported=False, dead_letters=[], note="this transport keeps no dead-letter queue"
            )
        letters = await listing(limit)
        return DeadLetters(
            supported=True,
            dead_letters=[DeadLetterBody.model_validate(d.model_dump()) for d in letters],
        )

    @api.post(
        "/dead-letters/redrive", response_model=Redriven, tags=["operations"], responses=responses()
    )
    async def redrive(body: Annotated[Redrive | None, Body()] = None) -> Redriven:
        """Send dead letters back to the queues they came from."""
        body = body or Redrive()
        move = getattr(client.transport, "redrive", None)
        if not callable(move):
            return Redriven(supported=False, moved=0)
        return Redriven(supported=True, moved=await move(body.limit, queue=body.queue))

    @api.get("/cluster", response_model=Cluster, tags=["cluster"], responses=responses())
    async def cluster() -> Cluster:
        """Counts by status, outbox backlog, broker state, coordinators and shards."""
        store = client.store
        by_status = await store.count_by_status()
        full = {s.value: by_status.get(s.value, 0) for s in WorkflowStatus}
        rows = await store.outbox(only_unsent=False, limit=OUTBOX_SCAN_LIMIT)
        notes: list[str] = []
        truncated = len(rows) >= OUTBOX_SCAN_LIMIT
        if truncated:
            notes.append(f"the outbox has {OUTBOX_SCAN_LIMIT} rows or more; these are lower bounds")
        coordinators = await cluster_status(store)
        if state.broker_state == "unavailable":
            notes.append(
                "the broker could not be reached: steering is recorded in the "
                "database and picked up by the coordinators' sweep"
            )
        return Cluster(
            counts=full,
            total=sum(full.values()),
            outbox=OutboxState(
                unsent=sum(1 for r in rows if not r.sent), pending=len(rows), truncated=truncated
            ),
            workflow_types=sorted(await store.known_workflow_types()),
            broker=state.broker_state,
            coordinators=coordinators,
            notes=notes,
        )

    return api
