"""Payloads through a real activity call and back, on SQLite and PostgreSQL.

The values go client → database → coordinator → broker → worker → activity and back
(and the workflow's result through the database to the client), so every hop of JSON
shaping and storage is on the path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from saga import activity, workflow
from saga.converter import from_json_value, to_json_value
from saga.testing import WorkflowEnvironment
from tests.integration.engine_helpers import WAIT
from tests.unit.test_converter import TYPED_CASES, Customer, Line, Order, _order, assert_identical
from tests.unit.test_converter import json_values as json_value_strategy

QUEUE = "payload-tests"


@activity.defn(queue=QUEUE)
async def echo(value: Any) -> Any:
    return value


@activity.defn(queue=QUEUE)
async def echo_order(order: Order) -> Order:
    assert isinstance(order, Order) and isinstance(order.customer, Customer)
    return order


@activity.defn(queue=QUEUE)
async def echo_pair(pair: tuple[Line, datetime]) -> tuple[Line, datetime]:
    assert isinstance(pair, tuple) and isinstance(pair[0], Line)
    return pair


@workflow.defn
class Echo:
    @workflow.run
    async def run(self, value: Any) -> Any:
        return await workflow.execute_activity(echo, value)


@workflow.defn
class EchoTyped:
    @workflow.run
    async def run(self, order: Order, pair: tuple[Line, datetime]) -> dict[str, Any]:
        back = await workflow.execute_activity(echo_order, order)
        back_pair = await workflow.execute_activity(echo_pair, pair)
        return {
            "order_same": back == order,
            "order_type": type(back).__name__,
            "pair_same": back_pair == pair,
            "pair_types": [type(x).__name__ for x in back_pair],
            "placed_offset": back.placed_at.utcoffset().total_seconds(),  # type: ignore[union-attr]
        }


@pytest.fixture
async def env(database_url: str) -> AsyncIterator[WorkflowEnvironment]:
    async with WorkflowEnvironment(
        workflows=[Echo, EchoTyped],
        activities=[echo, echo_order, echo_pair],
        database_url=database_url,
    ) as environment:
        yield environment


# One environment serves every example of a test: that is the point of the fixture.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=json_value_strategy)
async def test_json_builtins_round_trip_through_an_activity(
    env: WorkflowEnvironment, value: Any
) -> None:
    handle = await env.client.start_workflow(Echo.run, value)
    assert_identical(await handle.result(timeout=WAIT), value)
    scheduled, completed = (e for e in await handle.history() if e.type.startswith("Activity"))
    assert_identical(scheduled.attributes.args, [value])  # type: ignore[attr-defined]
    assert_identical(completed.attributes.result, value)  # type: ignore[attr-defined]


async def test_models_dataclasses_datetimes_and_tuples_round_trip(
    env: WorkflowEnvironment,
) -> None:
    order = _order()
    pair = (Line("z", 9, 0.5), datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    handle = await env.client.start_workflow(EchoTyped.run, order, pair)
    assert await handle.result(timeout=WAIT) == {
        "order_same": True,
        "order_type": "Order",
        "pair_same": True,
        "pair_types": ["Line", "datetime"],
        "placed_offset": timedelta(hours=5, minutes=30).total_seconds(),
    }
    started = (await handle.history())[0].attributes
    assert started.args == [to_json_value(order, Order), to_json_value(pair, tuple[Line, datetime])]  # type: ignore[attr-defined]


async def test_typed_values_in_history_read_back_exactly(env: WorkflowEnvironment) -> None:
    # A stored history holds the hinted JSON form: validating it gives the value back.
    handles = [
        (hint, value, await env.client.start_workflow(Echo.run, to_json_value(value, hint)))
        for hint, value in TYPED_CASES
    ]
    for hint, value, handle in handles:
        back = from_json_value(await handle.result(timeout=WAIT), hint)
        assert back == value and type(back) is type(value), hint
