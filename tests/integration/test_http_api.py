"""The HTTP API, endpoint by endpoint, on SQLite and PostgreSQL; then fuzzed from its schema.

The app runs in-process over a WorkflowEnvironment (httpx's ASGI transport); the fuzzing
runs against the same app served by uvicorn in a thread, over TCP, as a client sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from saga.client import WorkflowHandle
from saga.http.app import create_app
from saga.replay import replay_history
from saga.testing import WorkflowEnvironment
from saga.transports.base import Reject
from saga.transports.rabbitmq import RabbitMQTransport
from tests.integration.engine_helpers import eventually
from tests.support.shop import WORKFLOWS, served_console, shop_environment, warehouse

TOKEN = "s3cret-token"
FUZZ_EXAMPLES = 10  # per operation and mode: about 30 s for both databases
JAEGER = "http://jaeger.example:16686"


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[WorkflowEnvironment]:
    warehouse.reset()
    async with shop_environment(database_url) as environment:
        yield environment
        warehouse.open()  # let a blocked activity end before the worker stops


def _client(app: Any, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://saga.test", headers=headers
    )


@pytest.fixture
async def http(env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(create_app(env.client, api_token="", jaeger_url=JAEGER)) as client:
        yield client


async def start(http: httpx.AsyncClient, type_: str, *args: Any, id: str) -> dict[str, Any]:
    response = await http.post("/api/workflows", json={"type": type_, "args": list(args), "id": id})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def order(http: httpx.AsyncClient, id: str, fail_at: str | None = None) -> None:
    await start(http, "PlaceOrder", {"order_id": id, "amount": 42, "fail_at": fail_at}, id=id)


async def wait_status(http: httpx.AsyncClient, id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body = (await http.get(f"/api/workflows/{id}")).json()
        return body if body["status"] == status else None

    return dict(await eventually(reached, what=f"{id} {status}"))


async def wait_pending(http: httpx.AsyncClient, id: str, activity: str) -> dict[str, Any]:
    async def pending() -> dict[str, Any] | None:
        body = (await http.get(f"/api/workflows/{id}")).json()
        return body if any(s["activity"] == activity for s in body["pending_steps"]) else None

    return dict(await eventually(pending, what=f"{activity} pending in {id}"))


def field_of(response: httpx.Response) -> list[str]:
    """The field a 4xx names: FastAPI's loc for 422, ``field`` otherwise."""
    body = response.json()
    if isinstance(body["detail"], list):
        return [".".join(str(p) for p in d["loc"]) for d in body["detail"]]
    return [body["field"]]


# -- auth ----------------------------------------------------------------------------------


async def test_every_api_request_needs_the_token_when_one_is_set(
    env: WorkflowEnvironment,
) -> None:
    app = create_app(env.client, api_token=TOKEN)
    async with _client(app) as anonymous, _client(app, TOKEN) as member:
        for method, path in [
            ("GET", "/api/workflows"),
            ("GET", "/api/workflows/nope"),
            ("GET", "/api/cluster"),
            ("POST", "/api/workflows"),
            ("POST", "/api/workflows/x/cancel"),
            ("GET", "/api/no-such-route"),
        ]:
            response = await anonymous.request(method, path, content=b"{not json")
            assert response.status_code == 401, (method, path)
            assert response.json()["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = await anonymous.get("/api/workflows", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = await anonymous.get("/api/workflows", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401

        assert (await member.get("/api/workflows")).status_code == 200
        assert (await member.get("/api/cluster")).status_code == 200
        # The console's files, its config and the schema are public: they hold no data.
        for path in ("/", "/static/app.js", "/openapi.json", "/healthz"):
            assert (await anonymous.get(path)).status_code == 200, path
        config = (await anonymous.get("/console-config")).json()
        assert config["auth_required"] is True


async def test_token_comes_from_the_environment(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_API_TOKEN", TOKEN)
    async with _client(create_app(env.client)) as anonymous:
        assert (await anonymous.get("/api/counts")).status_code == 401
    monkeypatch.delenv("SAGA_API_TOKEN")
    async with _client(create_app(env.client)) as anonymous:
        assert (await anonymous.get("/api/counts")).status_code == 200


# -- reading ---------------------------------------------------------------------------------


async def test_start_describe_and_history_of_a_compensated_order(
    http: httpx.AsyncClient, env: WorkflowEnvironment
) -> None:
    response = await http.post(
        "/api/workflows",
        json={
            "type": "PlaceOrder",
            "args": [{"order_id": "o-1", "amount": 42, "fail_at": "shipping"}],
            "id": "order-1",
        },
    )
    assert response.status_code == 201
    assert response.headers["location"] == "/api/workflows/order-1"
    assert response.json()["id"] == "order-1"

    wf = await wait_status(http, "order-1", "COMPENSATED")
    assert wf["type"] == "PlaceOrder"
    assert wf["input"] == [{"order_id": "o-1", "amount": 42, "fail_at": "shipping"}]
    assert [(s["activity"], s["compensation"], s["status"]) for s in wf["steps"]] == [
        ("reserve_stock", False, "COMPLETED"),
        ("charge_payment", False, "COMPLETED"),
        ("ship_order", False, "FAILED"),
        ("refund_payment", True, "COMPLETED"),  # newest first
        ("release_stock", True, "COMPLETED"),
    ]
    assert [s["activity"] for s in wf["compensations"]] == ["refund_payment", "release_stock"]
    failed = wf["steps"][2]
    assert failed["error"]["type"] == "ShippingFailed"
    assert failed["error"]["message"] == "no courier today"
    assert failed["attempts"] == 1
    assert wf["error"]["type"] == "ActivityError"
    assert wf["close_time"] is not None
    assert wf["pending_steps"] == [] and wf["pending_timers"] == []
    assert wf["trace_url"] == (
        f"{JAEGER}/search?service=saga-coordinator"
        "&tags=%7B%22saga.workflow_id%22%3A%22order-1%22%7D"
    )

    history = (await http.get("/api/workflows/order-1/history")).json()
    assert history["format_version"] == 1 and history["workflow_id"] == "order-1"
    types = [e["type"] for e in history["events"]]
    assert types[0] == "WorkflowStarted" and types[-1] == "WorkflowFailed"
    assert [e["event_id"] for e in history["events"]] == list(range(1, len(types) + 1))
    assert len(types) == wf["history_length"]
    # The export is the replayable one, as `saga history --json` writes it.
    from saga.history import history_from_json

    workflow_id, events = history_from_json(history)
    replay_history(WORKFLOWS, workflow_id, events)


async def test_list_filters_and_cursor_paging(http: httpx.AsyncClient) -> None:
    for i in range(5):
        await order(http, f"order-{i}")
    await order(http, "refund-1", fail_at="payment")
    await order(http, "refund-2", fail_at="shipping")
    await start(http, "AwaitApproval", "big-order", id="approval-1")
    for id in (f"order-{i}" for i in range(5)):
        await wait_status(http, id, "COMPLETED")
    for id in ("refund-1", "refund-2"):
        await wait_status(http, id, "COMPENSATED")

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/api/workflows", params=params)).json()
        pages += 1
        seen += [w["id"] for w in page["workflows"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 8
    assert seen[0] == "approval-1"  # newest first

    async def ids(**params: Any) -> list[str]:
        response = await http.get("/api/workflows", params=params)
        assert response.status_code == 200, response.text
        return sorted(w["id"] for w in response.json()["workflows"])

    assert await ids(status="COMPENSATED") == ["refund-1", "refund-2"]
    assert await ids(status="RUNNING") == ["approval-1"]
    assert await ids(type="AwaitApproval") == ["approval-1"]
    assert await ids(id_prefix="refund-") == ["refund-1", "refund-2"]
    assert await ids(id_prefix="refund-", status="COMPLETED") == []
    assert await ids(type="PlaceOrder", status="COMPLETED") == [f"order-{i}" for i in range(5)]
    now = datetime.now(UTC)
    assert len(await ids(started_after=(now - timedelta(hours=1)).isoformat())) == 8
    assert await ids(started_after=(now + timedelta(hours=1)).isoformat()) == []
    assert await ids(started_before=(now - timedelta(hours=1)).isoformat()) == []
    assert len(await ids(started_before="2999-01-01T00:00:00")) == 8  # naive: taken as UTC

    rows = (await http.get("/api/workflows", params={"status": "COMPENSATED"})).json()
    assert all(
        "PaymentDeclined" in r["error_message"] or "ShippingFailed" in r["error_message"]
        for r in rows["workflows"]
    )

    counts = (await http.get("/api/counts")).json()
    assert counts["counts"]["COMPLETED"] == 5
    assert counts["counts"]["COMPENSATED"] == 2
    assert counts["counts"]["RUNNING"] == 1
    assert counts["counts"]["TIMED_OUT"] == 0
    assert counts["total"] == 8
    types = (await http.get("/api/workflow-types")).json()["types"]
    assert types == ["AwaitApproval", "PackOrder", "PlaceOrder", "SyncInventory"]


# -- steering --------------------------------------------------------------------------------


async def test_pending_timer_query_and_signal(http: httpx.AsyncClient) -> None:
    await start(http, "AwaitApproval", "o-7", id="approval-7")

    async def timer_pending() -> dict[str, Any] | None:
        body = (await http.get("/api/workflows/approval-7")).json()
        return body if body["pending_timers"] else None

    wf = await eventually(timer_pending, what="the approval timer")
    [timer] = wf["pending_timers"]
    assert timer["duration"] == 3600
    assert datetime.fromisoformat(timer["fire_at"]) > datetime.now(UTC) + timedelta(minutes=59)

    query = await http.post("/api/workflows/approval-7/query", json={"name": "state"})
    queries = hasattr(WorkflowHandle, "query")
    if queries:
        assert query.status_code == 200, query.text
        assert query.json() == {"result": "waiting"}
        unknown = await http.post("/api/workflows/approval-7/query", json={"name": "mood"})
        assert unknown.status_code == 422 and field_of(unknown) == ["body.name"]
        assert "state" in unknown.json()["detail"][0]["msg"]  # it says what is known
    else:
        assert query.status_code == 501
        assert query.json()["code"] == "queries_unavailable"
        assert "not available" in query.json()["detail"]

    typo = await http.post("/api/workflows/approval-7/signal", json={"name": "aprove"})
    assert typo.status_code == 422 and field_of(typo) == ["body.name"]
    signal = await http.post(
        "/api/workflows/approval-7/signal", json={"name": "approve", "args": ["bob"]}
    )
    assert signal.status_code == 202
    assert signal.json() == {"id": "approval-7", "action": "signal", "accepted": True}
    done = await wait_status(http, "approval-7", "COMPLETED")
    assert done["result"] == "o-7 approved by bob"
    if queries:  # a closed saga answers from its history
        query = await http.post("/api/workflows/approval-7/query", json={"name": "state"})
        assert query.json() == {"result": "approved"}
    history = (await http.get("/api/workflows/approval-7/history")).json()
    signalled = [e for e in history["events"] if e["type"] == "WorkflowSignaled"]
    assert signalled[0]["attributes"] == {"name": "approve", "args": ["bob"]}

    again = await http.post("/api/workflows/approval-7/signal", json={"name": "approve"})
    assert again.status_code == 409
    assert again.json()["code"] == "workflow_closed"


async def test_cancel_a_running_saga_runs_its_compensations(http: httpx.AsyncClient) -> None:
    await start(http, "PackOrder", "o-9", id="pack-9")
    wf = await wait_pending(http, "pack-9", "wait_for_warehouse")
    assert wf["status"] == "RUNNING"

    response = await http.post("/api/workflows/pack-9/cancel", json={"reason": "customer"})
    assert response.status_code == 202
    wf = await wait_status(http, "pack-9", "CANCELLED")
    assert [s["activity"] for s in wf["compensations"]] == ["release_stock"]
    assert wf["pending_steps"] == []
    history = (await http.get("/api/workflows/pack-9/history")).json()
    [requested] = [e for e in history["events"] if e["type"] == "WorkflowCancelRequested"]
    assert requested["attributes"]["reason"] == "customer"

    # A body is optional; a closed saga refuses.
    again = await http.post("/api/workflows/pack-9/cancel")
    assert again.status_code == 409
    assert field_of(again) == ["workflow_id"]


async def test_terminate_needs_a_reason_and_runs_no_compensation(
    http: httpx.AsyncClient,
) -> None:
    await start(http, "PackOrder", "o-10", id="pack-10")
    await wait_pending(http, "pack-10", "wait_for_warehouse")

    no_reason = await http.post("/api/workflows/pack-10/terminate", json={})
    assert no_reason.status_code == 422
    assert field_of(no_reason) == ["body.reason"]
    blank = await http.post("/api/workflows/pack-10/terminate", json={"reason": ""})
    assert blank.status_code == 422

    response = await http.post("/api/workflows/pack-10/terminate", json={"reason": "fraud"})
    assert response.status_code == 202
    wf = await wait_status(http, "pack-10", "TERMINATED")
    assert wf["compensations"] == []


async def test_a_retrying_step_shows_its_attempts_error_and_next_attempt(
    http: httpx.AsyncClient,
) -> None:
    await start(http, "SyncInventory", "sku-42", id="sync-1")

    async def retrying() -> dict[str, Any] | None:
        body = (await http.get("/api/workflows/sync-1")).json()
        return body if body["steps"] and body["steps"][0]["status"] == "RETRYING" else None

    wf = await eventually(retrying, what="a retrying step")
    [step] = wf["pending_steps"]
    assert step["activity"] == "sync_inventory" and step["attempts"] == 2
    assert step["error"]["type"] == "Unavailable"
    assert step["error"]["message"] == "inventory service unavailable for sku-42"
    next_attempt = datetime.fromisoformat(step["next_attempt_at"])
    assert next_attempt > datetime.now(UTC) + timedelta(minutes=9)
    assert wf["pending_timers"] == []  # retries are not workflow timers
    ended = await http.post("/api/workflows/sync-1/terminate", json={"reason": "test over"})
    assert ended.status_code == 202
    await wait_status(http, "sync-1", "TERMINATED")


# -- bad input and unknown ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/workflows/no-such-order", None),
        ("GET", "/api/workflows/no-such-order/history", None),
        ("POST", "/api/workflows/no-such-order/signal", {"name": "approve"}),
        ("POST", "/api/workflows/no-such-order/cancel", {}),
        ("POST", "/api/workflows/no-such-order/terminate", {"reason": "x"}),
        ("GET", "/api/workflows/a%2Fb%2Fc", None),
    ],
)
async def test_unknown_id_is_404_json(
    http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "workflow_not_found"
    assert response.json()["field"] == "workflow_id"


async def test_query_of_an_unknown_id(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/workflows/no-such-order/query", json={"name": "state"})
    assert response.status_code == (404 if hasattr(WorkflowHandle, "query") else 501)


async def test_bad_start_requests_name_the_field(http: httpx.AsyncClient) -> None:
    async def post(body: Any) -> httpx.Response:
        return await http.post("/api/workflows", json=body)

    unknown = await post({"type": "NoSuchWorkflow", "args": []})
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_workflow_type"
    assert field_of(unknown) == ["type"]
    assert "PlaceOrder" in unknown.json()["detail"]  # it says what is known

    arity = await post({"type": "PlaceOrder", "args": [1, 2]})
    assert arity.status_code == 422 and field_of(arity) == ["body.args"]
    shape = await post({"type": "PlaceOrder", "args": [{"order_id": 1}]})
    assert shape.status_code == 422 and field_of(shape) == ["body.args"]
    huge = await post({"type": "AwaitApproval", "args": [2**80]})
    assert huge.status_code == 422 and field_of(huge) == ["body.args"]

    assert field_of(await post({"args": []})) == ["body.type"]
    assert field_of(await post({"type": ""})) == ["body.type"]
    assert field_of(await post({"type": "PlaceOrder", "args": "x"})) == ["body.args"]
    assert field_of(await post({"type": "PlaceOrder", "colour": "red"})) == ["body.colour"]
    assert field_of(await post({"type": "PlaceOrder", "id": "a\x00b"})) == ["body.id"]
    assert field_of(await post({"type": "PlaceOrder", "execution_timeout": -1})) == [
        "body.execution_timeout"
    ]
    not_json = await http.post(
        "/api/workflows", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    # Values JSON allows in a request but not in an answer are refused, never echoed.
    for raw, field in [
        (rb'{"type": "\ud800"}', "body.type"),
        (rb'{"type": NaN}', "body.type"),
        (rb'{"type": "AwaitApproval", "args": ["\udfff"]}', "body.args"),
        (b"\xff\xfe", "body"),
    ]:
        odd = await http.post(
            "/api/workflows", content=raw, headers={"content-type": "application/json"}
        )
        assert odd.status_code == 422, raw
        assert field_of(odd)[0].startswith(field), raw

    await start(http, "AwaitApproval", "o-1", id="dup-1")
    dup = await post({"type": "AwaitApproval", "args": ["o-1"], "id": "dup-1"})
    assert dup.status_code == 409
    assert dup.json()["code"] == "workflow_already_started"
    assert field_of(dup) == ["id"]


async def test_bad_list_parameters_name_the_field(http: httpx.AsyncClient) -> None:
    async def listing(**params: Any) -> httpx.Response:
        return await http.get("/api/workflows", params=params)

    for params, field in [
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
        ({"limit": "many"}, "query.limit"),
        ({"status": "SLEEPING"}, "query.status"),
        ({"cursor": "not a cursor!"}, "query.cursor"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "query.cursor"),  # base64, but not ours
        ({"started_after": "yesterday"}, "query.started_after"),
        ({"started_after": "0001-01-01T00:00:00+05:00"}, "query.started_after"),
        ({"id_prefix": "a\x00"}, "query.id_prefix"),
    ]:
        response = await listing(**params)
        assert response.status_code == 422, (params, response.text)
        assert field_of(response) == [field], params

    nul_id = await http.get("/api/workflows/a%00b")
    assert nul_id.status_code == 422
    signal = await http.post("/api/workflows/x/signal", json={"args": []})
    assert field_of(signal) == ["body.name"]
    redrive = await http.post("/api/dead-letters/redrive", json={"limit": 0})
    assert field_of(redrive) == ["body.limit"]


# -- operations --------------------------------------------------------------------------------


async def test_cluster_and_dead_letters_over_the_memory_transport(
    http: httpx.AsyncClient,
) -> None:
    await order(http, "order-1")
    await start(http, "PackOrder", "o-2", id="pack-2")
    await wait_status(http, "order-1", "COMPLETED")
    await wait_pending(http, "pack-2", "wait_for_warehouse")

    cluster = (await http.get("/api/cluster")).json()
    assert cluster["counts"]["COMPLETED"] == 1 and cluster["counts"]["RUNNING"] == 1
    assert cluster["total"] == 2
    assert cluster["outbox"] == {"unsent": 0, "pending": 1, "truncated": False}
    assert cluster["broker"] == "in-process"
    assert cluster["workflow_types"] == [
        "AwaitApproval",
        "PackOrder",
        "PlaceOrder",
        "SyncInventory",
    ]
    status = cluster["coordinators"]
    assert status["shard_count"] == 64 and status["unowned_shards"] == []
    assert [len(c["shards"]) for c in status["coordinators"] if c["alive"]] == [64]

    letters = (await http.get("/api/dead-letters")).json()
    assert letters["supported"] is False and letters["dead_letters"] == []
    redriven = (await http.post("/api/dead-letters/redrive", json={})).json()
    assert redriven == {"supported": False, "moved": 0}


@pytest.mark.integration
async def test_dead_letters_and_redrive_over_rabbitmq(
    env: WorkflowEnvironment, rabbit: RabbitMQTransport, queue_name: str
) -> None:
    from saga.client import Client
    from saga.messages import TaskMessage

    refusing = True
    received: list[TaskMessage] = []

    async def handler(task: TaskMessage) -> None:
        if refusing:
            raise Reject("warehouse closed")
        received.append(task)

    await rabbit.consume_tasks([queue_name], handler, prefetch=1)
    task = TaskMessage(
        workflow_id="order-5",
        run_id="r",
        workflow_type="PlaceOrder",
        seq=1,
        attempt=1,
        activity="reserve_stock",
        queue=queue_name,
        args=[],
        scheduled_at=datetime.now(UTC),
    )
    await rabbit.publish_task(task)

    async def parked() -> bool:
        return rabbit.dead_lettered == 1

    await eventually(parked, what="a dead letter")
    app = create_app(Client(env.store, rabbit), api_token="")
    async with _client(app) as http:
        letters = (await http.get("/api/dead-letters", params={"limit": 10})).json()
        assert letters["supported"] is True
        [letter] = letters["dead_letters"]
        assert letter["reason"] == "warehouse closed"
        assert letter["queue"].endswith(queue_name)
        assert TaskMessage.model_validate_json(letter["body"]) == task
        assert (await http.get("/api/cluster")).json()["broker"] == "connected"

        refusing = False
        moved = await http.post("/api/dead-letters/redrive", json={"queue": "saga.tasks.other"})
        assert moved.json() == {"supported": True, "moved": 0}
        moved = await http.post("/api/dead-letters/redrive", json={"limit": 10})
        assert moved.json() == {"supported": True, "moved": 1}

        async def delivered() -> bool:
            return len(received) == 1

        await eventually(delivered, what="the re-driven task")
        assert (await http.get("/api/dead-letters")).json()["dead_letters"] == []


async def test_console_files_and_security_headers(http: httpx.AsyncClient) -> None:
    index = await http.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert index.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/static/app.js"' in index.text
    for name, kind in [
        ("app.js", "javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        response = await http.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    config = (await http.get("/console-config")).json()
    assert config == {"auth_required": False, "jaeger_url": JAEGER, "poll_seconds": 3.0}
    assert (await http.get("/static/nope.js")).status_code == 404
    schema = (await http.get("/openapi.json")).json()
    assert "/api/workflows/{workflow_id}/signal" in schema["paths"]


# -- examples/README.md: the shop, driven the way the README drives it -------------------------


async def test_examples_readme_flow(database_url: str) -> None:
    from examples.shop import activities, workflows

    acts = [
        getattr(activities, n)
        for n in ("reserve_stock", "release_stock", "charge_card", "refund_card", "ship")
    ]
    async with (
        WorkflowEnvironment(
            workflows=workflows.WORKFLOWS,
            activities=acts,
            database_url=database_url,
            sweep_interval=0.5,
        ) as shop,
        _client(create_app(shop.client, api_token=TOKEN), TOKEN) as http,
    ):
        small = {"order_id": "1001", "sku": "espresso-machine", "amount_cents": 45900}
        await start(http, "PlaceOrder", small, id="order-1001")
        done = await wait_status(http, "order-1001", "COMPLETED")
        assert done["result"]["parcel"] == "parcel-1001"

        big = {"order_id": "1002", "sku": "roaster", "amount_cents": 250000}
        await start(http, "PlaceOrder", big, id="order-1002")

        async def waiting() -> bool:
            wf = (await http.get("/api/workflows/order-1002")).json()
            return bool(wf["pending_timers"])

        await eventually(waiting, what="order-1002 awaiting approval")
        signal = await http.post(
            "/api/workflows/order-1002/signal", json={"name": "approve", "args": ["alice@shop"]}
        )
        assert signal.status_code == 202
        await wait_status(http, "order-1002", "COMPLETED")

        declined = {**small, "order_id": "1003", "fail_at": "payment"}
        await start(http, "PlaceOrder", declined, id="order-1003")
        wf = await wait_status(http, "order-1003", "COMPENSATED")
        assert [s["activity"] for s in wf["compensations"]] == ["release_stock"]
        listed = (
            await http.get("/api/workflows", params={"status": "COMPENSATED", "type": "PlaceOrder"})
        ).json()
        assert [w["id"] for w in listed["workflows"]] == ["order-1003"]


# -- fuzzing: no input makes the server fail -----------------------------------------------------
#
# Schemathesis builds requests from the OpenAPI document, valid ones and invalid ones, and
# each goes over TCP to the app served by uvicorn (in a thread with its own loop). Every
# answer must be below 500 and match what the document promises (status, schema, type).
# The schema is taken from the app at import, so each operation is a test of its own.


def _openapi() -> dict[str, Any]:
    from saga.client import Client
    from saga.store.base import open_store
    from saga.transports.memory import MemoryTransport

    unconnected = Client(open_store("sqlite+aiosqlite://"), MemoryTransport())
    return create_app(unconnected, api_token="").openapi()


SCHEMA = _openapi()
OPENAPI = schemathesis.openapi.from_dict(SCHEMA)
OPERATIONS = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in SCHEMA["paths"].items()
    for method, spec in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Invalid input needs a query or a body: schemathesis cannot send an invalid path id.
    if mode is GenerationMode.POSITIVE
    or spec.get("requestBody")
    or any(p["in"] == "query" for p in spec.get("parameters", []))
]
EXISTING = ["order-0", "order-1", "approval-0"]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz') / 'saga.db'}"
        with _seeded(url) as base:
            yield base
        return
    from tests.fixtures.database import create_database, drop_database, with_database

    admin: str = request.getfixturevalue("postgres_admin_url")
    name = f"saga_fuzz_{secrets.token_hex(4)}"
    asyncio.run(create_database(admin, name))
    try:
        with _seeded(with_database(admin, name)) as base:
            yield base
    finally:
        asyncio.run(drop_database(admin, name))


@contextlib.contextmanager
def _seeded(database_url: str) -> Iterator[str]:
    with served_console(database_url, api_token=TOKEN) as console:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for i, fail_at in enumerate([None, "payment"]):
            body = {
                "type": "PlaceOrder",
                "id": f"order-{i}",
                "args": [{"order_id": f"o-{i}", "amount": 1, "fail_at": fail_at}],
            }
            httpx.post(f"{console.url}/api/workflows", json=body, headers=auth).raise_for_status()
        body = {"type": "AwaitApproval", "id": "approval-0", "args": ["o-0"]}
        httpx.post(f"{console.url}/api/workflows", json=body, headers=auth).raise_for_status()
        yield console.url


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_fuzz_finds_no_server_error(
    served: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = OPENAPI[path][method]
    cases = operation.as_strategy(generation_mode=mode)
    if "{workflow_id}" in path and mode is GenerationMode.POSITIVE:  # ids that exist, too
        cases = st.one_of(
            cases,
            *(
                operation.as_strategy(generation_mode=mode, path_parameters={"workflow_id": id})
                for id in EXISTING
            ),
        )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"

    @given(case=cases)
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: schemathesis.Case) -> None:
        response = case.call(base_url=served, session=session, timeout=30)
        unavailable = response.status_code == 501 and path.endswith("/query")  # documented
        assert response.status_code < 500 or unavailable, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )
        case.validate_response(
            response,
            checks=[response_schema_conformance, status_code_conformance, content_type_conformance],
        )

    try:
        no_server_error()
    finally:
        session.close()
