"""An in-process broker for the embedded mode and unit tests.

Same contract as RabbitMQ (at-least-once, ack on return, requeue on error, dead-letter
on :class:`Reject`), but nothing survives the process: ``durable`` is False, so a
restarted coordinator republishes every task still in its outbox.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from saga.messages import (
    QueryReply,
    QueryRequest,
    ResultMessage,
    TaskMessage,
    WorkflowClosedNotice,
)
from saga.transports.base import (
    NoticeHandler,
    QueryHandler,
    Reject,
    ResultHandler,
    Subscription,
    TaskHandler,
    results_queue_name,
    task_queue_name,
)

log = logging.getLogger("saga.transport.memory")

M = TypeVar("M")

_REDELIVERY_DELAY = 0.05


class MemoryBroker:
    """Queues shared by every :class:`MemoryTransport` attached to it."""

    def __init__(self) -> None:
        self.queues: defaultdict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.notice_handlers: list[NoticeHandler] = []
        self.query_servers: list[QueryHandler] = []
        self.dead_letters: list[tuple[Any, str]] = []
        self.in_flight = 0

    def idle(self) -> bool:
        """No message queued or being handled anywhere."""
        return self.in_flight == 0 and all(q.empty() for q in self.queues.values())


class _Consumer:
    def __init__(
        self,
        broker: MemoryBroker,
        queues: Sequence[str],
        handler: Callable[[Any], Awaitable[None]],
        prefetch: int,
    ) -> None:
        self._broker = broker
        self._slots = asyncio.Semaphore(max(1, prefetch))
        self._handler = handler
        self._running: set[asyncio.Task[None]] = set()
        self._loops = [asyncio.create_task(self._pump(q)) for q in queues]

    async def _pump(self, name: str) -> None:
        queue = self._broker.queues[name]
        while True:
            await self._slots.acquire()
            msg = await queue.get()
            self._broker.in_flight += 1
            task = asyncio.create_task(self._deliver(name, msg))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _deliver(self, name: str, msg: Any) -> None:
        requeue = False
        try:
            await self._handler(msg)
        except Reject as exc:
            self._broker.dead_letters.append((msg, str(exc)))
            log.warning("message dead-lettered", extra={"queue": name, "reason": str(exc)})
        except asyncio.CancelledError:
            requeue = True
            raise
        except Exception:
            log.exception("handler failed; message will be redelivered", extra={"queue": name})
            requeue = True
            await asyncio.sleep(_REDELIVERY_DELAY)
        finally:
            if requeue:
                self._broker.queues[name].put_nowait(msg)
            self._broker.in_flight -= 1
            self._slots.release()

    async def cancel(self) -> None:
        for task in [*self._loops, *self._running]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._running, return_exceptions=True)


class _NoticeSubscription:
    def __init__(self, broker: MemoryBroker, handler: NoticeHandler) -> None:
        self._broker = broker
        self._handler = handler
        broker.notice_handlers.append(handler)

    async def cancel(self) -> None:
        if self._handler in self._broker.notice_handlers:
            self._broker.notice_handlers.remove(self._handler)


class _QueryServer:
    def __init__(self, broker: MemoryBroker, handler: QueryHandler) -> None:
        self._broker = broker
        self._handler = handler
        broker.query_servers.append(handler)

    async def cancel(self) -> None:
        if self._handler in self._broker.query_servers:
            self._broker.query_servers.remove(self._handler)


_NAMED: weakref.WeakValueDictionary[tuple[str, int], MemoryBroker] = weakref.WeakValueDictionary()


class MemoryTransport:
    """A :class:`~saga.transports.base.Transport` over a :class:`MemoryBroker`."""

    durable = False

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self._subscriptions: list[Subscription] = []
        self._turn = -1

    @classmethod
    def named(cls, url: str) -> MemoryTransport:
        """The broker for ``url`` in this event loop, shared by all who name it."""
        key = (url, id(asyncio.get_running_loop()))
        broker = _NAMED.get(key)
        if broker is None:
            broker = MemoryBroker()
            _NAMED[key] = broker
        return cls(broker)

    async def connect(self) -> None:
        return None

    async def aclose(self) -> None:
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            await sub.cancel()

    async def publish_task(self, task: TaskMessage) -> None:
        self.broker.queues[task_queue_name(task.queue)].put_nowait(task)

    async def publish_result(self, result: ResultMessage) -> None:
        self.broker.queues[results_queue_name(result.shard)].put_nowait(result)

    async def publish_notice(self, notice: WorkflowClosedNotice) -> None:
        for handler in list(self.broker.notice_handlers):
            try:
                await handler(notice)
            except Exception:
                log.exception("notice handler failed")

    def _track(self, sub: Subscription) -> Subscription:
        self._subscriptions.append(sub)
        return sub

    async def consume_tasks(
        self, queues: Sequence[str], handler: TaskHandler, *, prefetch: int
    ) -> Subscription:
        names = [task_queue_name(q) for q in queues]
        return self._track(_Consumer(self.broker, names, handler, prefetch))

    async def consume_results(
        self, handler: ResultHandler, *, prefetch: int, shards: Sequence[int]
    ) -> Subscription:
        names = [results_queue_name(s) for s in shards]
        return self._track(_Consumer(self.broker, names, handler, prefetch))

    async def subscribe_notices(self, handler: NoticeHandler) -> Subscription:
        return self._track(_NoticeSubscription(self.broker, handler))

    async def request_query(self, request: QueryRequest, *, timeout: float) -> QueryReply:  # noqa: ASYNC109
        """Ask a coordinator of this broker (in turn); TimeoutError if none answers."""
        async with asyncio.timeout(timeout):
            while not self.broker.query_servers:  # noqa: ASYNC110 - one may be starting
                await asyncio.sleep(0.01)
            self._turn = (self._turn + 1) % len(self.broker.query_servers)
            return await self.broker.query_servers[self._turn](request)

    async def serve_queries(self, handler: QueryHandler) -> Subscription:
        """Answer this broker's queries with ``handler``."""
        return self._track(_QueryServer(self.broker, handler))
