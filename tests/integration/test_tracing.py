"""One trace per saga: spans, parents, attributes and metrics, in process."""

from __future__ import annotations

import asyncio
from unittest.mock import Mock

import pytest
from opentelemetry import baggage, context, trace
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
from opentelemetry.trace import StatusCode

from examples.trip_booking.activities import ACTIVITIES, TripRequest, services
from examples.trip_booking.workflows import TripBooking
from saga import WorkflowAlreadyStartedError, WorkflowFailureError, activity, workflow
from saga.testing import WorkflowEnvironment
from saga.tracing import SagaTracerProvider, Telemetry

# Every test runs on both paths: the SDK's tracer (any provider) and saga's spans built
# finished (a SagaTracerProvider, what configure_from_env sets up).
PROVIDERS = {"sdk": TracerProvider, "finished": SagaTracerProvider}


@pytest.fixture(params=sorted(PROVIDERS))
def provider_type(request) -> type[TracerProvider]:
    return PROVIDERS[request.param]


@pytest.fixture
def telemetry(provider_type) -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    provider = provider_type()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    tel = Telemetry(provider, MeterProvider(metric_readers=[reader]))
    assert (tel.finished is not None) == (provider_type is SagaTracerProvider)
    return tel, exporter, reader


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


async def test_a_sampled_out_saga_leaves_no_orphan_spans(database_url, provider_type):
    exporter = InMemorySpanExporter()
    provider = provider_type(sampler=ParentBased(root=_DropClientRoots()))
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
    global gate
    gate = asyncio.Event()  # an Event binds to the loop that first waits on it: one per test
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


def _story(spans: list[ReadableSpan]) -> list[tuple]:
    """What a trace view shows of each span, less ids, times, run ids and stack traces."""
    by_id = {s.context.span_id: s for s in spans}
    return sorted(
        (
            s.name,
            by_id[s.parent.span_id].name if s.parent else None,
            s.kind,
            s.context.trace_flags,
            sorted((k, v) for k, v in s.attributes.items() if k != "saga.run_id"),
            (s.status.status_code, s.status.description),
            [
                (e.name, sorted((k, v) for k, v in e.attributes.items() if "stack" not in k))
                for e in s.events
            ],
            s.instrumentation_scope.name,
            dict(s.resource.attributes),
        )
        for s in spans
    )


async def test_spans_built_finished_tell_the_same_story_as_the_sdks(tmp_path):
    stories = {}
    for path, provider_type in PROVIDERS.items():
        exporter = InMemorySpanExporter()
        provider = provider_type()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tel = Telemetry(provider)
        tel.tracer = Mock(wraps=tel.tracer)  # to see which path each span took
        services.reset()
        async with WorkflowEnvironment(
            workflows=[TripBooking],
            activities=ACTIVITIES,
            database_url=f"sqlite+aiosqlite:///{tmp_path / f'{path}.db'}",
            telemetry=tel,
        ) as env:
            handle = await env.client.start_workflow(
                TripBooking.run, TripRequest(name="bob", fail_at="flight"), id="same-story"
            )
            with pytest.raises(WorkflowFailureError):
                await handle.result(timeout=30)
        sdk_spans = tel.tracer.start_span.call_count + tel.tracer.start_as_current_span.call_count
        assert sdk_spans == (0 if path == "finished" else 13), path
        stories[path] = _story(list(exporter.get_finished_spans()))
    assert len(stories["finished"]) == 13  # 5 activities: 3 steps, 2 compensations
    assert stories["finished"] == stories["sdk"]


user_tracer: Mock | TracerProvider | None = None


@activity.defn(queue="annotated")
async def annotated() -> str:
    span = trace.get_current_span()
    span.set_attribute("user.rooms", [1, 2])
    span.add_event("priced", {"user.price": 12.5})
    span.record_exception(ValueError("retried inside"))
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "ignored: OK is final")
    with user_tracer.get_tracer("user").start_as_current_span("user-call"):
        pass
    return "ok"


@workflow.defn
class Annotated:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(annotated)


async def test_the_activity_annotates_its_run_activity_span_and_nests_its_own(
    database_url, provider_type
):
    global user_tracer
    exporter = InMemorySpanExporter()
    user_tracer = provider_type()
    user_tracer.add_span_processor(SimpleSpanProcessor(exporter))
    async with WorkflowEnvironment(
        workflows=[Annotated],
        activities=[annotated],
        database_url=database_url,
        telemetry=Telemetry(user_tracer),
    ) as env:
        handle = await env.client.start_workflow(Annotated.run, id="annotated")
        assert await handle.result(timeout=30) == "ok"
    names = _by_name(list(exporter.get_finished_spans()))
    (run,) = names["RunActivity:annotated"]
    assert run.attributes["user.rooms"] == (1, 2), "validated as the SDK does: a tuple"
    assert run.attributes["saga.activity"] == "annotated"
    priced, error = run.events
    assert (priced.name, dict(priced.attributes)) == ("priced", {"user.price": 12.5})
    assert error.name == "exception"
    assert error.attributes["exception.type"] == "ValueError"
    assert error.attributes["exception.message"] == "retried inside"
    assert run.status.status_code is StatusCode.OK
    (mine,) = names["user-call"]
    assert mine.parent.span_id == run.context.span_id


async def test_a_start_that_fails_is_recorded_on_its_span(telemetry, database_url):
    tel, exporter, _ = telemetry
    async with WorkflowEnvironment(
        workflows=[Tenanted], activities=[tenant], database_url=database_url, telemetry=tel
    ) as env:
        await env.client.start_workflow(Tenanted.run, id="twice")
        with pytest.raises(WorkflowAlreadyStartedError):
            await env.client.start_workflow(Tenanted.run, id="twice")
    first, second = _by_name(list(exporter.get_finished_spans()))["StartWorkflow:Tenanted"]
    assert first.status.status_code.name == "UNSET"
    assert second.status.status_code.name == "ERROR"
    assert second.status.description.startswith("WorkflowAlreadyStartedError: ")
    (event,) = second.events
    assert event.attributes["exception.type"] == "saga.errors.WorkflowAlreadyStartedError"
