"""Compensations: undo the steps of a saga that cannot finish.

Example:
    >>> async with Saga(parallel_compensation=True) as saga:
    ...     car = await workflow.execute_activity(reserve_car, name)
    ...     saga.add_compensation(cancel_car, car, name)
    ...     ...                                  # any error (or cancellation) undoes the car

Compensation activities are durable steps like any other: recorded, retried with
backoff until they succeed (unless their policy says otherwise), visible in history.
They run even while the workflow is being cancelled. Every failure is kept: when some
fail for good, :class:`CompensationError` holds all their causes and the workflow ends
``COMPENSATION_FAILED``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any

from saga import workflow
from saga._runtime.instance import ContinueAsNewError, compensating
from saga.activity import is_activity
from saga.errors import CompensationError
from saga.retry import RetryPolicy

COMPENSATION_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
)
"""Default for compensation activities: retry until it works, waits capped at a minute."""

_ACTIVITY_OPTIONS = frozenset(
    {
        "queue",
        "start_to_close_timeout",
        "schedule_to_close_timeout",
        "heartbeat_timeout",
        "retry_policy",
    }
)


@dataclass
class _Compensation:
    fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    options: dict[str, Any] = field(default_factory=dict)


class Saga:
    """Collects compensations as steps succeed and runs them when the saga fails.

    Args:
        parallel_compensation: Start every compensation at once instead of newest first.
        continue_with_error: Keep compensating after one fails for good (the failure is
            still reported).
        retry_policy: Default policy of compensation activities.
    """

    def __init__(
        self,
        parallel_compensation: bool = False,
        continue_with_error: bool = False,
        *,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.parallel_compensation = parallel_compensation
        self.continue_with_error = continue_with_error
        self.retry_policy = retry_policy or COMPENSATION_RETRY_POLICY
        self._compensations: list[_Compensation] = []

    def add_compensation(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, **activity_options: Any
    ) -> None:
        """Register how to undo a step: an activity (durable) or an async workflow function.

        ``activity_options`` are those of ``workflow.execute_activity`` (queue, timeouts,
        retry_policy). Register before the forward call when its outcome may be unknown
        (a timeout): the compensation must then be harmless if the step never happened.

        Raises:
            TypeError: An option ``execute_activity`` does not know, or options given
                with a workflow function (they would be silently ignored).
        """
        unknown = sorted(set(activity_options) - _ACTIVITY_OPTIONS)
        if unknown:
            raise TypeError(
                f"add_compensation() got unknown option(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(_ACTIVITY_OPTIONS))}"
            )
        if activity_options and not is_activity(fn):
            raise TypeError(
                f"add_compensation(): {getattr(fn, '__qualname__', fn)!r} is not an activity, "
                "so activity options do not apply to it"
            )
        self._compensations.append(_Compensation(fn, args, activity_options))

    async def compensate(self) -> None:
        """Run the registered compensations once; raises CompensationError if any fails."""
        pending, self._compensations = list(reversed(self._compensations)), []
        if not pending:
            return
        inst = workflow.current_instance()
        # Shielded: cancelling the workflow must not stop its compensations.
        task = asyncio.get_running_loop().create_task(self._run(pending))
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    break
                cancelled = True
        failures = task.result()
        if failures:
            inst.compensations.failed = True
            summary = "; ".join(str(f) for f in failures)
            raise CompensationError(
                f"{len(failures)} of {len(pending)} compensation(s) failed: {summary}",
                causes=failures,
            )
        inst.compensations.succeeded += len(pending)
        if cancelled:
            raise asyncio.CancelledError("workflow cancelled during compensation")

    async def _run(self, pending: list[_Compensation]) -> list[BaseException]:
        # This task's own context: whatever it schedules, directly or through a workflow
        # function, is recorded as a compensation step.
        compensating.set(True)
        if self.parallel_compensation:
            outcomes = await asyncio.gather(
                *(self._one(c) for c in pending), return_exceptions=True
            )
            return [o for o in outcomes if isinstance(o, Exception)]
        failures: list[BaseException] = []
        for comp in pending:
            try:
                await self._one(comp)
            except Exception as exc:
                failures.append(exc)
                if not self.continue_with_error:
                    break
        return failures

    async def _one(self, comp: _Compensation) -> Any:
        if not is_activity(comp.fn):
            return await comp.fn(*comp.args)
        options = {"retry_policy": self.retry_policy, **comp.options}
        future = workflow.schedule_activity(
            comp.fn,
            comp.args,
            queue=options.get("queue"),
            start_to_close_timeout=options.get("start_to_close_timeout"),
            schedule_to_close_timeout=options.get("schedule_to_close_timeout"),
            heartbeat_timeout=options.get("heartbeat_timeout"),
            retry_policy=options["retry_policy"],
            compensation=True,
        )
        return await future

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or isinstance(exc, GeneratorExit | ContinueAsNewError):
            return  # continuing as new is no failure: the next run carries on
        await self.compensate()
