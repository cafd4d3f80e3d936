"""One subscription: a channel of its own, QoS, consumers, and a supervisor that reopens it.

The connection reconnects by itself (``connect_robust``); channels are ours to reopen.
aio-pika's robust channels would also do it, but they resurrect channels that were
closed on purpose, so each subscription watches its channel and opens a fresh one
(declaring everything again) whenever the old one closes without being cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from pydantic import BaseModel, ValidationError

from saga.errors import SagaError, TransportError
from saga.transports._amqp_topology import (
    EXCHANGE,
    NOTICES_EXCHANGE,
    declare_queries_queue,
    declare_topology,
    declare_work_queue,
)
from saga.transports.base import Reject

if TYPE_CHECKING:
    from saga.transports.rabbitmq import RabbitMQTransport

log = logging.getLogger("saga.transport.rabbitmq")

M = TypeVar("M", bound=BaseModel)

_REOPEN_DELAY = 0.1
_REOPEN_DELAY_MAX = 5.0


@dataclass(frozen=True)
class Source:
    """Where a subscription reads: a durable work queue, or a private notice queue."""

    queue: str | None
    """A work queue name, or None for a fresh exclusive queue bound to ``saga.notices``."""
    transient: bool = False
    """``queue`` is ``saga.queries``: not durable, no dead-lettering (see the topology)."""


def message_fields(envelope: BaseModel) -> dict[str, Any]:
    """Log fields of an envelope: which workflow, step and attempt."""
    fields = ("workflow_id", "run_id", "seq", "attempt", "activity", "kind")
    return {name: getattr(envelope, name) for name in fields if hasattr(envelope, name)}


class Consumer(Generic[M]):
    """A running subscription; see :class:`saga.transports.base.Subscription`."""

    def __init__(
        self,
        transport: RabbitMQTransport,
        sources: Sequence[Source],
        model: type[M],
        handler: Callable[[M], Awaitable[None]],
        prefetch: int,
    ) -> None:
        self._transport = transport
        self._sources = list(sources)
        self._model = model
        self._handler = handler
        self._prefetch = max(1, prefetch)
        # The broker bounds unacked messages per channel; this bounds handlers across
        # a reconnect, when the old channel's handlers may still be running.
        self._slots = asyncio.Semaphore(self._prefetch)
        self._channel: AbstractChannel | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._cancelled = False
        self.queues: list[str] = []

    async def start(self) -> None:
        """Open the channel and start consuming; raises what the broker raised."""
        self._channel = await self._open()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _open(self) -> AbstractChannel:
        connection = self._transport._require_connection()
        channel = aio_pika.Channel(connection, publisher_confirms=False)
        await channel.initialize()
        try:
            await channel.set_qos(prefetch_count=self._prefetch, global_=True)
            exchanges = await declare_topology(channel)
            names = []
            for source in self._sources:
                if source.queue is None:
                    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                    await queue.bind(exchanges[NOTICES_EXCHANGE], routing_key="")
                elif source.transient:
                    queue = await declare_queries_queue(channel)
                else:
                    queue = await declare_work_queue(channel, exchanges[EXCHANGE], source.queue)
                await queue.consume(self._deliverer(source.queue or NOTICES_EXCHANGE))
                names.append(queue.name)
        except BaseException:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await channel.close()
            raise
        self.queues = names
        return channel

    async def _supervise(self) -> None:
        delay = _REOPEN_DELAY
        while True:
            if self._channel is not None:
                # Shielded: cancelling this task must not cancel (= mark closed) the
                # channel's own future.
                await asyncio.shield(self._channel.closed())
                log.warning(
                    "consumer channel closed; reopening",
                    extra={"queues": self.queues, "broker": self._transport.where},
                )
                self._channel = None
            await asyncio.sleep(delay)
            try:
                await self._transport._require_connection().ready()
                self._channel = await self._open()
            except TransportError:
                return  # the transport is closing
            except CONNECTION_EXCEPTIONS as exc:
                delay = min(delay * 2, _REOPEN_DELAY_MAX)
                log.info(
                    "consumer not reopened yet: %s",
                    exc,
                    extra={"queues": self.queues, "broker": self._transport.where},
                )
            else:
                delay = _REOPEN_DELAY
                log.info(
                    "consumer resumed",
                    extra={"queues": self.queues, "broker": self._transport.where},
                )

    def _deliverer(self, queue: str) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            # aiormq runs this in a task it cancels when the connection drops; the
            # handler runs in a task of ours, so a broker blip does not abort it.
            if self._cancelled:
                return  # left unacked: the channel is closing and the broker requeues it
            task = asyncio.create_task(self._deliver(queue, message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

        return on_message

    async def _deliver(self, queue: str, message: AbstractIncomingMessage) -> None:
        async with self._slots:
            try:
                envelope = self._model.model_validate_json(message.body)
            except ValidationError as exc:
                await self._transport._dead_letter(message, queue, f"invalid message: {exc}")
                return
            try:
                await self._handler(envelope)
            except Reject as exc:
                fields = _fields(queue, envelope)
                await self._transport._dead_letter(message, queue, str(exc) or "rejected", fields)
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._cancelled or (task is not None and task.cancelling()):
                    raise  # cancelled by us: the channel closes and the broker requeues
                await self._retry_later(message, _fields(queue, envelope))
                return
            except SagaError as exc:  # expected (a shard moved, the database is down): one line
                fields = _fields(queue, envelope)
                log.warning("message will be redelivered: %s", exc, extra=fields)
                await self._retry_later(message, fields)
                return
            except Exception:
                fields = _fields(queue, envelope)
                log.exception("handler failed; message will be redelivered", extra=fields)
                await self._retry_later(message, fields)
                return
            try:
                await message.ack()
            except CONNECTION_EXCEPTIONS as exc:
                _unsettled(exc, _fields(queue, envelope))

    async def _retry_later(self, message: AbstractIncomingMessage, fields: dict[str, Any]) -> None:
        # A pause before the requeue, so a handler that always fails does not spin.
        await asyncio.sleep(self._transport.redelivery_delay)
        await settle(message.nack(requeue=True), fields)

    async def cancel(self) -> None:
        """Stop consuming; unacknowledged messages return to the queue."""
        if self._cancelled:
            return
        self._cancelled = True
        self._transport._forget(self)
        tasks = [*self._running, *([self._supervisor] if self._supervisor else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await channel.close()


async def settle(outcome: Awaitable[None], fields: dict[str, Any]) -> None:
    """Send an ack or nack; when the channel is gone the broker redelivers anyway."""
    try:
        await outcome
    except CONNECTION_EXCEPTIONS as exc:
        _unsettled(exc, fields)


def _unsettled(exc: BaseException, fields: dict[str, Any]) -> None:
    log.warning("could not settle a message (%s); the broker redelivers it", exc, extra=fields)


def _fields(queue: str, envelope: BaseModel) -> dict[str, Any]:
    """Log fields of a delivery, built only when something is logged."""
    return {"queue": queue, **message_fields(envelope)}
