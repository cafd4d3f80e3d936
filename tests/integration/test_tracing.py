"""One trace per saga: spans, parents, attributes and metrics, in process."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import baggage, context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)

from examples.trip_booking.activities import ACTIVITIES, TripRequest, services
from examples.trip_booking.workflows import TripBooking
from saga import WorkflowFailureError, activity, workflow
from saga.testing import WorkflowEnvironment
from saga.tracing import Telemetry


@pytest.fixture
def telemetry() -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return Telemetry(provider, MeterProvider(metric_readers=[reader])), exporter, reader


def _by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def _metric_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict, float]]]:
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[dict, float]]] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", 0)
                    out.setdefault(metric.name, []).append((dict(point.attributes), value))
    return out


async def test_a_compensated_trip_is_one_trace_with_the_story_in_it(telemetry, database_url):
    tel, exporter, reader = telemetry
    services.reset()
    async with WorkflowEnvironment(
        workflows=[TripBooking],
        activities=ACTIVITIES,
        database_url=database_url,
        telemetry=tel,
    ) as env:
        handle = await env.client.start_workflow(
            TripBooking.run, TripRequest(name="bob", fail_at="flight"), id="trace-trip"
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result(timeout=30)
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1, "every span shares one trace"
    by_id = {s.context.span_id: s for s in spans}
    names = _by_name(list(spans))

    (root,) = names["StartWorkflow:TripBooking"]
    assert root.parent is None
    (run,) = names["RunWorkflow:TripBooking"]
    assert run.parent.span_id == root.context.span_id
    assert run.attributes["saga.workflow_id"] == "trace-trip"

    for step in ("reserve_car", "book_hotel", "book_flight", "cancel_hotel", "cancel_car"):
        (start,) = names[f"StartActivity:{step}"]
        (attempt,) = names[f"RunActivity:{step}"]
        assert start.parent.span_id == run.context.span_id
        assert attempt.parent.span_id == start.context.span_id
        assert attempt.attributes["saga.attempt"] == 1
        assert attempt.attributes["saga.compensation"] == step.startswith("cancel")
    (failed,) = names["RunActivity:book_flight"]
    assert failed.status.status_code.name == "ERROR"
    assert "no flight available" in failed.status.description
    assert any(
        e.name == "exception" and e.attributes["exception.type"] == "BookingRefused"
        for e in failed.events
    )

    (done,) = names["CompleteWorkflow:TripBooking"]
    assert done.attributes["saga.status"] == "COMPENSATED"
    assert done.parent.span_id == run.context.span_id
    assert all(s.parent is None or s.parent.span_id in by_id for s in spans), "one tree"

    points = _metric_points(reader)
    assert ({"saga.workflow_type": "TripBooking", "saga.status": "COMPENSATED"}, 1) in points[
        "saga.workflows.closed"
    ]
    assert sum(v for _, v in points["saga.activity.attempts"]) == 5
    assert sum(v for _, v in points["saga.activity.failures"]) == 1


@activity.defn(queue="tenants")
async def tenant() -> str:
    return str(baggage.get_baggage("tenant"))


@workflow.defn
class Tenanted:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(tenant)


async def test_the_callers_baggage_reaches_the_activity(telemetry, database_url):
    tel, _, _ = telemetry
    async with WorkflowEnvironment(
        workflows=[Tenanted], activities=[tenant], database_url=database_url, telemetry=tel
    ) as env:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            handle = await env.client.start_workflow(Tenanted.run, id="baggage-trip")
        finally:
            context.detach(token)
        assert await handle.result(timeout=30) == "acme"


class _DropClientRoots(Sampler):
    """Samples roots, except the client's: a trace the caller's sampler turned down."""

    def should_sample(self, parent_context, trace_id, name, *args, **kwargs) -> SamplingResult:
        dropped = name.startswith("StartWorkflow")
        return SamplingResult(Decision.DROP if dropped else Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "DropClientRoots"


async def test_a_sampled_out_saga_leaves_no_orphan_spans(database_url):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=_DropClientRoots()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with WorkflowEnvironment(
        workflows=[Tenanted],
        activities=[tenant],
        database_url=database_url,
        telemetry=Telemetry(provider),
    ) as env:
        handle = await env.client.start_workflow(Tenanted.run, id="sampled-out")
        assert await handle.result(timeout=30) == "None"
    assert exporter.get_finished_spans() == (), "every hop follows the root's decision"


gate = asyncio.Event()


@activity.defn(queue="trace")
async def first() -> str:
    return "one"


@activity.defn(queue="trace")
async def second() -> str:
    await gate.wait()
    return "two"


@workflow.defn
class TwoSteps:
    @workflow.run
    async def run(self) -> list[str]:
        return [await workflow.execute_activity(first), await workflow.execute_activity(second)]


async def test_a_restarted_coordinator_continues_the_trace_without_repeating_spans(
    telemetry, tmp_path
):
    tel, exporter, _ = telemetry
    url = f"sqlite+aiosqlite:///{tmp_path / 'trace.db'}"
    gate.clear()
    env = WorkflowEnvironment(
        workflows=[TwoSteps], activities=[first, second], database_url=url, telemetry=tel
    )
    async with env:
        handle = await env.client.start_workflow(TwoSteps.run, id="restart-trace")
        async with asyncio.timeout(30):  # until step 1 is recorded and step 2 dispatched
            while not any(
                e.type == "ActivityScheduled" and e.attributes.seq == 2
                for e in await handle.history()
            ):
                await asyncio.sleep(0.01)
        assert env.worker is not None
        env.worker.drain_timeout = 0.0  # the blocked attempt is abandoned with the process
    gate.set()
    async with WorkflowEnvironment(
        workflows=[TwoSteps], activities=[first, second], database_url=url, telemetry=tel
    ) as env2:
        assert await env2.client.get_workflow_handle(handle.id).result(timeout=30) == ["one", "two"]
    spans = exporter.get_finished_spans()
    names = _by_name(list(spans))
    assert len({s.context.trace_id for s in spans}) == 1, "the trace survives the restart"
    assert len(names["RunWorkflow:TwoSteps"]) == 1, "replay emits no second RunWorkflow"
    assert len(names["StartActivity:first"]) == 1
    assert len(names["RunActivity:first"]) == 1, "the finished step did not run again"
    (start_second,) = names["StartActivity:second"]
    assert {a.parent.span_id for a in names["RunActivity:second"]} == {start_second.context.span_id}


@pytest.mark.integration
async def test_dead_lettered_messages_are_counted(telemetry, broker_url, clean_broker, tmp_path):
    import aio_pika

    from saga.coordinator import Coordinator
    from saga.store.base import open_store
    from saga.transports.base import results_queue_name
    from saga.transports.rabbitmq import RabbitMQTransport

    tel, _, reader = telemetry
    transport = RabbitMQTransport(broker_url)
    coordinator = Coordinator(
        workflows=[TwoSteps],
        store=open_store(f"sqlite+aiosqlite:///{tmp_path / 'dl.db'}"),
        transport=transport,
        telemetry=tel,
        migrate=True,
    )
    async with coordinator:
        connection = await aio_pika.connect(broker_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(b"{not json"), routing_key=results_queue_name(0)
            )
        async with asyncio.timeout(30):
            while transport.dead_lettered < 1:
                await asyncio.sleep(0.05)
        points = _metric_points(reader)
    assert [v for _, v in points["saga.messages.dead_lettered"]] == [1]
