"""The failure explorer: run a saga once per failure point and check it stayed correct.

A baseline run (no fault) shows the steps and the commits of the history; from them
come the failure points (see :mod:`saga._explore.points` for the notation):

* every forward step failing: retryable until its policy gives up (at most
  ``retry_cap`` attempts: a policy allowing more, or unlimited, then sees the step
  succeed, and the report says so), and non-retryable;
* every step timing out once after doing its work, having its task delivered twice,
  and having its result delivered twice;
* a crash after every commit of the history, and during every commit (lost);
* the same for every compensation step, in a run whose forward failure makes the saga
  compensate: failing for good, failing a few times, duplicated, crashing mid-way.

Faults go through the real engine (see :mod:`saga._explore.engine`). After each run
the built-in invariants (:mod:`saga._explore.checks`) and the user's own are checked.

Example:
    >>> report = await explore(
    ...     TripBooking, TripRequest(name="alice"),
    ...     activities=ACTIVITIES,
    ...     reset=services.reset,                      # before every run
    ...     state=snapshot,                            # after it: services_state
    ...     invariant=nothing_left_booked,             # (services_state, outcome)
    ...     compensations={reserve_car: cancel_car, book_hotel: cancel_hotel},
    ... )
    >>> report.assert_ok()
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from saga._explore.checks import CheckResult
from saga._explore.engine import ActivityCall
from saga._explore.points import KIND_GROUPS, FailurePoint
from saga._explore.report import ExploreReport, PointResult
from saga._explore.runner import Explorer, Outcome, explore_all
from saga.workflow import definition_of

__all__ = [
    "ActivityCall",
    "CheckResult",
    "ExploreReport",
    "FailurePoint",
    "Outcome",
    "PointResult",
    "explore",
]


class _TeardownNoise(logging.Filter):
    """Drops what the coordinator logs when the explorer stops it on purpose (each run)."""

    _SAID_AT_TEARDOWN = ("batch not finished", "could not record sent tasks at shutdown")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._SAID_AT_TEARDOWN)


async def explore(
    workflow: Any,
    *args: Any,
    activities: Sequence[Any],
    invariant: Callable[[Any, Outcome], Any] | None = None,
    state: Callable[[], Any] | None = None,
    reset: Callable[[], Any] | None = None,
    compensations: Mapping[Any, Any] | None = None,
    workflows: Sequence[Any] = (),
    retry_cap: int = 3,
    kinds: Iterable[str] | None = None,
    only: Iterable[str] | str | None = None,
    run_timeout: float = 10.0,
    reproduce: Callable[[str], str] | None = None,
) -> ExploreReport:
    """Run ``workflow(*args)`` once per failure point; check the invariants after each.

    Args:
        workflow: The workflow (class, run method or function) to explore.
        *args: Its arguments.
        activities: The activities it calls (the real ones: faults wrap them).
        invariant: ``invariant(services_state, outcome)`` after each run; a violation is
            an ``AssertionError`` (plain ``assert``), any other exception, or ``False``.
        state: Called after each run; its return value is ``services_state``, a snapshot
            of your fake services (default: None). May be async.
        reset: Called before each run, to put the fake services back (may be async).
        compensations: Which compensation undoes which step, e.g.
            ``{reserve_car: cancel_car}`` (functions or names; a value may be a list).
            Without it the pairing is inferred from the runs in which each step fails,
            which checks the engine (exactly once across crashes and duplicates) but
            cannot know a compensation is missing or undoes the wrong step.
        workflows: Other workflows the explored one needs registered.
        retry_cap: Attempts failed at most at a ``fail`` point (see the module doc).
        kinds: Only points of these kinds: ``fail``, ``fail-nonretryable``, ``timeout``,
            ``duplicate-result``, ``redeliver``, ``crash``.
        only: Only these point ids (as the report prints them); the baseline and the
            runs that discover compensation points still run, unreported.
        run_timeout: Real seconds a run may take before its workflow counts as stuck.
        reproduce: Builds the one-line reproduction of a point id (the CLI passes its
            own command line); defaults to a Python call with ``only=``.

    Returns:
        The report: ``report.ok``, ``report.failures``, ``report.print()``,
        ``report.to_json()``, ``report.assert_ok()``.

    Raises:
        ValueError: An unknown kind, or an ``only`` id that is not a failure point of
            this workflow (the message lists them).
    """
    wanted_kinds = set(kinds) if kinds is not None else None
    if wanted_kinds is not None and (bad := wanted_kinds - set(KIND_GROUPS)):
        raise ValueError(f"unknown kind(s) {sorted(bad)}; choose from {', '.join(KIND_GROUPS)}")
    wanted = {only} if isinstance(only, str) else set(only) if only is not None else None
    if wanted is not None:
        wanted = {FailurePoint.parse(p).id for p in wanted}
    began = time.perf_counter()
    label = getattr(workflow, "__qualname__", definition_of(workflow).name)

    def python_line(point: str) -> str:
        shown = ", ".join([label, *(repr(a) for a in args), "..."])
        return f"await saga.testing.explore({shown}, only={point!r})"

    quiet = _TeardownNoise()
    coordinator_log = logging.getLogger("saga.coordinator")
    coordinator_log.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="saga-explore-") as tmp:
            ex = Explorer(
                workflow,
                args,
                activities=activities,
                workflows=workflows,
                invariant=invariant,
                state=state,
                reset=reset,
                compensations=compensations,
                retry_cap=retry_cap,
                run_timeout=run_timeout,
                reproduce=reproduce or python_line,
                folder=Path(tmp),
            )
            results, skipped = await explore_all(ex, wanted_kinds, wanted)
    finally:
        coordinator_log.removeFilter(quiet)
    return ExploreReport(
        workflow=ex.name,
        results=results,
        skipped=skipped,
        seconds=time.perf_counter() - began,
        retry_cap=retry_cap,
    )
