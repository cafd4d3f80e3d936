"""One trace per saga across real processes, exported over OTLP/HTTP, even after SIGKILL."""

from __future__ import annotations

import json

import pytest

from tests.e2e.cluster import Cluster, wait_until
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _export_to(cluster: Cluster, receiver: OTLPReceiver, service: str) -> None:
    cluster.env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "60000",
            "OTEL_SERVICE_NAME": service,
        }
    )
    cluster.saga_ok("db", "upgrade")


def _of(spans: list[ReceivedSpan], workflow_id: str) -> list[ReceivedSpan]:
    """The spans of one saga: those naming it, and the client's root above them."""
    mine = [s for s in spans if s.attributes.get("saga.workflow_id") == workflow_id]
    traces = {s.trace_id for s in mine}
    return [s for s in spans if s.trace_id in traces]


def _assert_one_tree(spans: list[ReceivedSpan]) -> None:
    assert len({s.trace_id for s in spans}) == 1, sorted({s.trace_id for s in spans})
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id]
    assert [r.name for r in roots] == ["StartWorkflow:E2ETrip"], [r.name for r in roots]
    orphans = [s.name for s in spans if s.parent_span_id and s.parent_span_id not in ids]
    assert not orphans, f"spans whose parent never arrived: {orphans}"


def test_a_saga_across_coordinator_and_two_workers_is_one_trace(cluster: Cluster) -> None:
    with OTLPReceiver() as receiver:
        _export_to(cluster, receiver, "saga-e2e")
        cluster.coordinator()
        cluster.worker("cars", "hotels")
        cluster.worker("flights")
        cluster.start_trip("traced", fail_at="flight")
        wait_until(
            lambda: (
                any(s.name == "CompleteWorkflow:E2ETrip" for s in receiver.snapshot())
                and sum(s.name.startswith("RunActivity:cancel") for s in receiver.snapshot()) == 2
            ),
            "complete trace",
            explain=cluster.explain,
        )
        spans = _of(receiver.snapshot(), "traced")
        _assert_one_tree(spans)
        names = [s.name for s in spans]
        for step in ("reserve_car", "book_hotel", "book_flight", "cancel_car", "cancel_hotel"):
            assert f"StartActivity:{step}" in names and f"RunActivity:{step}" in names
        done = next(s for s in spans if s.name == "CompleteWorkflow:E2ETrip")
        assert done.attributes["saga.status"] == "COMPENSATED"
        workers = {s.attributes.get("saga.queue") for s in spans if s.name.startswith("RunAct")}
        assert workers == {cluster.queues[kind] for kind in ("cars", "hotels", "flights")}


def test_the_trace_survives_a_coordinator_killed_mid_saga(cluster: Cluster, tmp_path) -> None:
    release = tmp_path / "release"
    with OTLPReceiver() as receiver:
        _export_to(cluster, receiver, "saga-e2e")
        coordinator = cluster.coordinator()
        cluster.worker("cars", "hotels", "flights")
        cluster.saga_ok(
            "start",
            "E2ETrip",
            "--id",
            "killed",
            "--input",
            json.dumps({"name": "killed", "block_at": "hotel", "release_file": str(release)}),
        )
        wait_until(
            lambda: any(
                c["event"] == "started" and c["activity"] == "book_hotel" for c in cluster.calls()
            ),
            "hotel started",
            explain=cluster.explain,
        )
        wait_until(
            lambda: any(s.name == "StartActivity:book_hotel" for s in receiver.snapshot()),
            "exported dispatch span",
            explain=cluster.explain,
        )
        coordinator.kill()
        coordinator.wait_exit()
        cluster.coordinator()
        release.touch()
        wait_until(
            lambda: any(
                s.name == "CompleteWorkflow:E2ETrip"
                and s.attributes.get("saga.workflow_id") == "killed"
                for s in receiver.snapshot()
            ),
            "completion after restart",
            explain=cluster.explain,
        )
        spans = _of(receiver.snapshot(), "killed")
        _assert_one_tree(spans)
        assert [s.name for s in spans].count("RunWorkflow:E2ETrip") == 1
        assert [s.name for s in spans].count("RunActivity:reserve_car") == 1
