"""The RabbitMQ transport: durable queues, publisher confirms, manual acks, robust reconnect.

The only module of saga (with its ``_amqp_*`` helpers) that speaks aio-pika. The
topology is drawn in :mod:`saga.transports._amqp_topology`.

Publishing waits for the broker's confirm and sets ``mandatory``, so a message the
broker could not route is retried (after declaring its queue again) and in the end
raised as :class:`~saga.errors.TransportError`, never dropped. Consuming acks only
after the handler returns; a handler that raises :class:`~saga.transports.base.Reject`,
or a body that does not parse, sends the message to ``saga.dead-letter`` with the
reason in its headers. Operators list those with :meth:`RabbitMQTransport.dead_letters`
and send them back with :meth:`RabbitMQTransport.redrive`.

Example::

    async with RabbitMQTransport("amqp://guest:guest@localhost/") as transport:
        await transport.publish_task(task)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    AuthenticationError,
    ChannelClosed,
    ChannelInvalidStateError,
    DeliveryError,
    ProbableAuthenticationError,
)

from saga.errors import ConfigurationError, TransportError
from saga.messages import (
    QueryReply,
    QueryRequest,
    ResultMessage,
    TaskMessage,
    WorkflowClosedNotice,
)
from saga.transports._amqp_consumer import Consumer, Source, message_fields, settle
from saga.transports._amqp_queries import QueryRequester
from saga.transports._amqp_topology import (
    DEAD_LETTER_EXCHANGE,
    EXCHANGE,
    NOTICES_EXCHANGE,
    DeadLetter,
    Declarations,
    dead_letter_headers,
    declare_topology,
    is_dead_letter_header,
    is_work_queue,
    origin,
    to_dead_letter,
)
from saga.transports.base import (
    DEAD_LETTER_QUEUE,
    QUERIES_QUEUE,
    NoticeHandler,
    QueryHandler,
    ResultHandler,
    Subscription,
    TaskHandler,
    results_queue_name,
    task_queue_name,
)

__all__ = ["DeadLetter", "RabbitMQTransport"]

log = logging.getLogger("saga.transport.rabbitmq")

_MessageType = Literal["task", "result", "notice", "reply"]
_Envelope = TaskMessage | ResultMessage | WorkflowClosedNotice | QueryReply


class RabbitMQTransport:
    """A :class:`~saga.transports.base.Transport` over RabbitMQ.

    Args:
        url: ``amqp://user:password@host:port/vhost``; query parameters such as
            ``heartbeat`` or ``name`` go to the AMQP client.
        connect_timeout: How long :meth:`connect` keeps trying before it raises.
        reconnect_interval: Pause between reconnection attempts after a lost connection.
        publish_timeout: How long a publish may wait, reconnection included, for a confirm.
        publish_attempts: How often a publish the broker refused (unroutable, nacked)
            is tried before it raises.
        redelivery_delay: Pause before a message whose handler raised is requeued.
    """

    durable = True

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        reconnect_interval: float = 1.0,
        publish_timeout: float = 30.0,
        publish_attempts: int = 5,
        redelivery_delay: float = 0.5,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigurationError(f"not a RabbitMQ URL: {parts.scheme}://{parts.hostname}")
        if min(connect_timeout, reconnect_interval, publish_timeout) <= 0 or publish_attempts < 1:
            raise ConfigurationError("RabbitMQ timeouts must be positive, attempts at least 1")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        self.where = f"{parts.hostname}:{port}/{'' if vhost == '/' else vhost}"
        """``host:port/vhost`` of the broker, safe to log (no credentials)."""
        self._url = url
        self._password = parts.password or ""
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._publish_timeout = publish_timeout
        self._publish_attempts = publish_attempts
        self.redelivery_delay = redelivery_delay
        self.dead_lettered = 0
        """Messages this transport sent to the dead-letter queue."""
        self._connection: AbstractRobustConnection | None = None
        self._publisher: Declarations | None = None
        self._publisher_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._subscriptions: set[Consumer[Any]] = set()
        self._queries: QueryRequester | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> RabbitMQTransport:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Connect, retrying with backoff for ``connect_timeout``; then TransportError."""
        async with self._connect_lock:
            if self._closed:
                raise TransportError(f"RabbitMQ transport to {self.where} is closed")
            if self._connection is not None:
                return
            connection = await self._open_connection()
            if self._closed:  # aclose() ran while we were connecting
                await connection.close()
                raise TransportError(f"RabbitMQ transport to {self.where} is closed")
            connection.close_callbacks.add(self._on_connection_lost)
            connection.reconnect_callbacks.add(self._on_reconnected)
            self._connection = connection
            try:
                await self._declarations(asyncio.get_running_loop().time() + self._connect_timeout)
            except BaseException as exc:
                self._connection = self._publisher = None
                with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                    await connection.close()
                if isinstance(exc, CONNECTION_EXCEPTIONS):
                    raise TransportError(
                        f"cannot declare saga's queues on RabbitMQ at {self.where}: "
                        f"{self._describe(exc)}"
                    ) from exc
                raise
        log.info("connected to RabbitMQ", extra={"broker": self.where})

    async def _open_connection(self) -> AbstractRobustConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        delay = 0.05
        attempts = 0
        while True:
            attempts += 1
            try:
                return await aio_pika.connect_robust(
                    self._url,
                    timeout=max(deadline - loop.time(), 0.1),
                    reconnect_interval=self._reconnect_interval,
                    fail_fast=True,
                )
            except (AuthenticationError, ProbableAuthenticationError) as exc:
                raise TransportError(
                    f"RabbitMQ at {self.where} refused the login: {self._describe(exc)}"
                ) from exc
            except CONNECTION_EXCEPTIONS as exc:
                if loop.time() + delay >= deadline:
                    raise TransportError(
                        f"cannot connect to RabbitMQ at {self.where} ({attempts} attempts "
                        f"in {self._connect_timeout:g}s): {self._describe(exc)}"
                    ) from exc
                log.info(
                    "RabbitMQ not reachable yet: %s",
                    self._describe(exc),
                    extra={"broker": self.where, "attempt": attempts},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _describe(self, exc: BaseException) -> str:
        """One line about a driver error, without the password."""
        frame = next((arg for arg in exc.args if hasattr(arg, "reply_text")), None)
        text = str(getattr(frame, "reply_text", "") or exc) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "******")
        return " ".join(text.split())

    async def aclose(self) -> None:
        """Cancel every subscription and close the connection; idempotent."""
        self._closed = True
        subscriptions, self._subscriptions = list(self._subscriptions), set()
        for subscription in subscriptions:
            await subscription.cancel()
        queries, self._queries = self._queries, None
        if queries is not None:
            await queries.aclose()
        connection, self._connection = self._connection, None
        self._publisher = None
        if connection is not None:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await connection.close()
            log.info("disconnected from RabbitMQ", extra={"broker": self.where})

    @property
    def connected(self) -> bool:
        """Connected now (False while the connection is being re-established)."""
        return self._connection is not None and self._connection.connected.is_set()

    def _require_connection(self) -> AbstractRobustConnection:
        """The live connection; TransportError before :meth:`connect` or after close."""
        if self._connection is None:
            state = "closed" if self._closed else "not connected: call connect() first"
            raise TransportError(f"RabbitMQ transport to {self.where} is {state}")
        return self._connection

    def _on_connection_lost(self, _: object, exc: BaseException | None) -> None:
        if not self._closed:
            log.warning(
                "lost the RabbitMQ connection: %s",
                exc,
                extra={"broker": self.where},
            )

    def _on_reconnected(self, _: object) -> None:
        log.info("reconnected to RabbitMQ", extra={"broker": self.where})

    # -- publishing -----------------------------------------------------------------

    async def publish_task(self, task: TaskMessage) -> None:
        """Send a task to ``saga.tasks.<queue>``; returns once the broker confirmed it."""
        queue = task_queue_name(task.queue)
        await self._publish(task, "task", EXCHANGE, queue, declare=queue)

    async def publish_result(self, result: ResultMessage) -> None:
        """Send a result or wake-up to ``saga.results.<shard>``; returns once confirmed.

        Wake-ups are not written to disk: what they announce is in the database, and
        the coordinators' sweep finds it if a broker restart loses them.
        """
        queue = results_queue_name(result.shard)
        persistent = result.kind != "wake"
        await self._publish(result, "result", EXCHANGE, queue, declare=queue, persistent=persistent)

    async def publish_notice(self, notice: WorkflowClosedNotice) -> None:
        """Broadcast to every current subscriber (none is fine); returns once confirmed."""
        await self._publish(
            notice, "notice", NOTICES_EXCHANGE, "", mandatory=False, persistent=False
        )

    async def _publish(
        self,
        envelope: _Envelope,
        kind: _MessageType,
        exchange: str,
        routing_key: str,
        *,
        declare: str | None = None,
        mandatory: bool = True,
        persistent: bool = True,
    ) -> None:
        headers: dict[str, Any] = dict(envelope.headers)
        headers.update(schema_version=envelope.schema_version, message_type=kind)
        message = aio_pika.Message(
            envelope.model_dump_json().encode(),
            headers=headers,
            content_type="application/json",
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            type=kind,
            app_id="saga",
            correlation_id=getattr(envelope, "workflow_id", None),
            timestamp=datetime.now(UTC),
        )
        fields = {"queue": declare or exchange, **message_fields(envelope)}
        await self._send(message, exchange, routing_key, declare, mandatory, fields)

    async def _send(
        self,
        message: aio_pika.Message,
        exchange: str,
        routing_key: str,
        declare: str | None,
        mandatory: bool,
        fields: dict[str, Any],
        attempts: int | None = None,
    ) -> None:
        """Publish with confirm; wait out reconnections, retry refusals, then raise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        attempts = attempts or self._publish_attempts
        refusals = 0
        delay = 0.05
        while True:
            try:
                declarations = await self._declarations(deadline)
                if not declarations.ready(declare):  # (the common case costs no task)
                    await _unless_closed(
                        declarations.channel, declarations.ensure(declare), deadline
                    )
                publish = declarations.exchanges[exchange].publish(
                    message, routing_key, mandatory=mandatory
                )
                await _unless_closed(declarations.channel, publish, deadline)
                return
            except (DeliveryError, ChannelClosed) as exc:
                # Unroutable, nacked, or the channel refused (e.g. a missing exchange):
                # declare everything again and retry, a bounded number of times.
                refusals += 1
                error: BaseException = exc
                if self._publisher is not None:
                    self._publisher.forget()
                if refusals >= attempts:
                    raise TransportError(
                        f"RabbitMQ at {self.where} refused a message for {declare or exchange} "
                        f"{refusals} times: {self._describe(exc)}"
                    ) from exc
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                error = exc  # aiormq cancels pending confirms when the connection drops
            except CONNECTION_EXCEPTIONS as exc:
                error = exc
            if self._closed:
                raise TransportError(f"RabbitMQ transport to {self.where} is closed") from error
            if loop.time() + delay >= deadline:
                raise TransportError(
                    f"could not publish to {declare or exchange} on RabbitMQ at {self.where} "
                    f"within {self._publish_timeout:g}s: {self._describe(error)}"
                ) from error
            log.info("publish will be retried: %s", self._describe(error), extra=fields)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _declarations(self, deadline: float) -> Declarations:
        """The publishing channel (opened again after a reconnect) and its declarations."""
        publisher = self._publisher
        if publisher is not None and not publisher.channel.is_closed:
            return publisher
        connection = self._require_connection()
        async with asyncio.timeout_at(deadline):
            await connection.ready()
            async with self._publisher_lock:
                publisher = self._publisher
                if publisher is not None and not publisher.channel.is_closed:
                    return publisher
                channel = aio_pika.Channel(
                    connection, publisher_confirms=True, on_return_raises=True
                )
                await channel.initialize()
                try:
                    publisher = Declarations(channel)
                    await publisher.ensure(None)
                except BaseException:
                    with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                        await channel.close()
                    raise
                self._publisher = publisher
                return publisher

    # -- consuming ------------------------------------------------------------------

    async def consume_tasks(
        self, queues: Sequence[str], handler: TaskHandler, *, prefetch: int
    ) -> Subscription:
        """Deliver tasks of the given activity queues, at most ``prefetch`` unacked."""
        sources = [Source(task_queue_name(queue)) for queue in queues]
        return await self._subscribe(Consumer(self, sources, TaskMessage, handler, prefetch))

    async def consume_results(
        self, handler: ResultHandler, *, prefetch: int, shards: Sequence[int]
    ) -> Subscription:
        """Deliver results and wake-ups of ``shards``, at most ``prefetch`` unacked."""
        sources = [Source(results_queue_name(shard)) for shard in shards]
        consumer = Consumer(self, sources, ResultMessage, handler, prefetch)
        return await self._subscribe(consumer)

    async def subscribe_notices(self, handler: NoticeHandler) -> Subscription:
        """Deliver every notice published from now on (a private queue per subscriber)."""
        consumer = Consumer(self, [Source(None)], WorkflowClosedNotice, handler, prefetch=16)
        return await self._subscribe(consumer)

    # -- queries --------------------------------------------------------------------

    async def request_query(self, request: QueryRequest, *, timeout: float) -> QueryReply:  # noqa: ASYNC109
        """Ask the coordinators (through ``saga.queries``); TimeoutError without a reply."""
        self._require_connection()
        if self._queries is None:
            self._queries = QueryRequester(self)
        return await self._queries.request(request, timeout)

    async def serve_queries(self, handler: QueryHandler) -> Subscription:
        """Answer requests from ``saga.queries``; each reply goes to its ``reply_to``."""

        async def answer(request: QueryRequest) -> None:
            reply = await handler(request)
            if not request.reply_to:
                return
            try:  # best effort: an asker that gave up (and its queue) may be gone
                await self._publish(
                    reply, "reply", "", request.reply_to, mandatory=False, persistent=False
                )
            except TransportError as exc:
                log.warning("query reply not sent: %s", exc, extra=message_fields(request))

        source = Source(QUERIES_QUEUE, transient=True)
        return await self._subscribe(Consumer(self, [source], QueryRequest, answer, prefetch=16))

    async def _subscribe(self, consumer: Consumer[Any]) -> Subscription:
        self._require_connection()
        try:
            await consumer.start()
        except CONNECTION_EXCEPTIONS as exc:
            raise TransportError(
                f"cannot consume from RabbitMQ at {self.where}: {self._describe(exc)}"
            ) from exc
        self._subscriptions.add(consumer)
        log.info("consuming", extra={"queues": consumer.queues, "broker": self.where})
        return consumer

    def _forget(self, consumer: Consumer[Any]) -> None:
        """A subscription was cancelled."""
        self._subscriptions.discard(consumer)

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        queue: str,
        reason: str,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Park a delivered message in ``saga.dead-letter`` with the reason, then ack it."""
        fields = {"queue": queue, **(fields or {}), "reason": reason}
        parked = aio_pika.Message(
            message.body,
            headers=dead_letter_headers(message, queue, reason),
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=message.type,
            app_id=message.app_id,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
        )
        try:
            await self._send(parked, DEAD_LETTER_EXCHANGE, queue, None, True, fields)
        except TransportError:
            log.exception("could not dead-letter a message; it will be redelivered", extra=fields)
            await asyncio.sleep(self.redelivery_delay)
            await settle(message.nack(requeue=True), fields)
            return
        self.dead_lettered += 1
        log.warning("message dead-lettered", extra=fields)
        await settle(message.ack(), fields)

    # -- dead letters ---------------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The first ``limit`` messages of ``saga.dead-letter``, left in place."""
        async with self._scratch_channel(confirms=False) as channel:
            await declare_topology(channel)
            queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
            letters: list[DeadLetter] = []
            # Unacked until the channel closes, which puts them all back in order.
            while len(letters) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(to_dead_letter(message))
            return letters

    async def redrive(self, limit: int = 100, *, queue: str | None = None) -> int:
        """Move up to ``limit`` dead letters back to their original queue.

        Args:
            limit: The most messages to move.
            queue: Only those that came from this broker queue (e.g. ``saga.results``).

        Returns:
            How many were moved. Those that cannot go back (their queue is gone, or
            they do not match ``queue``) stay in the dead-letter queue.
        """
        moved = 0
        async with self._scratch_channel(confirms=False) as channel:
            await declare_topology(channel)
            dead = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
            while moved < limit:
                message = await dead.get(no_ack=False, fail=False)
                if message is None:
                    break
                headers = dict(message.headers or {})
                source, exchange, _ = origin(headers)
                if not source or (queue is not None and source != queue):
                    continue  # stays unacked until the channel closes, then requeued
                fields = {"queue": source}
                back = aio_pika.Message(
                    message.body,
                    headers={k: v for k, v in headers.items() if not is_dead_letter_header(k)},
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type=message.type,
                    app_id=message.app_id,
                    correlation_id=message.correlation_id,
                    timestamp=message.timestamp,
                )
                try:
                    if is_work_queue(source):
                        await self._send(back, EXCHANGE, source, source, True, fields)
                    elif exchange == NOTICES_EXCHANGE:
                        await self._send(back, NOTICES_EXCHANGE, "", None, False, fields)
                    else:
                        await self._send(back, "", source, None, True, fields, attempts=1)
                except TransportError as exc:
                    log.warning("dead letter not redriven: %s", exc, extra=fields)
                    continue
                await message.ack()
                moved += 1
        if moved:
            log.info("dead letters redriven", extra={"count": moved, "broker": self.where})
        return moved

    @contextlib.asynccontextmanager
    async def _scratch_channel(self, *, confirms: bool) -> AsyncIterator[AbstractChannel]:
        connection = self._require_connection()
        try:
            await asyncio.wait_for(connection.ready(), self._publish_timeout)
            channel: AbstractChannel = aio_pika.Channel(connection, publisher_confirms=confirms)
            await channel.initialize()
        except CONNECTION_EXCEPTIONS as exc:
            raise TransportError(
                f"cannot open a channel on RabbitMQ at {self.where}: {self._describe(exc)}"
            ) from exc
        try:
            yield channel
        except CONNECTION_EXCEPTIONS as exc:
            raise TransportError(f"RabbitMQ at {self.where} failed: {self._describe(exc)}") from exc
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                    await channel.close()


async def _unless_closed(
    channel: AbstractChannel, operation: Awaitable[object], deadline: float
) -> None:
    """Await ``operation`` unless ``channel`` closes first (then ChannelInvalidStateError).

    A publish caught by a dropped connection can wait for its write to drain forever;
    racing it against the channel's end turns that into an error we retry on.
    """
    running: asyncio.Future[object] = asyncio.ensure_future(operation)
    closed = cast("asyncio.Future[object]", channel.closed())
    lost = False

    def on_closed(_: object) -> None:
        nonlocal lost
        if not running.done():
            lost = True
            running.cancel()

    closed.add_done_callback(on_closed)
    try:
        async with asyncio.timeout_at(deadline):
            await running
    except asyncio.CancelledError:
        if not lost:
            raise
        raise ChannelInvalidStateError("the channel closed before the broker answered") from None
    except TimeoutError:
        raise TimeoutError("no answer from the broker in time") from None
    finally:
        closed.remove_done_callback(on_closed)
        if not running.done():
            running.cancel()
