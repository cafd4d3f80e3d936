"""Test and embedded helpers: the whole system in one process.

Example:
    >>> async with WorkflowEnvironment(workflows=[TripBooking],
    ...                                activities=[reserve_car, cancel_car],
    ...                                time_skipping=True) as env:
    ...     result = await env.client.execute_workflow(TripBooking.run, "alice")

Also here (see docs/testing.md): :func:`explore`, the failure explorer;
:class:`Replayer` and :func:`replay_folder`, to replay production histories in CI;
:class:`ActivityEnvironment`, to run one activity with a fake ``activity.info()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from saga.activity_environment import ActivityEnvironment
from saga.client import Client
from saga.clock import Clock, SkippingClock, SystemClock
from saga.coordinator import Coordinator
from saga.explore import ActivityCall, ExploreReport, Outcome, PointResult, explore
from saga.replayer import HistoryCase, Replayer, ReplayResult, replay_folder
from saga.store.base import open_store
from saga.tracing import Telemetry
from saga.transports.memory import MemoryBroker, MemoryTransport
from saga.worker import Worker

__all__ = [
    "ActivityCall",
    "ActivityEnvironment",
    "ExploreReport",
    "HistoryCase",
    "Outcome",
    "PointResult",
    "ReplayResult",
    "Replayer",
    "WorkflowEnvironment",
    "explore",
    "replay_folder",
]


class WorkflowEnvironment:
    """Coordinator, worker, SQLite and an in-process broker in one ``async with``.

    Args:
        workflows: Workflow classes or functions.
        activities: Activity functions the in-process worker runs.
        database_url: Defaults to an in-memory SQLite database; pass a file URL to keep
            the history (and to restart on it).
        time_skipping: Jump ahead to the next timer whenever nothing else is going on,
            so timers and retry backoffs cost no real time.
    """

    def __init__(
        self,
        *,
        workflows: Sequence[Any],
        activities: Sequence[Any] = (),
        database_url: str = "sqlite+aiosqlite://",
        time_skipping: bool = False,
        worker_concurrency: int = 100,
        sweep_interval: float = 5.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.broker = MemoryBroker()
        self.telemetry = telemetry or Telemetry()
        self.store = open_store(database_url)
        self.clock: Clock = SkippingClock(self._idle) if time_skipping else SystemClock()
        self.coordinator = Coordinator(
            workflows=workflows,
            store=self.store,
            transport=MemoryTransport(self.broker),
            clock=self.clock,
            sweep_interval=sweep_interval,
            migrate=True,
            telemetry=self.telemetry,
        )
        self.worker = (
            Worker(
                activities=activities,
                transport=MemoryTransport(self.broker),
                concurrency=worker_concurrency,
                telemetry=self.telemetry,
            )
            if activities
            else None
        )
        self.client = Client(
            self.store,
            MemoryTransport(self.broker),
            workflows=workflows,
            telemetry=self.telemetry,
        )

    def _idle(self) -> bool:
        return self.broker.idle() and self.coordinator.idle()

    async def __aenter__(self) -> WorkflowEnvironment:
        await self.coordinator.start()
        if self.worker is not None:
            await self.worker.start()
        await self.client._subscribe()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop everything and close the database."""
        await self.client.aclose()
        if self.worker is not None:
            self.worker.drain_timeout = 0.0
            await self.worker.aclose()
        await self.coordinator.aclose()
        await self.store.aclose()
        await asyncio.sleep(0)
