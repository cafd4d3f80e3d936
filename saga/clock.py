"""Where the coordinator's time comes from: the wall clock, or a clock tests can skip."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Current time and waiting for a moment (or an earlier wake-up)."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""

    async def wait_until(
        self, when: datetime | None, wake: asyncio.Event, *, max_real_wait: float | None = None
    ) -> None:
        """Return at ``when`` (None: never), when ``wake`` is set, or after a real wait.

        ``max_real_wait`` bounds the wait in real seconds, whichever comes first.
        """


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait_until(
        self, when: datetime | None, wake: asyncio.Event, *, max_real_wait: float | None = None
    ) -> None:
        timeout = None if when is None else max(0.0, (when - self.now()).total_seconds())
        if max_real_wait is not None:
            timeout = max_real_wait if timeout is None else min(timeout, max_real_wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)


class SkippingClock:
    """A clock that jumps ahead to the next due time whenever the system is idle.

    ``is_idle`` must say whether any work (a queued message, a running activity, an
    input being processed) is still going on; only then is skipping safe.
    """

    def __init__(self, is_idle: Callable[[], bool], *, settle: float = 0.002) -> None:
        self._offset = timedelta(0)
        self._is_idle = is_idle
        self._settle = settle

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        """Move time forward by ``delta``."""
        self._offset += delta

    async def wait_until(
        self, when: datetime | None, wake: asyncio.Event, *, max_real_wait: float | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        give_up = None if max_real_wait is None else loop.time() + max_real_wait
        idle_checks = 0
        while not wake.is_set():
            if give_up is not None and loop.time() >= give_up:
                return
            if when is not None and self.now() >= when:
                return
            if self._is_idle():
                idle_checks += 1
                if idle_checks >= 3 and when is not None:  # idle long enough: skip
                    self._offset += when - self.now()
                    return
            else:
                idle_checks = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._settle)
