"""A deterministic asyncio event loop for workflow code.

Workflow code must make the same decisions every time it is replayed, so it runs on a
loop of our own: no I/O, no wall clock, callbacks strictly in FIFO order. Tasks,
futures, ``asyncio.gather`` and ``asyncio.wait_for`` work as usual; ``call_later``
(and so ``asyncio.sleep``) becomes a durable timer of the workflow.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from saga.errors import SagaError

if TYPE_CHECKING:
    from saga._runtime.instance import WorkflowInstance

T = TypeVar("T")
log = logging.getLogger("saga.workflow")


class _DurableTimerHandle(asyncio.TimerHandle):
    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: WorkflowLoop,
        context: contextvars.Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self.seq = 0
        self._wf_loop = loop

    def cancel(self) -> None:
        if not self.cancelled():
            self._wf_loop.instance.cancel_timer(self.seq)
        super().cancel()


class WorkflowLoop(asyncio.AbstractEventLoop):
    """The loop one workflow instance runs on; driven by :meth:`run_until_idle`."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self.instance = instance
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._closed = False
        self.tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    # --- driving -------------------------------------------------------------------
    def run_until_idle(self) -> None:
        """Run ready callbacks until none is left."""
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            asyncio.events._set_running_loop(outer)

    # --- scheduling ----------------------------------------------------------------
    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self._check_closed()
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        raise RuntimeError("workflow code cannot use threads")

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        self._check_closed()
        handle = _DurableTimerHandle(self.time() + delay, callback, args, self, context)
        handle.seq = self.instance.start_timer(max(0.0, delay), handle)
        return handle

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_later(when - self.time(), callback, *args, context=context)

    def time(self) -> float:
        return self.instance.now().timestamp()

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        # TimerHandle.cancel() reports here; durable timers are dropped by the handle
        # itself (TimerCancelled), and there is no scheduler heap to clean up.
        return None

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, None, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        if self.instance.querying:
            if hasattr(coro, "close"):
                coro.close()
            raise SagaError("a query handler tried to start a task; queries only read state")
        task = asyncio.Task(coro, loop=self, name=name, context=context)
        self.tasks.add(task)
        return task

    # --- state ----------------------------------------------------------------------
    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return asyncio.events._get_running_loop() is self

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def _check_closed(self) -> None:
        if self._closed:
            raise RuntimeError("the workflow instance was disposed; its code cannot go on")

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # Called for errors nobody retrieved, possibly from __del__ at an arbitrary
        # moment: log only, never let it change what the workflow does.
        log.warning(
            "unhandled error in workflow code: %s",
            context.get("message"),
            exc_info=context.get("exception"),
        )

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def get_exception_handler(self) -> None:
        return None
