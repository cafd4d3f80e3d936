"""The explorer's runs: one engine per failure point, discovery, and the checks after.

See :mod:`saga.explore` for what is explored and :mod:`saga._explore.engine` for how
each fault is injected.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga._explore.checks import (
    CheckResult,
    Pairing,
    Steps,
    check_compensations,
    check_final_status,
    check_history,
    check_reruns,
    check_user_invariant,
)
from saga._explore.engine import ActivityCall, Engine, RunContext, call_hook
from saga._explore.points import STEP_KINDS, FailurePoint, Fault
from saga._explore.report import PointResult
from saga.activity import definition_of as activity_definition
from saga.failure import FailureInfo
from saga.history import ActivityFailed, ActivityScheduled, HistoryEvent, WorkflowStatus
from saga.store.base import open_store
from saga.workflow import definition_of


@dataclass(frozen=True)
class Outcome:
    """How one run ended: what the user's ``invariant(services_state, outcome)`` gets.

    Attributes:
        point: The failure point's id (``baseline`` for the run without faults).
        workflow_id: The explored workflow's id.
        status: Its final status (RUNNING if it never reached one).
        result: Its result when COMPLETED.
        error: Its failure otherwise.
        history: Every event of the run.
        calls: Every activity execution, across restarts.
        crashes: How many times the process was torn down and started again.
    """

    point: str
    workflow_id: str
    status: WorkflowStatus
    result: Any
    error: FailureInfo | None
    history: list[HistoryEvent]
    calls: list[ActivityCall]
    crashes: int

    @property
    def completed(self) -> bool:
        """The saga ran to its end (COMPLETED)."""
        return self.status is WorkflowStatus.COMPLETED


@dataclass
class Run:
    point: FailurePoint
    outcome: Outcome
    commits: list[list[HistoryEvent]]
    durable_at_crash: dict[int, list[HistoryEvent]]
    redelivered: set[tuple[int, int]]
    stuck: str | None
    waited: float
    seconds: float
    user_check: CheckResult
    notes: list[str] = field(default_factory=list)


def _names(items: Any) -> set[str]:
    values = items if isinstance(items, list | tuple | set | frozenset) else [items]
    return {v if isinstance(v, str) else activity_definition(v).name for v in values}


class Explorer:
    """Runs failure points of one workflow and turns each run into a PointResult."""

    def __init__(
        self,
        workflow: Any,
        args: Sequence[Any],
        *,
        activities: Sequence[Any],
        workflows: Sequence[Any],
        invariant: Callable[[Any, Outcome], Any] | None,
        state: Callable[[], Any] | None,
        reset: Callable[[], Any] | None,
        compensations: Mapping[Any, Any] | None,
        retry_cap: int,
        run_timeout: float,
        reproduce: Callable[[str], str],
        folder: Path,
    ) -> None:
        self.workflow = workflow
        self.args = list(args)
        self.name = definition_of(workflow).name
        self.workflow_id = f"explore-{self.name}"
        named = {definition_of(w).name: w for w in workflows}
        named[self.name] = workflow
        self.workflows = list(named.values())
        self.activities = list(activities)
        self.invariant = invariant
        self.state = state
        self.reset = reset
        self.retry_cap = retry_cap
        self.run_timeout = run_timeout
        self.reproduce = reproduce
        self.folder = folder
        self.pairing = Pairing(declared=compensations is not None)
        for forward, comps in (compensations or {}).items():
            for name in _names(forward):
                self.pairing.undo.setdefault(name, set()).update(_names(comps))
        self._count = 0

    # --- one run -----------------------------------------------------------------------------
    async def run(self, point: FailurePoint) -> Run:
        began = time.perf_counter()
        self._count += 1
        path = self.folder / f"run-{self._count}.db"
        url = f"sqlite+aiosqlite:///{path}"
        shutil.copyfile(await self._template(), path)
        await call_hook(self.reset)
        ctx = RunContext(point, self.workflow_id, self.retry_cap)
        durable: dict[int, list[HistoryEvent]] = {}
        engine = self._engine(url, ctx, point.crash)
        commits: list[list[HistoryEvent]] = []
        try:
            await engine.start()
            await engine.client.start_workflow(self.workflow, *self.args, id=self.workflow_id)
            deadline = asyncio.get_running_loop().time() + self.run_timeout
            while True:
                record = await engine.wait(deadline)
                if record is not None or not engine.dying.crashed.is_set():
                    break
                # Crashed: what is durable now is all a new process will know.
                rec = await engine.store.get_workflow(self.workflow_id)
                durable[ctx.generation] = (
                    await engine.store.load_history(self.workflow_id, rec.run_id) if rec else []
                )
                if ctx.generation == 0:
                    commits = engine.dying.commits
                await engine.stop()
                ctx.generation += 1
                engine = self._engine(url, ctx, None)
                await engine.start()
            if ctx.generation == 0:
                commits = engine.dying.commits
            await engine.settle()
            record = await engine.store.get_workflow(self.workflow_id)
            assert record is not None
            history = await engine.store.load_history(self.workflow_id, record.run_id)
        finally:
            await engine.stop()
            _remove_database(path)
        outcome = Outcome(
            point=point.id,
            workflow_id=self.workflow_id,
            status=record.status,
            result=record.result,
            error=record.error,
            history=history,
            calls=list(ctx.calls),
            crashes=ctx.generation,
        )
        services_state = await call_hook(self.state)
        user_check = await check_user_invariant(self.invariant, services_state, outcome)
        notes = []
        if point.crash is not None and not durable:
            notes.append(f"{point.crash}: the run never reached that event")
        return Run(
            point=point,
            outcome=outcome,
            commits=commits,
            durable_at_crash=durable,
            redelivered=set(ctx.redelivered),
            stuck=record.stuck_reason,
            waited=self.run_timeout,
            seconds=time.perf_counter() - began,
            user_check=user_check,
            notes=notes,
        )

    def _engine(self, url: str, ctx: RunContext, crash: Fault | None) -> Engine:
        return Engine(
            database_url=url,
            workflows=self.workflows,
            activities=self.activities,
            ctx=ctx,
            crash=crash,
            migrate=False,  # every run starts from a copy of the migrated template
        )

    async def _template(self) -> Path:
        """An empty database with the schema, made once (migrating costs more than a run)."""
        path = self.folder / "template.db"
        if not path.exists():
            store = open_store(f"sqlite+aiosqlite:///{path}")
            await store.connect()
            try:
                await store.migrate()
            finally:
                await store.aclose()
        return path

    # --- the points ------------------------------------------------------------------------
    def step_points(
        self, base: FailurePoint, steps: Iterable[tuple[int, ActivityScheduled]]
    ) -> tuple[list[FailurePoint], list[tuple[str, str]]]:
        points, skipped = [], []
        for seq, command in steps:
            for kind in STEP_KINDS:
                point = base.plus(Fault(kind, command.activity, seq))
                if kind == "timeout" and not command.start_to_close_timeout:
                    skipped.append(
                        (point.id, "no start_to_close_timeout: a hung attempt would wait forever")
                    )
                    continue
                points.append(point)
        return points, skipped

    @staticmethod
    def crash_points(
        base: FailurePoint, commits: list[list[HistoryEvent]], from_event: int = 1
    ) -> list[FailurePoint]:
        points = []
        for i, commit in enumerate(commits):
            if commit[-1].event_id < from_event:
                continue
            points.append(base.plus(Fault("crash-before", event=commit[0].event_id)))
            if i < len(commits) - 1:
                points.append(base.plus(Fault("crash-after", event=commit[-1].event_id)))
        return points

    def notes_for(self, point: FailurePoint, steps: Steps) -> list[str]:
        notes = []
        for fault in point.faults:
            command = steps.scheduled.get(fault.seq)
            if fault.kind != "fail" or command is None:
                continue
            limit = command.retry_policy.maximum_attempts
            step = f"{fault.activity}#{fault.seq}"
            if limit == 0 or limit > self.retry_cap:
                allowed = "unlimited attempts" if limit == 0 else f"maximum_attempts={limit}"
                notes.append(
                    f"{step} allows {allowed}: the explorer failed the first "
                    f"{self.retry_cap}, then let it succeed (retry_cap)"
                )
        return notes

    def infer_pairing(
        self, forward: list[tuple[int, ActivityScheduled]], runs: dict[str, Run]
    ) -> None:
        previous: Counter[str] = Counter()
        for k, (seq, command) in enumerate(forward):
            run = runs.get(str(Fault("fail-nonretryable", command.activity, seq)))
            if run is None:
                continue
            steps = Steps.of(run.outcome.history)
            ran = Counter(c.activity for c in steps.scheduled.values() if c.compensation)
            if not self.pairing.declared:
                new = ran - previous
                owner = command.activity if k == 0 else forward[k - 1][1].activity
                if new:
                    self.pairing.undo.setdefault(owner, set()).update(new)
                previous = ran
            own = self.pairing.undo.get(command.activity, set())
            succeeded = sum(1 for s in steps.forward(command.activity) if s in steps.completed)
            if sum(ran[c] for c in own) > succeeded:
                self.pairing.preregistered.add(command.activity)

    # --- checks ----------------------------------------------------------------------------
    def result(self, run: Run) -> PointResult:
        o = run.outcome
        steps = Steps.of(o.history)
        comp_seqs = {s for s, c in steps.scheduled.items() if c.compensation}
        error = o.error.describe() if o.error else ""
        checks = [
            check_final_status(o.status, run.stuck, run.waited),
            check_compensations(
                o.status,
                o.history,
                self.pairing,
                run.point.injects_compensation_failure(comp_seqs),
                error,
            ),
            check_reruns(o.calls, o.history, run.durable_at_crash, run.redelivered),
            check_history(self.workflows, o.workflow_id, o.history, o.status.is_closed),
            run.user_check,
        ]
        return PointResult(
            point=run.point.id,
            description=run.point.describe(self.retry_cap),
            status=o.status.value,
            checks=checks,
            reproduce=self.reproduce(run.point.id),
            seconds=run.seconds,
            notes=[*run.notes, *self.notes_for(run.point, steps)],
        )


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def selected(point: FailurePoint, kinds: set[str] | None, only: set[str] | None) -> bool:
    if only is not None:
        return point.id in only
    return kinds is None or point.group in kinds or point.group == "baseline"


async def explore_all(
    ex: Explorer, wanted_kinds: set[str] | None, wanted: set[str] | None
) -> tuple[list[PointResult], list[tuple[str, str]]]:
    runs: dict[str, Run] = {}
    skipped: list[tuple[str, str]] = []
    baseline = await ex.run(FailurePoint())
    if not baseline.outcome.status.is_closed:
        return [ex.result(baseline)], []  # nothing to compare with: that is the finding
    runs["baseline"] = baseline
    known: list[FailurePoint] = [FailurePoint()]
    base_steps = Steps.of(baseline.outcome.history)
    forward = sorted((s, c) for s, c in base_steps.scheduled.items() if not c.compensation)
    points, skip = ex.step_points(FailurePoint(), forward)
    points += ex.crash_points(FailurePoint(), baseline.commits)
    known += points
    skipped += skip
    for point in points:  # non-retryable failures always run: they discover the rest
        if point.group == "fail-nonretryable" or selected(point, wanted_kinds, wanted):
            runs[point.id] = await ex.run(point)
    ex.infer_pairing(forward, runs)
    for trigger, steps in triggers(forward, runs):
        comp = sorted((s, c) for s, c in steps.scheduled.items() if c.compensation)
        points, skip = ex.step_points(trigger.point, comp)
        failed_at = min(
            (
                e.event_id
                for e in trigger.outcome.history
                if isinstance(e.attributes, ActivityFailed)
            ),
            default=1,
        )
        points += ex.crash_points(trigger.point, trigger.commits, failed_at)
        known += points
        skipped += skip
        for point in points:
            if selected(point, wanted_kinds, wanted):
                runs[point.id] = await ex.run(point)
    if wanted is not None and (unknown := wanted - {p.id for p in known}):
        raise ValueError(
            f"unknown failure point(s) {', '.join(sorted(unknown))}; this workflow has: "
            + ", ".join(p.id for p in known)
        )
    results = [
        ex.result(runs[p.id])
        for p in known
        if p.id in runs
        and (selected(p, wanted_kinds, wanted) or p.id == "baseline")
        and (wanted is None or p.id in wanted)
    ]
    if wanted is not None:
        skipped = [s for s in skipped if s[0] in wanted]
    elif wanted_kinds is not None:
        skipped = [s for s in skipped if FailurePoint.parse(s[0]).group in wanted_kinds]
    return results, skipped


def triggers(
    forward: list[tuple[int, ActivityScheduled]], runs: dict[str, Run]
) -> list[tuple[Run, Steps]]:
    """Forward failures whose runs compensate, fewest covering every compensation."""
    candidates = []
    for seq, command in forward:
        run = runs.get(str(Fault("fail-nonretryable", command.activity, seq)))
        if run is None:
            continue
        steps = Steps.of(run.outcome.history)
        names = {c.activity for c in steps.scheduled.values() if c.compensation}
        if names:
            candidates.append((len(names), -seq, run, steps, names))
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    chosen: list[tuple[Run, Steps]] = []
    covered: set[str] = set()
    for _, _, run, steps, names in candidates:
        if names - covered:
            chosen.append((run, steps))
            covered |= names
    return chosen
