"""Waiting helpers for the engine tests: deadlines, never bare sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from saga.client import WorkflowHandle
from saga.history import HistoryEvent
from saga.testing import WorkflowEnvironment

WAIT = 30.0
"""Seconds any single wait may take before the test fails (generous for slow CI)."""


async def eventually(
    check: Callable[[], Awaitable[Any]], *, what: str, timeout: float = WAIT
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def types_of(handle: WorkflowHandle) -> list[str]:
    """The event types of a workflow's history, in order."""
    return [e.type for e in await handle.history()]


async def wait_for_event(handle: WorkflowHandle, event_type: str, count: int = 1) -> None:
    """Wait until the history holds ``count`` events of ``event_type``."""

    async def seen() -> bool:
        return (await types_of(handle)).count(event_type) >= count

    await eventually(seen, what=f"{count} × {event_type} in {handle.id}")


def of_type(events: list[HistoryEvent], event_type: str) -> list[HistoryEvent]:
    """The events of one type."""
    return [e for e in events if e.type == event_type]


async def settled(env: WorkflowEnvironment) -> None:
    """Wait until no message is queued or being handled and the coordinator is idle."""

    async def quiet() -> bool:
        return env.broker.idle() and env.coordinator.idle()

    await eventually(quiet, what="the environment to settle")
