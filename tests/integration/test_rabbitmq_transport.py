"""RabbitMQTransport against a real broker (a vhost of this test run's own)."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from saga.errors import TransportError
from saga.failure import FailureInfo
from saga.messages import ResultMessage, TaskMessage, WorkflowClosedNotice
from saga.transports.base import Reject, results_queue_name, task_queue_name
from saga.transports.rabbitmq import RabbitMQTransport
from tests.fixtures.broker import QueueNames, TestBroker, TransportFactory
from tests.support.tcp_proxy import TcpProxy

RESULTS_QUEUE = results_queue_name(0)  # the shard of make_result()'s messages

pytestmark = [
    pytest.mark.integration,
    # aiormq does not close its socket's StreamWriter when the broker ends the connection
    # (a restart, a FIN); the warning comes from the garbage collector, not from saga.
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
]

T = TypeVar("T")

TRACE = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "tracestate": "saga=t61rcWkgMzE",
    "baggage": "tenant=acme",
}


def make_task(queue: str, seq: int = 1, **changes: Any) -> TaskMessage:
    fields: dict[str, Any] = {
        "workflow_id": "trip-42",
        "run_id": "run-1",
        "workflow_type": "BookTrip",
        "seq": seq,
        "attempt": 1,
        "activity": "reserve_car",
        "queue": queue,
        "args": [{"city": "Lisbon", "days": 3}, 2, None],
        "scheduled_at": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
    }
    fields.update(changes)
    return TaskMessage(**fields)


def make_result(seq: int = 1, **changes: Any) -> ResultMessage:
    fields: dict[str, Any] = {
        "kind": "completed",
        "workflow_id": "trip-42",
        "run_id": "run-1",
        "seq": seq,
        "attempt": 2,
        "result": {"confirmation": "CAR-7", "price": 99.5},
        "started_at": datetime(2024, 5, 1, 12, 30, 16, tzinfo=UTC),
        "finished_at": datetime(2024, 5, 1, 12, 30, 17, tzinfo=UTC),
        "worker": "worker-a",
    }
    fields.update(changes)
    return ResultMessage(**fields)


class Inbox(Generic[T]):
    """Collects what a handler receives; wait for a count instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Condition()

    async def handler(self, item: T) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 15) -> list[T]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.items) >= count)
        return list(self.items)


async def eventually(predicate: Callable[[], bool], timeout: float = 15) -> None:
    """Wait until ``predicate()`` holds (checked every 20 ms), or fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def amqp_channel(broker_url: str) -> AsyncIterator[AbstractChannel]:
    """A plain aio-pika channel on the test vhost, to look behind the transport's back."""
    connection = await aio_pika.connect(broker_url)
    async with connection:
        yield await connection.channel()


async def ready_count(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    count = declared.declaration_result.message_count
    assert count is not None
    return count


async def wait_ready_count(channel: AbstractChannel, queue: str, count: int) -> None:
    """Wait until ``queue`` holds ``count`` ready messages.

    A closed channel's unacked messages are requeued by the queue process a moment
    after the channel is gone, so this polls rather than reads once.
    """
    async with asyncio.timeout(10):
        while await ready_count(channel, queue) != count:
            await asyncio.sleep(0.02)


async def publish_raw(channel: AbstractChannel, body: bytes, routing_key: str) -> None:
    exchange = await channel.get_exchange("saga")
    await exchange.publish(aio_pika.Message(body, content_type="application/json"), routing_key)


@pytest.fixture
async def fast(rabbit_factory: TransportFactory) -> RabbitMQTransport:
    """A transport that redelivers after a failed handler without the usual pause."""
    return await rabbit_factory(redelivery_delay=0.05)


# -- round trips --------------------------------------------------------------------


async def test_task_round_trip_keeps_every_field_and_header(
    rabbit: RabbitMQTransport, queue_name: str
) -> None:
    sent = make_task(
        queue_name,
        headers=TRACE,
        start_to_close_timeout=30.0,
        heartbeat_timeout=5.5,
        compensation=True,
        heartbeat_details=[{"page": 2}],
    )
    inbox: Inbox[TaskMessage] = Inbox()
    await rabbit.consume_tasks([queue_name], inbox.handler, prefetch=1)

    await rabbit.publish_task(sent)

    [received] = await inbox.wait_for(1)
    assert received == sent
    assert received.headers == TRACE
    assert received.idempotency_key == "trip-42/run-1/1"


async def test_published_message_is_persistent_json_with_trace_headers(
    rabbit: RabbitMQTransport, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    sent = make_task(queue_name, headers=TRACE)

    await rabbit.publish_task(sent)

    queue = await amqp_channel.get_queue(task_queue_name(queue_name))
    message = await queue.get(timeout=5)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.type == "task"
    assert message.headers["schema_version"] == 1
    assert message.headers["message_type"] == "task"
    assert {k: message.headers[k] for k in TRACE} == TRACE
    assert TaskMessage.model_validate_json(message.body) == sent
    await message.ack()


async def test_task_published_before_any_consumer_is_kept(
    rabbit_factory: TransportFactory, queue_name: str
) -> None:
    publisher = await rabbit_factory()
    await publisher.publish_task(make_task(queue_name, seq=7))
    await publisher.aclose()

    consumer = await rabbit_factory()
    inbox: Inbox[TaskMessage] = Inbox()
    await consumer.consume_tasks([queue_name], inbox.handler, prefetch=1)

    [received] = await inbox.wait_for(1)
    assert received.seq == 7


async def test_tasks_from_several_queues(
    rabbit: RabbitMQTransport, make_queue_name: QueueNames
) -> None:
    first, second = make_queue_name(), make_queue_name()
    inbox: Inbox[TaskMessage] = Inbox()
    await rabbit.consume_tasks([first, second], inbox.handler, prefetch=2)

    await rabbit.publish_task(make_task(first, seq=1))
    await rabbit.publish_task(make_task(second, seq=2))

    received = await inbox.wait_for(2)
    assert {(t.queue, t.seq) for t in received} == {(first, 1), (second, 2)}


async def test_results_round_trip(rabbit: RabbitMQTransport) -> None:
    completed = make_result(seq=1, headers=TRACE)
    failed = make_result(
        seq=2,
        kind="failed",
        result=None,
        failure=FailureInfo(message="card declined", type="PaymentError"),
    )
    wake = ResultMessage(kind="wake", workflow_id="trip-43")
    inbox: Inbox[ResultMessage] = Inbox()
    await rabbit.consume_results(inbox.handler, prefetch=8, shards=[0])

    for result in (completed, failed, wake):
        await rabbit.publish_result(result)

    received = await inbox.wait_for(3)
    assert sorted(received, key=lambda r: (r.workflow_id, r.seq)) == [completed, failed, wake]


async def test_notices_reach_every_subscriber(rabbit_factory: TransportFactory) -> None:
    publisher = await rabbit_factory()
    notice = WorkflowClosedNotice(
        workflow_id="trip-42", run_id="run-1", status="COMPLETED", headers=TRACE
    )
    await publisher.publish_notice(notice)  # nobody listens yet: fine, and not kept

    inboxes: list[Inbox[WorkflowClosedNotice]] = [Inbox(), Inbox()]
    for inbox in inboxes:
        client = await rabbit_factory()
        await client.subscribe_notices(inbox.handler)

    later = notice.model_copy(update={"workflow_id": "trip-43"})
    await publisher.publish_notice(later)

    for inbox in inboxes:
        assert await inbox.wait_for(1) == [later]


# -- acknowledgement and flow control ---------------------------------------------------


async def test_message_is_not_acked_before_the_handler_returns(
    rabbit: RabbitMQTransport, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    started = asyncio.Event()

    async def never_finishes(task: TaskMessage) -> None:
        started.set()
        await asyncio.Event().wait()

    subscription = await rabbit.consume_tasks([queue_name], never_finishes, prefetch=1)
    await rabbit.publish_task(make_task(queue_name))
    await asyncio.wait_for(started.wait(), 10)

    await subscription.cancel()

    await wait_ready_count(amqp_channel, task_queue_name(queue_name), 1)


async def test_failing_handler_gets_the_message_again_until_it_returns(
    fast: RabbitMQTransport, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    calls: list[int] = []
    first_handled = asyncio.Event()
    inbox: Inbox[int] = Inbox()

    async def fails_once(task: TaskMessage) -> None:
        calls.append(task.seq)
        if calls == [1]:
            raise RuntimeError("flaky")
        if task.seq == 1:
            first_handled.set()
        await inbox.handler(task.seq)

    subscription = await fast.consume_tasks([queue_name], fails_once, prefetch=1)
    await fast.publish_task(make_task(queue_name, seq=1))
    await asyncio.wait_for(first_handled.wait(), 10)
    await fast.publish_task(make_task(queue_name, seq=2))

    # prefetch=1: task 2 can only be delivered once task 1 has been acked.
    assert await inbox.wait_for(2) == [1, 2]
    assert calls == [1, 1, 2]
    await subscription.cancel()
    queue = await amqp_channel.get_queue(task_queue_name(queue_name))
    while (left := await queue.get(fail=False)) is not None:
        assert TaskMessage.model_validate_json(left.body).seq == 2  # 1 is gone for good
        await left.ack()


async def test_prefetch_bounds_concurrent_handlers(
    rabbit: RabbitMQTransport, queue_name: str
) -> None:
    active = 0
    most = 0
    two_running = asyncio.Event()
    third = asyncio.Event()
    release = asyncio.Event()
    done: Inbox[int] = Inbox()

    async def slow(task: TaskMessage) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        if active == 2:
            two_running.set()
        if active > 2:
            third.set()
        await release.wait()
        active -= 1
        await done.handler(task.seq)

    await rabbit.consume_tasks([queue_name], slow, prefetch=2)
    for seq in range(1, 6):
        await rabbit.publish_task(make_task(queue_name, seq=seq))

    await asyncio.wait_for(two_running.wait(), 10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(third.wait(), 0.5)
    release.set()

    assert sorted(await done.wait_for(5)) == [1, 2, 3, 4, 5]
    assert most == 2


# -- dead letters -----------------------------------------------------------------------


async def test_reject_and_malformed_bodies_are_dead_lettered_while_consuming_goes_on(
    rabbit: RabbitMQTransport, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    inbox: Inbox[int] = Inbox()

    async def handler(task: TaskMessage) -> None:
        if task.seq == 2:
            raise Reject("card declined for good")
        await inbox.handler(task.seq)

    await rabbit.consume_tasks([queue_name], handler, prefetch=4)
    broker_queue = task_queue_name(queue_name)
    future = make_task(queue_name, seq=9).model_dump(mode="json") | {"schema_version": 2}
    await publish_raw(amqp_channel, b"{not json", broker_queue)
    await publish_raw(amqp_channel, b'{"hello": "world"}', broker_queue)
    await publish_raw(amqp_channel, json.dumps(future).encode(), broker_queue)
    for seq in (1, 2, 3):
        await rabbit.publish_task(make_task(queue_name, seq=seq))

    assert sorted(await inbox.wait_for(2)) == [1, 3]
    await eventually(lambda: rabbit.dead_lettered == 4)

    letters = await rabbit.dead_letters()
    assert len(letters) == 4
    assert {letter.queue for letter in letters} == {broker_queue}
    reasons = sorted(letter.reason for letter in letters)
    assert reasons[0] == "card declined for good"
    assert all(reason.startswith("invalid message:") for reason in reasons[1:])
    assert any("Invalid JSON" in reason for reason in reasons)
    assert any("schema_version" in reason for reason in reasons)
    bodies = {letter.body for letter in letters}
    assert {"{not json", '{"hello": "world"}'} <= bodies
    rejected = next(letter for letter in letters if letter.reason == "card declined for good")
    assert TaskMessage.model_validate_json(rejected.body).seq == 2
    assert rejected.headers["x-saga-original-queue"] == broker_queue
    assert rejected.headers["x-saga-reason"] == "card declined for good"
    assert await ready_count(amqp_channel, broker_queue) == 0


async def test_malformed_result_is_dead_lettered(
    rabbit: RabbitMQTransport, amqp_channel: AbstractChannel
) -> None:
    inbox: Inbox[ResultMessage] = Inbox()
    await rabbit.consume_results(inbox.handler, prefetch=4, shards=[0])

    await publish_raw(amqp_channel, b'{"kind": "exploded"}', RESULTS_QUEUE)
    await rabbit.publish_result(make_result())

    assert await inbox.wait_for(1) == [make_result()]
    await eventually(lambda: rabbit.dead_lettered == 1)
    [letter] = await rabbit.dead_letters()
    assert letter.queue == RESULTS_QUEUE
    assert "kind" in letter.reason


async def test_dead_letters_peeks_and_redrive_sends_them_back(
    rabbit: RabbitMQTransport, queue_name: str
) -> None:
    rejecting = True
    inbox: Inbox[TaskMessage] = Inbox()

    async def handler(task: TaskMessage) -> None:
        if rejecting:
            raise Reject("downstream said no")
        await inbox.handler(task)

    await rabbit.consume_tasks([queue_name], handler, prefetch=1)
    sent = [make_task(queue_name, seq=seq, headers=TRACE) for seq in (1, 2, 3)]
    for task in sent:
        await rabbit.publish_task(task)
    await eventually(lambda: rabbit.dead_lettered == 3)

    first = await rabbit.dead_letters(limit=2)
    assert len(first) == 2
    again = await rabbit.dead_letters()
    assert len(again) == 3
    assert again[:2] == first  # peeking took nothing and kept the order
    assert [TaskMessage.model_validate_json(letter.body) for letter in again] == sent

    rejecting = False
    assert await rabbit.redrive(limit=2) == 2
    assert await rabbit.redrive() == 1
    assert await rabbit.redrive() == 0

    received = await inbox.wait_for(3)
    assert sorted(received, key=lambda t: t.seq) == sent
    assert await rabbit.dead_letters() == []


async def test_redrive_one_queue_and_drop_the_dead_letter_headers(
    rabbit: RabbitMQTransport, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    async def reject(message: Any) -> None:
        raise Reject("no")

    tasks = await rabbit.consume_tasks([queue_name], reject, prefetch=1)
    results = await rabbit.consume_results(reject, prefetch=1, shards=[0])
    await rabbit.publish_task(make_task(queue_name, headers=TRACE))
    await rabbit.publish_result(make_result())
    await eventually(lambda: rabbit.dead_lettered == 2)
    await tasks.cancel()
    await results.cancel()

    assert await rabbit.redrive(queue=task_queue_name(queue_name)) == 1

    [left] = await rabbit.dead_letters()
    assert left.queue == RESULTS_QUEUE
    queue = await amqp_channel.get_queue(task_queue_name(queue_name))
    message = await queue.get(timeout=5)
    assert {k: message.headers[k] for k in TRACE} == TRACE
    assert not [k for k in message.headers if k.startswith("x-saga-")]
    await message.ack()


# -- publishing guarantees ----------------------------------------------------------------


async def test_publish_declares_again_when_its_queue_vanished(
    rabbit: RabbitMQTransport, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    broker_queue = task_queue_name(queue_name)
    await rabbit.publish_task(make_task(queue_name, seq=1))
    await amqp_channel.queue_delete(broker_queue)

    # The transport believes the queue exists; mandatory=True makes the broker return
    # the message, and the transport declares again and retries instead of losing it.
    await rabbit.publish_task(make_task(queue_name, seq=2))

    queue = await amqp_channel.get_queue(broker_queue)
    message = await queue.get(timeout=5)
    assert TaskMessage.model_validate_json(message.body).seq == 2
    await message.ack()


async def test_concurrent_publishes_are_all_confirmed(
    rabbit: RabbitMQTransport, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    await asyncio.gather(*(rabbit.publish_task(make_task(queue_name, seq=s)) for s in range(200)))

    assert await ready_count(amqp_channel, task_queue_name(queue_name)) == 200


# -- connecting and closing -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_connect_to_a_dead_port_fails_fast_and_cleanly() -> None:
    port = free_port()
    transport = RabbitMQTransport(
        f"amqp://saga:hunter2-secret@127.0.0.1:{port}/orders", connect_timeout=1.0
    )
    started = time.monotonic()

    with pytest.raises(TransportError) as caught:
        await transport.connect()

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"127.0.0.1:{port}/orders" in message
    assert "hunter2" not in message
    assert "\n" not in message
    await transport.aclose()


async def test_wrong_password_fails_at_once_without_the_password(
    rabbitmq_broker: TestBroker,
) -> None:
    url = rabbitmq_broker.url().replace(":guest@", ":not-the-password@")
    transport = RabbitMQTransport(url, connect_timeout=30)
    started = time.monotonic()

    with pytest.raises(TransportError, match="refused the login") as caught:
        await transport.connect()

    assert time.monotonic() - started < 10
    assert "not-the-password" not in str(caught.value)


async def test_use_before_connect_and_after_close_raises(
    rabbit_factory: TransportFactory, queue_name: str
) -> None:
    transport = await rabbit_factory(connect=False)
    with pytest.raises(TransportError, match="not connected"):
        await transport.publish_task(make_task(queue_name))

    await transport.connect()
    await transport.aclose()
    await transport.aclose()  # idempotent

    with pytest.raises(TransportError, match="closed"):
        await transport.publish_task(make_task(queue_name))
    with pytest.raises(TransportError, match="closed"):
        await transport.connect()


async def test_aclose_cancels_subscriptions_and_requeues(
    rabbit_factory: TransportFactory, queue_name: str, amqp_channel: AbstractChannel
) -> None:
    transport = await rabbit_factory()
    started = asyncio.Event()

    async def stuck(task: TaskMessage) -> None:
        started.set()
        await asyncio.Event().wait()

    await transport.consume_tasks([queue_name], stuck, prefetch=1)
    await transport.publish_task(make_task(queue_name))
    await asyncio.wait_for(started.wait(), 10)

    await transport.aclose()

    await wait_ready_count(amqp_channel, task_queue_name(queue_name), 1)


# -- reconnection -----------------------------------------------------------------------


@pytest.fixture
async def proxy(rabbitmq_broker: TestBroker) -> AsyncIterator[TcpProxy]:
    async with TcpProxy(rabbitmq_broker.host, rabbitmq_broker.port) as running:
        yield running


async def test_consuming_and_publishing_carry_on_after_the_connection_is_cut(
    rabbitmq_broker: TestBroker,
    rabbit_factory: TransportFactory,
    proxy: TcpProxy,
    queue_name: str,
) -> None:
    url = rabbitmq_broker.url(host="127.0.0.1", port=proxy.port)
    transport = await rabbit_factory(url, reconnect_interval=0.1, redelivery_delay=0.05)
    total = 40
    seen: set[int] = set()
    halfway = asyncio.Event()
    everything = asyncio.Event()

    async def handler(task: TaskMessage) -> None:
        await asyncio.sleep(0.01)  # keep some messages in flight when the cut comes
        seen.add(task.seq)
        if len(seen) >= 10:
            halfway.set()
        if len(seen) == total:
            everything.set()

    await transport.consume_tasks([queue_name], handler, prefetch=5)
    for seq in range(1, 21):
        await transport.publish_task(make_task(queue_name, seq=seq))
    await asyncio.wait_for(halfway.wait(), 15)

    await proxy.cut()
    publishing = [
        asyncio.create_task(transport.publish_task(make_task(queue_name, seq=seq)))
        for seq in range(21, total + 1)
    ]
    finished, _ = await asyncio.wait(publishing, timeout=0.5)
    assert not finished, "a publish returned while the broker was unreachable"
    await proxy.restore()

    await asyncio.wait_for(asyncio.gather(*publishing), 30)
    await asyncio.wait_for(everything.wait(), 30)
    assert seen == set(range(1, total + 1))
    assert proxy.accepted >= 2  # it did reconnect


async def test_publish_gives_up_when_the_broker_stays_away_then_recovers(
    rabbitmq_broker: TestBroker,
    rabbit_factory: TransportFactory,
    proxy: TcpProxy,
    queue_name: str,
) -> None:
    url = rabbitmq_broker.url(host="127.0.0.1", port=proxy.port)
    transport = await rabbit_factory(url, reconnect_interval=0.1, publish_timeout=1.0)
    inbox: Inbox[int] = Inbox()

    async def handler(task: TaskMessage) -> None:
        await inbox.handler(task.seq)

    await transport.consume_tasks([queue_name], handler, prefetch=1)
    await proxy.cut()

    started = time.monotonic()
    with pytest.raises(TransportError, match=f"127.0.0.1:{proxy.port}/saga-test-"):
        await transport.publish_task(make_task(queue_name, seq=1))
    assert time.monotonic() - started < 5

    await proxy.restore()
    await proxy.wait_accepted(2)
    await transport.publish_task(make_task(queue_name, seq=2))
    assert await inbox.wait_for(1) == [2]


@pytest.mark.slow
async def test_consuming_and_publishing_survive_a_broker_restart(
    rabbitmq_broker: TestBroker, rabbit_factory: TransportFactory, queue_name: str
) -> None:
    transport = await rabbit_factory(reconnect_interval=0.5, publish_timeout=90)
    inbox: Inbox[int] = Inbox()

    async def handler(task: TaskMessage) -> None:
        await inbox.handler(task.seq)

    await transport.consume_tasks([queue_name], handler, prefetch=1)
    await transport.publish_task(make_task(queue_name, seq=1))
    await inbox.wait_for(1)

    # stop_app and start_app run in one detached shell, so the broker comes back even
    # if this test is interrupted or its process killed while the broker is down.
    ctl = shlex.join(rabbitmq_broker.control.command)
    script = f"trap '' PIPE; {ctl} -q stop_app; echo stopped; {ctl} -q start_app"
    restart = await asyncio.create_subprocess_exec(
        "sh", "-c", script, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert restart.stdout is not None
    try:
        assert await asyncio.wait_for(restart.stdout.readline(), 60) == b"stopped\n"
        during = asyncio.create_task(transport.publish_task(make_task(queue_name, seq=2)))
    finally:
        assert await asyncio.wait_for(restart.wait(), 120) == 0

    await asyncio.wait_for(during, 90)
    assert await inbox.wait_for(2, timeout=90) == [1, 2]
