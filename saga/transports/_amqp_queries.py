"""Queries over RabbitMQ: a request to ``saga.queries``, the reply to the asker's own queue.

Each asking transport opens, on first use, a channel of its own with a server-named
exclusive queue for replies (deleted by the broker when the connection goes). A request
carries that queue's name in ``reply_to`` and an expiration equal to its deadline, so a
question nobody took in time leaves the queue by itself. The coordinator that takes it
publishes the :class:`~saga.messages.QueryReply` to the default exchange under that name.

Nothing here is durable, on purpose: a query changes nothing, so one lost with a
connection is simply asked again (the caller sees a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from pydantic import ValidationError

from saga.errors import TransportError
from saga.messages import QueryReply, QueryRequest
from saga.transports._amqp_topology import declare_queries_queue
from saga.transports.base import QUERIES_QUEUE

if TYPE_CHECKING:
    from saga.transports.rabbitmq import RabbitMQTransport

log = logging.getLogger("saga.transport.rabbitmq")


class QueryRequester:
    """The asking side: one reply queue, many requests in flight matched by id."""

    def __init__(self, transport: RabbitMQTransport) -> None:
        self._transport = transport
        self._channel: AbstractChannel | None = None
        self._reply_to = ""
        self._pending: dict[str, asyncio.Future[QueryReply]] = {}
        self._lock = asyncio.Lock()

    async def _ready(self) -> tuple[AbstractChannel, str]:
        async with self._lock:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel, self._reply_to
            connection = self._transport._require_connection()
            await connection.ready()
            channel = aio_pika.Channel(connection, publisher_confirms=False)
            await channel.initialize()
            try:
                await declare_queries_queue(channel)
                replies = await channel.declare_queue(exclusive=True, auto_delete=True)
                await replies.consume(self._on_reply, no_ack=True)
            except BaseException:
                with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                    await channel.close()
                raise
            self._channel, self._reply_to = channel, replies.name
            return channel, replies.name

    async def request(self, request: QueryRequest, timeout: float) -> QueryReply:  # noqa: ASYNC109
        """Send ``request`` and wait for its reply; TimeoutError after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future: asyncio.Future[QueryReply] = loop.create_future()
        self._pending[request.request_id] = future
        try:
            async with asyncio.timeout(timeout):
                try:
                    channel, reply_to = await self._ready()
                    request = request.model_copy(update={"reply_to": reply_to})
                    message = aio_pika.Message(
                        request.model_dump_json().encode(),
                        headers={
                            **request.headers,
                            "schema_version": request.schema_version,
                            "message_type": "query",
                        },
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                        type="query",
                        app_id="saga",
                        correlation_id=request.request_id,
                        reply_to=reply_to,
                        expiration=max(deadline - loop.time(), 0.001),  # what is left of it
                    )
                    await channel.default_exchange.publish(message, routing_key=QUERIES_QUEUE)
                except CONNECTION_EXCEPTIONS as exc:
                    raise TransportError(
                        f"cannot send a query over RabbitMQ at {self._transport.where}: {exc}"
                    ) from exc
                return await future
        finally:
            self._pending.pop(request.request_id, None)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            reply = QueryReply.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("dropping a query reply that does not parse: %s", exc)
            return
        future = self._pending.get(reply.request_id)
        if future is not None and not future.done():
            future.set_result(reply)  # a reply to a request that gave up is dropped

    async def aclose(self) -> None:
        """Close the reply channel (the broker deletes the reply queue)."""
        channel, self._channel = self._channel, None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    TransportError(f"RabbitMQ transport to {self._transport.where} is closed")
                )
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await channel.close()
