"""Names and declarations of saga's RabbitMQ topology, and the dead-letter format.

::

    saga          direct, durable ──<queue name>──► saga.tasks.<queue>, saga.results.<shard>
    saga.notices  fanout, durable ────────────────► one exclusive auto-delete queue per subscriber
    saga.dlx      fanout, durable ────────────────► saga.dead-letter
    (default)     direct ──saga.queries───────────► saga.queries (transient, no dead-lettering)
                  direct ──<reply queue>──────────► one exclusive queue per asking client

Task and result queues name ``saga.dlx`` as their dead-letter exchange, so whatever
the broker itself dead-letters lands in ``saga.dead-letter`` too. Declarations are
idempotent and cached per channel: a new channel (after a reconnect) declares again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel, ConfigDict

from saga.transports.base import (
    DEAD_LETTER_QUEUE,
    QUERIES_QUEUE,
    RESULTS_QUEUE,
    TASK_QUEUE_PREFIX,
)

EXCHANGE = "saga"
NOTICES_EXCHANGE = "saga.notices"
DEAD_LETTER_EXCHANGE = "saga.dlx"

WORK_QUEUE_ARGUMENTS: dict[str, Any] = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}

REASON_HEADER = "x-saga-reason"
QUEUE_HEADER = "x-saga-original-queue"
EXCHANGE_HEADER = "x-saga-original-exchange"
ROUTING_KEY_HEADER = "x-saga-original-routing-key"
TIME_HEADER = "x-saga-dead-lettered-at"
_MAX_REASON = 4000


async def declare_topology(channel: AbstractChannel) -> dict[str, AbstractExchange]:
    """Declare the three exchanges and the dead-letter queue; return the exchanges by name."""
    exchanges = {
        EXCHANGE: await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        ),
        NOTICES_EXCHANGE: await channel.declare_exchange(
            NOTICES_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        ),
        DEAD_LETTER_EXCHANGE: await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        ),
    }
    dead = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
    await dead.bind(exchanges[DEAD_LETTER_EXCHANGE], routing_key="")
    exchanges[""] = channel.default_exchange
    return exchanges


async def declare_work_queue(
    channel: AbstractChannel, exchange: AbstractExchange, name: str
) -> AbstractQueue:
    """Declare a durable task or result queue, bound to ``saga`` under its own name."""
    queue = await channel.declare_queue(name, durable=True, arguments=WORK_QUEUE_ARGUMENTS)
    await queue.bind(exchange, routing_key=name)
    return queue


async def declare_queries_queue(channel: AbstractChannel) -> AbstractQueue:
    """Declare ``saga.queries``: not durable, since a query is answered now or never.

    Requests carry an expiration (their deadline) and the queue has no dead-letter
    exchange, so a question nobody answered in time just disappears.
    """
    return await channel.declare_queue(QUERIES_QUEUE, durable=False)


def is_work_queue(name: str) -> bool:
    """A queue routed through the ``saga`` exchange under its own name."""
    return name.startswith((RESULTS_QUEUE + ".", TASK_QUEUE_PREFIX))


class Declarations:
    """What one publishing channel has declared so far."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.exchanges: dict[str, AbstractExchange] = {}
        self._queues: set[str] = set()
        self._lock = asyncio.Lock()

    def ready(self, queue: str | None) -> bool:
        """Whether this channel declared the topology and ``queue`` already."""
        return bool(self.exchanges) and (queue is None or queue in self._queues)

    async def ensure(self, queue: str | None) -> None:
        """Declare the topology and ``queue`` (a work queue) unless this channel did."""
        if self.ready(queue):
            return
        async with self._lock:
            if not self.exchanges:
                self.exchanges = await declare_topology(self.channel)
            if queue is not None and queue not in self._queues:
                await declare_work_queue(self.channel, self.exchanges[EXCHANGE], queue)
                self._queues.add(queue)

    def forget(self) -> None:
        """Declare again before the next publish (the broker may have lost something)."""
        self._queues.clear()
        self.exchanges = {}


class DeadLetter(BaseModel):
    """A message parked in ``saga.dead-letter``, as listed for operators."""

    model_config = ConfigDict(frozen=True)

    queue: str
    """The queue it was taken from, e.g. ``saga.tasks.payments``."""
    reason: str
    """Why: the handler's :class:`~saga.transports.base.Reject` text or the parse error."""
    body: str
    """The message body as text (invalid UTF-8 replaced)."""
    headers: dict[str, str]
    """Every AMQP header, values rendered as text."""


def dead_letter_headers(
    message: AbstractIncomingMessage, queue: str, reason: str
) -> dict[str, Any]:
    """The original headers plus why and where from."""
    headers = dict(message.headers or {})
    headers.update(
        {
            REASON_HEADER: reason[:_MAX_REASON],
            QUEUE_HEADER: queue,
            EXCHANGE_HEADER: message.exchange or "",
            ROUTING_KEY_HEADER: message.routing_key or "",
            TIME_HEADER: datetime.now().astimezone().isoformat(),
        }
    )
    return headers


def is_dead_letter_header(name: str) -> bool:
    """Headers added on the way into the dead-letter queue, dropped on redrive."""
    return name.startswith(("x-saga-", "x-death", "x-first-death-", "x-last-death-"))


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def origin(headers: Mapping[str, Any]) -> tuple[str, str, str]:
    """(queue, exchange, routing key) a dead letter came from; empty when unknown."""
    death = _first_death(headers)
    keys = death.get("routing-keys")
    death_key = _text(keys[0]) if isinstance(keys, list) and keys else ""
    return (
        _text(headers.get(QUEUE_HEADER) or death.get("queue") or ""),
        _text(headers.get(EXCHANGE_HEADER) or death.get("exchange") or ""),
        _text(headers.get(ROUTING_KEY_HEADER) or death_key),
    )


def to_dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    """Describe a message read from the dead-letter queue."""
    headers = dict(message.headers or {})
    queue, _, _ = origin(headers)
    reason = headers.get(REASON_HEADER) or _first_death(headers).get("reason") or "unknown"
    return DeadLetter(
        queue=queue,
        reason=_text(reason),
        body=message.body.decode("utf-8", errors="replace"),
        headers={name: _text(value) for name, value in headers.items()},
    )
