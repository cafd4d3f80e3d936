"""The distributed system as deployed: real coordinator and worker processes, real
PostgreSQL and RabbitMQ, driven through the ``saga`` command.

What the activities did is read from ``calls.jsonl`` (see :mod:`tests.e2e.apps.trip`),
written outside the processes, so it survives SIGKILL and counts across workers.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections import Counter
from typing import Any

import aio_pika
import pytest

from saga.client import Client
from saga.store.base import open_store
from saga.transports.base import results_queue_name, task_queue_name
from saga.transports.memory import MemoryTransport
from saga.transports.rabbitmq import RabbitMQTransport
from tests.e2e.cluster import DEADLINE, Cluster, assert_one_line_error, wait_until
from tests.fixtures.broker import TestBroker

RESULTS_QUEUE = results_queue_name(0)

pytestmark = [
    pytest.mark.integration,
    # aiormq leaves a socket to the garbage collector when the broker goes away.
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
]


def effects(calls: list[dict[str, Any]], workflow_id: str) -> list[dict[str, Any]]:
    return [c for c in calls if c["workflow_id"] == workflow_id and c["event"] == "effect"]


def by_activity(lines: list[dict[str, Any]]) -> Counter[str]:
    return Counter(c["activity"] for c in lines)


def test_trip_booking_across_a_coordinator_and_two_workers(cluster: Cluster) -> None:
    assert "up to date" in cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    cars_hotels = cluster.worker("cars", "hotels")
    flights = cluster.worker("flights", extra=("--log-format", "json"))

    ok = cluster.saga_json(
        "start", "E2ETrip", "--id", "trip-ok", "--wait", "--input", json.dumps({"name": "ann"})
    )
    assert ok["id"] == "trip-ok"
    assert ok["status"] == "COMPLETED"
    assert set(ok["result"]) == {"car", "hotel", "flight"}

    failed = cluster.saga(
        "start",
        "E2ETrip",
        "--id",
        "trip-bad",
        "--wait",
        "--input",
        json.dumps({"name": "bob", "fail_at": "flight"}),
    )
    reason = assert_one_line_error(failed)
    assert "'trip-bad' ended COMPENSATED" in reason
    assert "no flight available for bob" in reason

    calls = cluster.calls()
    # The happy trip: one effect per booking, each in the worker serving its queue.
    done = effects(calls, "trip-ok")
    assert by_activity(done) == {"reserve_car": 1, "book_hotel": 1, "book_flight": 1}
    pids = {c["activity"]: c["pid"] for c in done}
    assert pids == {
        "reserve_car": cars_hotels.pid,
        "book_hotel": cars_hotels.pid,
        "book_flight": flights.pid,
    }
    # The failed trip: car and hotel booked, then each cancelled exactly once.
    undone = effects(calls, "trip-bad")
    booked = {
        c["activity"]: c["reservation"]
        for c in undone
        if c["activity"].startswith(("reserve", "book"))
    }
    assert set(booked) == {"reserve_car", "book_hotel"}
    cancelled = Counter(c["reservation"] for c in undone if c["activity"].startswith("cancel"))
    assert cancelled == {booked["reserve_car"]: 1, booked["book_hotel"]: 1}

    described = cluster.saga_json("describe", "trip-bad")
    assert described["status"] == "COMPENSATED"
    assert sorted((s["activity"], s["status"]) for s in described["compensations"]) == [
        ("cancel_car", "COMPLETED"),
        ("cancel_hotel", "COMPLETED"),
    ]

    # The flights worker logged the refusal as a JSON line with the step's fields.
    lines = [json.loads(line) for line in flights.log().splitlines()]
    refusal = next(line for line in lines if line["message"].startswith("activity attempt failed"))
    assert refusal["level"] == "INFO"
    assert (refusal["workflow_id"], refusal["activity"], refusal["attempt"]) == (
        "trip-bad",
        "book_flight",
        1,
    )


async def test_tasks_wait_in_their_queue_until_a_worker_exists(
    cluster: Cluster, broker_url: str
) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    cluster.start_trip("trip-early")

    # No worker has ever declared the cars queue: publishing the task did.
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        queue_name = task_queue_name(cluster.queues["cars"])

        async def waiting() -> int:
            queue = await channel.declare_queue(queue_name, passive=True)
            return queue.declaration_result.message_count or 0

        async with asyncio.timeout(DEADLINE):
            while await waiting() != 1:
                await asyncio.sleep(0.1)

    cluster.worker("cars", "hotels", "flights")
    outcome = cluster.saga_json("result", "trip-early", "--timeout", str(DEADLINE))
    assert outcome["status"] == "COMPLETED"


@pytest.mark.slow
def test_worker_killed_mid_activity_the_other_worker_finishes_with_the_same_key(
    cluster: Cluster,
) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    first = cluster.worker("cars", "hotels", "flights")
    second = cluster.worker("cars", "hotels", "flights")
    release = cluster.folder / "release"
    cluster.start_trip("trip-kill", block_at="hotel", release_file=str(release))

    def hotel_starts() -> list[dict[str, Any]]:
        return [
            c for c in cluster.calls() if c["activity"] == "book_hotel" and c["event"] == "started"
        ]

    wait_until(lambda: len(hotel_starts()) == 1, "hotel booking started", explain=cluster.explain)
    victim, survivor = (first, second) if hotel_starts()[0]["pid"] == first.pid else (second, first)
    victim.kill()  # SIGKILL: no drain, no ack; the broker hands the task on
    release.touch()

    outcome = cluster.saga_json("result", "trip-kill", "--timeout", str(DEADLINE))
    assert outcome["status"] == "COMPLETED"
    starts = hotel_starts()
    assert [c["pid"] for c in starts] == [victim.pid, survivor.pid]
    assert starts[0]["key"] == starts[1]["key"]  # the service can tell it is a repeat
    assert starts[0]["key"].startswith("trip-kill/")
    done = effects(cluster.calls(), "trip-kill")
    assert by_activity(done) == {"reserve_car": 1, "book_hotel": 1, "book_flight": 1}


@pytest.mark.slow
async def test_broker_restart_with_50_sagas_in_flight(
    cluster: Cluster, rabbitmq_broker: TestBroker
) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    cluster.worker("cars", "hotels")
    cluster.worker("flights")
    ids = [f"trip-restart-{i:02d}" for i in range(50)]
    failing = set(ids[::5])  # every fifth trip's flight is refused: compensations too
    client = await Client.connect(database_url=cluster.db, broker_url=cluster.broker)
    async with client:
        for workflow_id in ids:
            trip = {
                "name": workflow_id,
                "delay": 1.0,
                "fail_at": "flight" if workflow_id in failing else None,
            }
            await client.start_workflow("E2ETrip", trip, id=workflow_id)

    # Restart once the steps are under way. stop_app and start_app run in one detached
    # shell, so the broker comes back even if this test dies while it is down.
    wait_until(
        lambda: sum(c["event"] == "started" for c in cluster.calls()) >= 20,
        "20 steps started",
        explain=cluster.explain,
    )
    ctl = shlex.join(rabbitmq_broker.control.command)
    script = f"trap '' PIPE; {ctl} -q stop_app; echo stopped; {ctl} -q start_app"
    restart = await asyncio.create_subprocess_exec(
        "sh", "-c", script, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert restart.stdout is not None
    store = open_store(cluster.db)
    await store.connect()
    try:
        assert await asyncio.wait_for(restart.stdout.readline(), 120) == b"stopped\n"
        in_flight = (await store.count_by_status()).get("RUNNING", 0)
    finally:
        assert await asyncio.wait_for(restart.wait(), 180) == 0
    assert in_flight > 0  # the restart did catch sagas half-way

    async with Client(store, MemoryTransport(), owns_connections=True) as reader:
        async with asyncio.timeout(240):
            while (await store.count_by_status()).get("RUNNING", 0):
                await asyncio.sleep(0.5)
        statuses = {w: (await reader.get_workflow_handle(w).describe()).status.value for w in ids}
        outbox = await store.outbox(only_unsent=False)

    expected = {w: "COMPENSATED" if w in failing else "COMPLETED" for w in ids}
    assert statuses == expected, cluster.explain()
    assert outbox == []
    calls = cluster.calls()
    for workflow_id in ids:
        done = effects(calls, workflow_id)
        # However often a step was delivered, its service applied it once.
        if workflow_id in failing:
            assert by_activity(done) == {
                "reserve_car": 1,
                "book_hotel": 1,
                "cancel_car": 1,
                "cancel_hotel": 1,
            }, workflow_id
            booked = {c["reservation"] for c in done if not c["activity"].startswith("cancel")}
            undone = {c["reservation"] for c in done if c["activity"].startswith("cancel")}
            assert booked == undone
        else:
            assert by_activity(done) == {"reserve_car": 1, "book_hotel": 1, "book_flight": 1}


async def test_malformed_messages_go_to_the_dead_letter_queue_and_serving_goes_on(
    cluster: Cluster, broker_url: str
) -> None:
    cluster.saga_ok("db", "upgrade")
    cluster.coordinator()
    cluster.worker("cars", "hotels", "flights")
    cars = task_queue_name(cluster.queues["cars"])

    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("saga")
        await exchange.publish(aio_pika.Message(b"{not json at all"), routing_key=cars)
        await exchange.publish(
            aio_pika.Message(b'{"kind": "completed", "schema_version": 99}'),
            routing_key=RESULTS_QUEUE,
        )

    outcome = cluster.saga_json(
        "start",
        "E2ETrip",
        "--id",
        "trip-after-poison",
        "--wait",
        "--input",
        json.dumps({"name": "eve"}),
    )
    assert outcome["status"] == "COMPLETED"

    async with RabbitMQTransport(broker_url) as transport:
        async with asyncio.timeout(DEADLINE):
            while True:
                letters = {d.queue: d for d in await transport.dead_letters()}
                if {cars, RESULTS_QUEUE} <= set(letters):
                    break
                await asyncio.sleep(0.2)
    assert letters[cars].body == "{not json at all"
    assert "invalid message" in letters[cars].reason
    assert "invalid message" in letters[RESULTS_QUEUE].reason
    assert "schema_version" in letters[RESULTS_QUEUE].reason
    # Still serving: another saga after the poison.
    again = cluster.saga_json(
        "start",
        "E2ETrip",
        "--id",
        "trip-after-poison-2",
        "--wait",
        "--input",
        json.dumps({"name": "eve"}),
    )
    assert again["status"] == "COMPLETED"
