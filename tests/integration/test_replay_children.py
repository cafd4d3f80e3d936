"""Export → replay round trips for the child-workflow and continue-as-new event types."""

from __future__ import annotations

import pytest

from saga import WorkflowFailureError
from saga.history import history_from_json, history_to_json
from saga.testing import Replayer
from tests.integration import test_child_workflows as children
from tests.integration import test_continue_as_new as continued
from tests.integration.engine_helpers import WAIT

NEW_TYPES = {
    "ChildWorkflowInitiated",
    "ChildWorkflowStarted",
    "ChildWorkflowStartFailed",
    "ChildWorkflowCompleted",
    "ChildWorkflowFailed",
    "ChildWorkflowCancelRequested",
    "WorkflowContinuedAsNew",
}


async def test_child_and_continue_as_new_histories_round_trip_and_replay(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'children.db'}"
    workflows = [*children.WORKFLOWS, continued.Ticker]
    runs: list[tuple[str, str]] = []
    async with children.WorkflowEnvironment(
        workflows=workflows,
        activities=[children.do, continued.step],
        database_url=url,
        time_skipping=True,
    ) as env:
        ok = await env.client.start_workflow(children.Trip.run, False, id="rt-trip")
        await ok.result(timeout=WAIT)
        failed = await env.client.start_workflow(children.Trip.run, True, id="rt-trip-fails")
        with pytest.raises(WorkflowFailureError):
            await failed.result(timeout=WAIT)
        squatter = await env.client.start_workflow(children.Waits.run, "squat", id="rt-taken")
        taker = await env.client.start_workflow(children.TakesAnId.run, "rt-taken", id="rt-taker")
        await taker.result(timeout=WAIT)
        await squatter.signal("release")
        await squatter.result(timeout=WAIT)
        ticker = await env.client.start_workflow(continued.Ticker.run, 2, [], id="rt-ticker")
        await ticker.result(timeout=WAIT)
        for handle in (ok, failed, taker, ticker):
            assert handle.run_id is not None
            runs.append((handle.id, handle.run_id))  # the first run of the ticker continued
        histories = {(wid, run): await env.store.load_history(wid, run) for wid, run in runs}
    async with children.environment(url) as env:
        parent = await env.client.start_workflow(children.TripWaiting.run, "rt-car", id="rt-x")
        await children.child_waiting(env, "rt-car")
        await parent.cancel("changed my mind")
        with pytest.raises(WorkflowFailureError):
            await parent.result(timeout=WAIT)
        histories[("rt-x", "")] = await parent.history()
    seen: set[str] = set()
    replayer = Replayer(workflows=workflows)
    for (workflow_id, run), events in histories.items():
        exported = history_to_json(workflow_id, events)
        _, parsed = history_from_json(exported)
        assert history_to_json(workflow_id, parsed) == exported, (workflow_id, run)
        replayer.replay(exported)
        seen.update(e.type for e in parsed)
    assert seen >= NEW_TYPES, NEW_TYPES - seen
