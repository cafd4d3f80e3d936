"""Pinned histories replay on the current code; incompatible changes are caught.

The JSON files under ``histories/`` were recorded once by running the workflows
(``python -m tests.replay.make_histories``) and are committed; these tests only read
them, so they keep proving that today's code replays yesterday's histories.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saga import NondeterminismError, UnknownWorkflowTypeError
from saga._runtime.execution import Execution
from saga.history import (
    HistoryEvent,
    MarkerRecorded,
    WorkflowStarted,
    WorkflowStatus,
    history_from_json,
    history_to_json,
)
from saga.replay import replay_history
from saga.store.base import WorkflowRecord
from saga.workflow import definition_of
from tests.replay import workflows as w

HISTORIES = Path(__file__).parent / "histories"


def load(name: str) -> tuple[str, list[HistoryEvent]]:
    return history_from_json(json.loads((HISTORIES / name).read_text()))


def restore(workflow: Any, name: str) -> Execution:
    """Rebuild the run from its history (as a coordinator does after a restart)."""
    workflow_id, events = load(name)
    started = events[0].attributes
    assert isinstance(started, WorkflowStarted)
    record = WorkflowRecord(
        workflow_id=workflow_id,
        run_id=started.run_id,
        workflow_type=started.workflow_type,
        status=WorkflowStatus.RUNNING,
        version=0,
        shard=0,
        input=started.args,
        start_time=events[0].timestamp,
    )
    return Execution.restore(record, events, definition_of(workflow))


PINNED = sorted(p.name for p in HISTORIES.glob("*.json"))


def test_the_pinned_histories_are_there() -> None:
    assert PINNED == [
        "kitchen_sink.json",
        "order_workflow.json",
        "patched_order_after.json",
        "patched_order_before.json",
    ]


@pytest.mark.parametrize("name", PINNED)
def test_every_pinned_history_replays_on_the_current_code(name: str) -> None:
    workflow_id, events = load(name)
    replay_history(w.CURRENT, workflow_id, events)


@pytest.mark.parametrize("name", PINNED)
def test_replay_rebuilds_a_closed_run(name: str) -> None:
    started = load(name)[1][0].attributes
    assert isinstance(started, WorkflowStarted)
    current = {definition_of(wf).name: wf for wf in w.CURRENT}
    execution = restore(current[started.workflow_type], name)
    try:
        assert execution.closed and execution.instance.closed
        assert execution.activities == {} and execution.timers == set()
    finally:
        execution.instance.dispose()


def test_the_json_form_round_trips() -> None:
    for name in PINNED:
        raw = json.loads((HISTORIES / name).read_text())
        workflow_id, events = history_from_json(raw)
        assert history_to_json(workflow_id, events) == raw


# --- incompatible changes ---------------------------------------------------------------------
def test_reordered_steps_are_nondeterminism_naming_the_event_and_both_commands() -> None:
    workflow_id, events = load("order_workflow.json")
    with pytest.raises(NondeterminismError) as caught:
        replay_history([w.OrderWorkflowReordered], workflow_id, events)
    err = caught.value
    assert (err.workflow_id, err.event_id) == ("order-1", 2)
    assert events[1].type == "ActivityScheduled"
    message = str(err)
    assert "at event 2" in message
    assert "history has ActivityScheduled(seq=1, activity='charge')" in message
    assert "the code produced ActivityScheduled(seq=1, activity='ship')" in message


def test_an_unguarded_new_step_is_nondeterminism() -> None:
    workflow_id, events = load("order_workflow.json")
    with pytest.raises(NondeterminismError) as caught:
        replay_history([w.OrderWorkflowExtraStep], workflow_id, events)
    assert caught.value.event_id == 6  # where history has the workflow completing
    assert "WorkflowCompleted" in str(caught.value)
    assert "ActivityScheduled(seq=3, activity='notify')" in str(caught.value)


def test_an_unknown_workflow_type_cannot_be_replayed() -> None:
    workflow_id, events = load("order_workflow.json")
    with pytest.raises(UnknownWorkflowTypeError, match="OrderWorkflow"):
        replay_history([w.PatchedOrder], workflow_id, events)


def test_a_history_must_start_with_workflow_started() -> None:
    workflow_id, events = load("order_workflow.json")
    with pytest.raises(ValueError, match="WorkflowStarted"):
        replay_history(w.CURRENT, workflow_id, events[1:])


# --- patched ----------------------------------------------------------------------------------
def test_the_patch_histories_differ_by_the_marker() -> None:
    before = [e.type for e in load("patched_order_before.json")[1]]
    after = load("patched_order_after.json")[1]
    assert "MarkerRecorded" not in before
    markers = [e.attributes for e in after if isinstance(e.attributes, MarkerRecorded)]
    assert [m.patch_id for m in markers] == ["notify-customer"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("patched_order_before.json", ["charged order-2", "shipped order-2"]),
        ("patched_order_after.json", ["charged order-3", "notified order-3", "shipped order-3"]),
    ],
)
def test_patched_code_replays_histories_from_before_and_after_the_patch(
    name: str, expected: list[str]
) -> None:
    workflow_id, events = load(name)
    replay_history([w.PatchedOrder], workflow_id, events)
    execution = restore(w.PatchedOrder, name)
    try:
        main = execution.instance._main
        assert main is not None and main.result() == expected  # each took its own path
    finally:
        execution.instance.dispose()


def test_the_old_code_cannot_replay_a_history_made_after_the_patch() -> None:
    workflow_id, events = load("patched_order_after.json")
    with pytest.raises(NondeterminismError, match="MarkerRecorded"):
        replay_history([w.PatchedOrderBeforePatch], workflow_id, events)


# --- the kitchen sink -------------------------------------------------------------------------
def test_the_kitchen_sink_replays_to_the_recorded_result() -> None:
    execution = restore(w.KitchenSink, "kitchen_sink.json")
    try:
        main = execution.instance._main
        assert main is not None
        replayed = main.result()
    finally:
        execution.instance.dispose()
    recorded = load("kitchen_sink.json")[1][-1].attributes
    # Random draws, uuids and workflow time come back exactly as they were recorded.
    assert replayed == recorded.result  # type: ignore[attr-defined]
    assert replayed["gave_up"] is True and replayed["approved_by"] == "grace"
