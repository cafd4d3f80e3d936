"""``saga coordinator`` and ``saga worker`` as an operator meets them: start-up errors,
graceful SIGTERM, log formats. Real processes, real PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from tests.e2e.cluster import APP, DEADLINE, Cluster, assert_one_line_error, wait_until

pytestmark = pytest.mark.integration


def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def starts(cluster: Cluster, activity: str) -> list[dict[str, Any]]:
    return [c for c in cluster.calls() if c["activity"] == activity and c["event"] == "started"]


# --- start-up errors: one line, exit 1, bounded time ------------------------------------------
@pytest.mark.parametrize("daemon", ["coordinator", "worker"])
def test_a_bad_app_is_one_line_and_exit_1(cluster: Cluster, daemon: str) -> None:
    done = cluster.saga(daemon, "--app", "nope.such_module")
    line = assert_one_line_error(done)
    assert line == "saga: cannot import --app module 'nope.such_module': No module named 'nope'"


def test_an_app_without_workflows_is_refused(cluster: Cluster) -> None:
    line = assert_one_line_error(cluster.saga("coordinator", "--app", "saga.errors"))
    assert "defines no workflow" in line


@pytest.mark.parametrize("daemon", ["coordinator", "worker"])
def test_an_unreachable_broker_is_one_line_and_exit_1_after_bounded_retries(
    cluster: Cluster, daemon: str
) -> None:
    port = free_port()
    dead = f"amqp://guest:guest@127.0.0.1:{port}/"
    began = time.monotonic()
    done = cluster.saga(daemon, "--app", APP, "--db", cluster.db, "--broker", dead, connect=False)
    line = assert_one_line_error(done)
    assert line.startswith(f"saga: cannot connect to RabbitMQ at 127.0.0.1:{port}/ (")
    assert time.monotonic() - began < 60


def test_an_unreachable_database_is_one_line_and_exit_1_after_bounded_retries(
    cluster: Cluster,
) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
    began = time.monotonic()
    done = cluster.saga(
        "coordinator", "--app", APP, "--db", dead, "--broker", cluster.broker, connect=False
    )
    line = assert_one_line_error(done)
    assert line.startswith(f"saga: cannot connect to {dead}")
    assert time.monotonic() - began < 60


def test_a_database_without_schema_says_to_upgrade_it(cluster: Cluster) -> None:
    line = assert_one_line_error(cluster.saga("coordinator", "--app", APP))
    assert "does not exist" in line and "saga db upgrade" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["coordinator"],
        ["coordinator", "--app", APP, "--drain-timeout", "-1"],
        ["coordinator", "--app", APP, "--log-format", "xml"],
        ["worker", "--app", APP, "--concurrency", "0"],
        ["worker", "--app", APP, "--queue", "no-such-queue"],
        ["worker", "--app", APP, "--bogus"],
    ],
    ids=["no-app", "negative-drain", "log-format", "concurrency", "unknown-queue", "bogus"],
)
def test_bad_usage_exits_2_with_one_line(cluster: Cluster, argv: list[str]) -> None:
    line = assert_one_line_error(cluster.saga(*argv), code=2)
    assert line.startswith("saga: error: ")


# --- SIGTERM --------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_lets_the_running_activity_finish_and_hands_back_the_rest(
    cluster: Cluster,
) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    leaving = cluster.worker("cars", "hotels", "flights", extra=("--drain-timeout", "120"))
    release = cluster.folder / "release"
    cluster.start_trip("trip-drain", block_at="hotel", release_file=str(release))
    wait_until(
        lambda: len(starts(cluster, "book_hotel")) == 1,
        "hotel booking started",
        explain=cluster.explain,
    )

    leaving.terminate()
    leaving.wait_log("draining 1 running activities")
    assert leaving.proc.poll() is None  # still there: the booking is not finished
    release.touch()
    assert leaving.wait_exit() == 0
    log = leaving.log()
    assert "saga worker stopped" in log
    assert "Traceback" not in log

    # Nothing else ran there: had the flight task reached the draining worker, it would
    # have been held unacknowledged and handed back, not run.
    assert starts(cluster, "book_flight") == []
    staying = cluster.worker("cars", "hotels", "flights")
    outcome = cluster.saga_json("result", "trip-drain", "--timeout", str(DEADLINE))
    assert outcome["status"] == "COMPLETED"
    assert [c["pid"] for c in starts(cluster, "book_hotel")] == [leaving.pid]  # ran once
    assert [c["pid"] for c in starts(cluster, "book_flight")] == [staying.pid]


@pytest.mark.slow
def test_sigterm_returns_an_activity_to_the_queue_when_the_drain_times_out(
    cluster: Cluster,
) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    leaving = cluster.worker("cars", "hotels", "flights", extra=("--drain-timeout", "1"))
    release = cluster.folder / "release"
    cluster.start_trip("trip-late", block_at="hotel", release_file=str(release))
    wait_until(
        lambda: len(starts(cluster, "book_hotel")) == 1,
        "hotel booking started",
        explain=cluster.explain,
    )

    began = time.monotonic()
    leaving.terminate()
    assert leaving.wait_exit() == 0
    assert time.monotonic() - began < 30
    assert "cancelling 1 activities at shutdown" in leaving.log()

    staying = cluster.worker("cars", "hotels", "flights")
    wait_until(
        lambda: len(starts(cluster, "book_hotel")) == 2,
        "the hotel booking again",
        explain=cluster.explain,
    )
    release.touch()
    outcome = cluster.saga_json("result", "trip-late", "--timeout", str(DEADLINE))
    assert outcome["status"] == "COMPLETED"
    first, second = starts(cluster, "book_hotel")
    assert (first["pid"], second["pid"]) == (leaving.pid, staying.pid)
    assert first["key"] == second["key"]


@pytest.mark.slow
def test_sigterm_does_not_wait_for_a_synchronous_activity_past_the_drain(
    cluster: Cluster,
) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    leaving = cluster.worker("cars", extra=("--drain-timeout", "1"))
    release = cluster.folder / "release"
    cluster.saga_ok("start", "E2EHold", "--id", "hold", "--input", json.dumps(str(release)))
    wait_until(
        lambda: len(starts(cluster, "hold_sync")) == 1,
        "the synchronous step started",
        explain=cluster.explain,
    )

    began = time.monotonic()
    leaving.terminate()
    assert leaving.wait_exit() == 0  # its thread is still blocked: it was left behind
    assert time.monotonic() - began < 30
    assert "activity threads still running after the drain" in leaving.log()

    staying = cluster.worker("cars")
    wait_until(
        lambda: len(starts(cluster, "hold_sync")) == 2, "the step again", explain=cluster.explain
    )
    release.touch()
    outcome = cluster.saga_json("result", "hold", "--timeout", str(DEADLINE))
    assert outcome["result"] == "released"
    assert [c["pid"] for c in starts(cluster, "hold_sync")] == [leaving.pid, staying.pid]


@pytest.mark.slow
def test_sigterm_stops_the_coordinator_cleanly_and_another_carries_on(cluster: Cluster) -> None:
    cluster.saga_ok("db", "upgrade")
    first = cluster.coordinator("--log-format", "json")
    cluster.worker("cars", "hotels", "flights")
    release = cluster.folder / "release"
    cluster.start_trip("trip-handover", block_at="hotel", release_file=str(release))
    wait_until(
        lambda: len(starts(cluster, "book_hotel")) == 1,
        "hotel booking started",
        explain=cluster.explain,
    )

    first.terminate()
    assert first.wait_exit() == 0
    lines = [json.loads(line) for line in first.log().splitlines()]  # every line is JSON
    messages = [line["message"] for line in lines]
    assert "SIGTERM received: stopping" in messages
    assert messages[-1] == "saga coordinator stopped"

    release.touch()  # the hotel's result waits in the broker for the next coordinator
    cluster.coordinator()
    outcome = cluster.saga_json("result", "trip-handover", "--timeout", str(DEADLINE))
    assert outcome["status"] == "COMPLETED"


def test_text_logs_carry_the_extra_fields(cluster: Cluster) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    worker = cluster.worker("cars", "hotels", "flights")
    done = cluster.saga(
        "start",
        "E2ETrip",
        "--id",
        "trip-log",
        "--wait",
        "--input",
        json.dumps({"name": "kim", "fail_at": "car"}),
    )
    assert_one_line_error(done)
    worker.wait_log("activity attempt failed")
    line = next(x for x in worker.log().splitlines() if "activity attempt failed" in x)
    assert " INFO " in line and " saga.worker " in line
    assert "workflow_id=trip-log activity=reserve_car attempt=1" in line
