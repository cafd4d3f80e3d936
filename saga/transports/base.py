"""The transport protocol: a few verbs, whatever the broker.

Tasks, results and notices are one-way; queries are a request and its reply
(``request_query`` / ``serve_queries``), best effort with a deadline: they change
nothing, so a lost one is simply asked again.

Delivery is at least once. A handler that returns acknowledges its message; one that
raises leaves it to be delivered again; one that raises :class:`Reject` sends it to the
dead-letter queue with the reason. Messages that do not parse never reach a handler:
the transport dead-letters them itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

from saga.errors import ConfigurationError, SagaError
from saga.messages import (
    QueryReply,
    QueryRequest,
    ResultMessage,
    TaskMessage,
    WorkflowClosedNotice,
)

TaskHandler = Callable[[TaskMessage], Awaitable[None]]
ResultHandler = Callable[[ResultMessage], Awaitable[None]]
NoticeHandler = Callable[[WorkflowClosedNotice], Awaitable[None]]
QueryHandler = Callable[[QueryRequest], Awaitable[QueryReply]]

RESULTS_QUEUE = "saga.results"  # one queue per shard: saga.results.<shard>
QUERIES_QUEUE = "saga.queries"
TASK_QUEUE_PREFIX = "saga.tasks."
DEAD_LETTER_QUEUE = "saga.dead-letter"


def task_queue_name(queue: str) -> str:
    """Broker queue name of an activity queue."""
    return TASK_QUEUE_PREFIX + queue


def results_queue_name(shard: int) -> str:
    """Broker queue of one shard's results and wake-ups."""
    return f"{RESULTS_QUEUE}.{shard}"


class Reject(SagaError):
    """Raised by a handler for a message that can never be processed: dead-letter it."""


class Subscription(Protocol):
    """A running consumer."""

    async def cancel(self) -> None:
        """Stop consuming; unacknowledged messages return to the queue."""


class Transport(Protocol):
    """What coordinator, worker and client need from a broker."""

    durable: bool
    """True when queued messages survive the death of this process (RabbitMQ), so a
    restarted coordinator republishes only what the outbox never sent."""

    async def connect(self) -> None:
        """Open connections; retries with backoff, then raises TransportError."""

    async def aclose(self) -> None:
        """Close connections; idempotent."""

    async def publish_task(self, task: TaskMessage) -> None:
        """Send a task; returns once the broker has it (publisher confirm)."""

    async def publish_result(self, result: ResultMessage) -> None:
        """Send a result (or wake-up) to the coordinators; returns once confirmed."""

    async def publish_notice(self, notice: WorkflowClosedNotice) -> None:
        """Broadcast a notice to every subscribed client; best effort."""

    async def consume_tasks(
        self, queues: Sequence[str], handler: TaskHandler, *, prefetch: int
    ) -> Subscription:
        """Deliver tasks of the given activity queues, at most ``prefetch`` unacked."""

    async def consume_results(
        self, handler: ResultHandler, *, prefetch: int, shards: Sequence[int]
    ) -> Subscription:
        """Deliver results and wake-ups of ``shards``, at most ``prefetch`` unacked."""

    async def subscribe_notices(self, handler: NoticeHandler) -> Subscription:
        """Deliver every notice published from now on."""

    async def request_query(self, request: QueryRequest, *, timeout: float) -> QueryReply:  # noqa: ASYNC109
        """Ask whichever coordinator serves queries.

        Raises the builtin TimeoutError when no reply comes within ``timeout`` seconds.
        """

    async def serve_queries(self, handler: QueryHandler) -> Subscription:
        """Answer query requests with ``handler`` (coordinators; several may serve)."""


def open_transport(url: str, *, heartbeat: int | None = None) -> Transport:
    """Build the transport named by a broker URL (not yet connected).

    ``heartbeat``: seconds of silence after which the broker drops the connection (and
    hands its unacknowledged messages to other consumers), unless the URL sets one.
    """
    if url.startswith("memory://"):
        from saga.transports.memory import MemoryTransport

        return MemoryTransport.named(url)
    if url.startswith(("amqp://", "amqps://")):
        from saga.transports.rabbitmq import RabbitMQTransport

        parts = urlsplit(url)
        if heartbeat is not None and "heartbeat" not in parse_qs(parts.query):
            query = "&".join(filter(None, [parts.query, f"heartbeat={heartbeat}"]))
            url = urlunsplit(parts._replace(query=query))
        return RabbitMQTransport(url)
    raise ConfigurationError(f"unsupported broker URL {url!r}: use amqp://… or memory://")
