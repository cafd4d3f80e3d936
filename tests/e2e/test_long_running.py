"""Long-running sagas with real processes: durable timers and signals across a SIGKILL.

A coordinator and a worker run as ``saga`` processes on PostgreSQL and RabbitMQ (the
app is :mod:`tests.e2e.apps.long_running`); the test drives them with the ``saga``
command, kills the coordinator with SIGKILL and starts another.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.e2e.apps.long_running import read_calls
from tests.e2e.cluster import Cluster, Daemon, assert_one_line_error, wait_until
from tests.fixtures.broker import QueueNames

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
]

APP = "tests.e2e.apps.long_running"


@pytest.fixture
def lr(cluster: Cluster, make_queue_name: QueueNames) -> Cluster:
    make_queue_name.used.append(f"{cluster.prefix}-alarms")  # deleted after the test
    assert "up to date" in cluster.saga_ok("db", "upgrade")
    return cluster


def coordinator(cluster: Cluster) -> Daemon:
    return cluster.spawn("coordinator", "coordinator", "--app", APP).wait_ready()


def worker(cluster: Cluster) -> Daemon:
    queue = f"{cluster.prefix}-alarms"
    return cluster.spawn("worker", "worker", "--app", APP, "--queue", queue).wait_ready()


def history(cluster: Cluster, workflow_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = cluster.saga_json("history", workflow_id)["events"]
    return events


def has_event(cluster: Cluster, workflow_id: str, event_type: str) -> bool:
    return any(e["type"] == event_type for e in history(cluster, workflow_id))


def when(event: dict[str, Any], field: str = "timestamp") -> datetime:
    value = event["attributes"][field] if field != "timestamp" else event[field]
    return datetime.fromisoformat(value)


def test_a_sleep_survives_a_sigkill_and_fires_once_at_its_due_time(lr: Cluster) -> None:
    first = coordinator(lr)
    worker(lr)
    lr.saga_ok("start", "Sleeper", "--id", "sleeper", "--input", "5")
    wait_until(lambda: has_event(lr, "sleeper", "TimerStarted"), "the timer", explain=lr.explain)

    first.kill()  # SIGKILL, well before the timer is due
    time.sleep(2)
    coordinator(lr)

    result = json.loads(lr.saga_ok("result", "sleeper", "--timeout", "60"))
    events = history(lr, "sleeper")
    started = next(e for e in events if e["type"] == "TimerStarted")
    fired = [e for e in events if e["type"] == "TimerFired"]
    due = when(started, "fire_at")
    assert len(fired) == 1, events  # exactly once
    assert when(fired[0]) >= due  # never early
    assert when(fired[0]) - due < timedelta(seconds=10)  # and not much late: ~5 s in all
    assert due - when(events[0]) == timedelta(seconds=5)
    assert datetime.fromisoformat(result["woke_at"]) >= due
    calls = [c for c in read_calls(lr.calls_path) if c["workflow_id"] == "sleeper"]
    assert len(calls) == 1, calls  # the step after the sleep ran once
    assert calls[0]["at"] >= due.timestamp()


def test_a_signal_sent_while_the_coordinator_is_down_is_delivered_after(lr: Cluster) -> None:
    first = coordinator(lr)
    lr.saga_ok("start", "Mailbox", "--id", "mailbox", "--input", "1")
    wait_until(lambda: has_event(lr, "mailbox", "WorkflowStarted"), "the start", explain=lr.explain)
    first.kill()

    lr.saga_ok("signal", "mailbox", "deliver", "--input", '"written while down"')
    time.sleep(1)
    assert not has_event(lr, "mailbox", "WorkflowSignaled")  # nobody to record it yet
    coordinator(lr)

    result = json.loads(lr.saga_ok("result", "mailbox", "--timeout", "60"))
    assert result == ["written while down"]
    signaled = [e for e in history(lr, "mailbox") if e["type"] == "WorkflowSignaled"]
    assert [e["attributes"]["args"] for e in signaled] == [["written while down"]]


def test_the_cli_queries_a_running_coordinator_and_reports_errors_in_one_line(
    lr: Cluster,
) -> None:
    coordinator(lr)
    lr.saga_ok("start", "Mailbox", "--id", "box", "--input", "2")
    lr.saga_ok("signal", "box", "deliver", "--input", '"first"')
    wait_until(lambda: has_event(lr, "box", "WorkflowSignaled"), "the signal", explain=lr.explain)
    length = lr.saga_json("describe", "box")["history_length"]

    assert json.loads(lr.saga_ok("query", "box", "received")) == ["first"]
    answer = lr.saga_json("query", "box", "received")
    assert answer == {"id": "box", "query": "received", "result": ["first"]}
    assert lr.saga_json("describe", "box")["history_length"] == length  # nothing written

    wrong = assert_one_line_error(lr.saga("query", "box", "nope"))
    assert wrong == (
        "saga: bad arguments for workflow Mailbox: no query named 'nope' (known: received)"
    )
    missing = assert_one_line_error(lr.saga("signal", "no-such-box", "deliver", "--input", "1"))
    assert missing == "saga: workflow 'no-such-box' not found"
    missing = assert_one_line_error(lr.saga("query", "no-such-box", "received"))
    assert missing == "saga: workflow 'no-such-box' not found"

    lr.saga_ok("signal", "box", "deliver", "--input", '"second"')
    assert json.loads(lr.saga_ok("result", "box", "--timeout", "60")) == ["first", "second"]
    assert json.loads(lr.saga_ok("query", "box", "received")) == ["first", "second"]  # closed
