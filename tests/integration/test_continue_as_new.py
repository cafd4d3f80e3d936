"""Continue-as-new: a fresh history under the same workflow id, state carried in the args."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from saga import Saga, WorkflowStatus, activity, workflow
from saga.history import WorkflowContinuedAsNew, WorkflowStarted
from saga.testing import WorkflowEnvironment
from tests.integration.engine_helpers import WAIT, eventually, types_of

QUEUE = "can-tests"
log: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_log() -> Iterator[None]:
    log.clear()
    yield
    log.clear()


@activity.defn(queue=QUEUE)
async def step(name: str) -> None:
    log.append(name)


@workflow.defn
class Ticker:
    """Sleeps a day per run, for ``runs`` runs; the state (ticks so far) is its input."""

    @workflow.run
    async def run(self, runs: int, ticks: list[int]) -> dict[str, Any]:
        await workflow.sleep(86_400)
        ticks = [*ticks, workflow.info().history_length]
        if len(ticks) < runs:
            workflow.continue_as_new(runs, ticks)
        return {"ticks": ticks, "run_id": workflow.info().run_id}


@workflow.defn
class Tally:
    """Adds up signalled numbers; continues as new after every three, carrying the sum."""

    def __init__(self) -> None:
        self.this_run: list[int] = []
        self.done = False

    @workflow.signal
    def add(self, n: int) -> None:
        self.this_run.append(n)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def total(self) -> int:
        return self.carried + sum(self.this_run)

    @workflow.run
    async def run(self, carried: int, count: int) -> dict[str, int]:
        self.carried = carried
        await workflow.wait_condition(lambda: len(self.this_run) >= 3 or self.done)
        carried, count = carried + sum(self.this_run), count + len(self.this_run)
        if not self.done:
            workflow.continue_as_new(carried, count)
        return {"total": carried, "count": count}


@workflow.defn
class InsideASaga:
    @workflow.run
    async def run(self, again: bool) -> str:
        async with Saga() as saga:
            await workflow.execute_activity(step, "book")
            saga.add_compensation(step, "unbook")
            if again:
                workflow.continue_as_new(False)
        return "done"


def environment(database_url: str, **options: Any) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=[Ticker, Tally, InsideASaga],
        activities=[step],
        database_url=database_url,
        **options,
    )


async def test_continue_as_new_keeps_the_id_starts_a_fresh_history_and_carries_state(
    database_url: str,
) -> None:
    async with environment(database_url, time_skipping=True) as env:
        handle = await env.client.start_workflow(Ticker.run, 4, [], id="ticker")
        result = await handle.result(timeout=WAIT)

        # Every run's history is short: the fourth saw as few events as the first.
        assert result["ticks"] == [3, 3, 3, 3]
        desc = await handle.describe()
        assert desc.id == "ticker" and desc.status is WorkflowStatus.COMPLETED
        assert desc.run_id == result["run_id"] != handle.run_id
        assert desc.input == [4, [3, 3, 3]]
        assert await types_of(handle) == [
            "WorkflowStarted",
            "TimerStarted",
            "TimerFired",
            "WorkflowCompleted",
        ]
        # The first run's history stays, under its run id, ending with the hand-over.
        first = await env.store.load_history("ticker", handle.run_id or "")
        assert [e.type for e in first] == [
            "WorkflowStarted",
            "TimerStarted",
            "TimerFired",
            "WorkflowContinuedAsNew",
        ]
        last = first[-1].attributes
        assert isinstance(last, WorkflowContinuedAsNew)
        assert last.args == [4, [3]]
        second = await env.store.load_history("ticker", last.new_run_id)
        started = second[0].attributes
        assert isinstance(started, WorkflowStarted) and started.args == [4, [3]]


async def test_signals_are_never_lost_across_runs(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Tally.run, 0, 0, id="tally")
        for n in range(1, 11):
            await handle.signal("add", n)

        async def all_added() -> bool:
            return bool(await handle.query("total") == 55)

        await eventually(all_added, what="every signal added up")
        await handle.signal("finish")
        assert await handle.result(timeout=WAIT) == {"total": 55, "count": 10}
        final = await handle.describe()
        assert final.run_id != handle.run_id  # it did go through several runs
        assert final.input[1] == 9  # three runs of three, then the tenth


async def test_continuing_as_new_inside_a_saga_compensates_nothing(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(InsideASaga.run, True, id="saga-can")
        assert await handle.result(timeout=WAIT) == "done"
        assert log == ["book", "book"]
