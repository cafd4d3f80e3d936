"""saga's OTLP/HTTP exporter: the SDK's request bytes, sent as the SDK's exporter sends them."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GRPCSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as SDKHTTPSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    StatusCode,
    TraceFlags,
    TraceState,
)

from saga.failure import FailureInfo
from saga.tracing import SagaTracerProvider, Telemetry
from saga.tracing.otlp_encoder import Encoder
from saga.tracing.otlp_http import OTLPHTTPSpanExporter
from saga.tracing.setup import otlp_span_exporter


def _spans(provider_type: type[TracerProvider], service: str) -> list[ReadableSpan]:
    """saga's spans of a failed saga, and a user's spans with every kind of field."""
    exporter = InMemorySpanExporter()
    provider = provider_type(resource=Resource.create({"service.name": service}, "https://r"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tel = Telemetry(provider)
    with tel.start_workflow("Trip", "wf-1") as root:
        pass
    run = tel.run_workflow(root, "Trip", "wf-1", "run-1")
    headers = tel.start_activity(
        run,
        activity="book",
        workflow_id="wf-1",
        run_id="run-1",
        seq=1,
        attempt=2,
        queue="hotels",
        compensation=True,
    )
    failure = FailureInfo(type="Refused", message="no room", stack_trace="at book()")
    with tel.run_activity(
        headers,
        activity="book",
        workflow_id="wf-1",
        run_id="run-1",
        seq=1,
        attempt=2,
        queue="hotels",
        compensation=True,
        schedule_to_start_ms=1.0,
    ) as finish:
        finish(failure)
    tel.event("FireTimer", run, seq=3)
    tel.complete_workflow(
        run,
        workflow_type="Trip",
        workflow_id="wf-1",
        run_id="run-1",
        status="FAILED",
        error=failure,
    )
    user = provider.get_tracer("user", "1.2", "https://u", {"lib": "x"})
    remote = SpanContext(0x1234, 0x5678, True, TraceFlags(1), TraceState([("a", "b")]))
    attributes = {
        "s": "",
        "unicode": "hôtel",
        "b": False,
        "zero": 0,
        "negative": -5,
        "f": 0.0,
        "g": 1.5,
        "big": 2**62,
        "too big": 2**64,  # the SDK's encoder logs and skips it: so does ours
        "strings": ["a", "b"],
        "ints": (1, 2),
        "empty": (),
    }
    with user.start_as_current_span(
        "weird",
        context=trace.set_span_in_context(NonRecordingSpan(remote)),
        links=[Link(remote, {"l": 1})],
        attributes=attributes,
    ) as span:
        span.add_event("e", {"x": "y"}, timestamp=0)
        span.add_event("", None)
        span.set_status(StatusCode.ERROR, "boom")
    with user.start_as_current_span("ok") as span:
        span.set_status(StatusCode.OK)
    return list(exporter.get_finished_spans())


@pytest.mark.parametrize("provider_type", [SagaTracerProvider, TracerProvider])
def test_the_encoding_is_the_sdks_byte_for_byte(provider_type):
    spans = _spans(provider_type, "one") + _spans(provider_type, "two")
    encoder = Encoder()
    expected = encode_spans(spans).SerializePartialToString()
    assert encoder.encode(spans) == expected
    assert encoder.encode(spans) == expected, "and again, from what it remembers"
    assert encoder.encode([]) == encode_spans([]).SerializePartialToString()


class _Collector:
    """A local OTLP/HTTP endpoint that answers with scripted statuses and keeps requests."""

    def __init__(self, statuses: list[int]) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.requests.append((dict(self.headers), body))
                self.send_response(statuses.pop(0) if statuses else 200)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def spans() -> list[ReadableSpan]:
    return _spans(SagaTracerProvider, "svc")


@pytest.fixture
def collector(request) -> Iterator[_Collector]:
    c = _Collector(list(getattr(request, "param", [])))
    yield c
    c.close()


def test_a_batch_is_posted_with_the_configured_headers_and_compression(
    collector, spans, monkeypatch
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-token=abc%20d")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    assert OTLPHTTPSpanExporter().export(spans) is SpanExportResult.SUCCESS
    ((headers, body),) = collector.requests
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Token"] == "abc d"
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == encode_spans(spans).SerializePartialToString()


@pytest.mark.parametrize("collector", [[503, 429]], indirect=True)
def test_transient_failures_are_retried(collector, spans):
    assert OTLPHTTPSpanExporter(collector.endpoint).export(spans) is SpanExportResult.SUCCESS
    assert len(collector.requests) == 3


@pytest.mark.parametrize("collector", [[400]], indirect=True)
def test_a_rejected_batch_is_not_retried(collector, spans):
    assert OTLPHTTPSpanExporter(collector.endpoint).export(spans) is SpanExportResult.FAILURE
    assert len(collector.requests) == 1


def test_an_unreachable_collector_fails_within_the_timeout(collector, spans, monkeypatch):
    endpoint = collector.endpoint
    collector.close()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    assert OTLPHTTPSpanExporter(endpoint).export(spans) is SpanExportResult.FAILURE


def test_saga_exports_over_http_with_its_own_exporter_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    assert isinstance(otlp_span_exporter(), OTLPHTTPSpanExporter)
    monkeypatch.setenv("SAGA_OTEL_SDK_EXPORTER", "true")
    assert isinstance(otlp_span_exporter(), SDKHTTPSpanExporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert isinstance(otlp_span_exporter(), GRPCSpanExporter)
