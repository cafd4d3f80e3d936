"""Replay a recorded history against current workflow code.

This is how a deploy is checked before it reaches running sagas: export histories with
``saga history ID --json``, then replay them here (or with ``saga replay``); a
:class:`NondeterminismError` names the event and the command that differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saga._runtime.execution import Execution
from saga.errors import UnknownWorkflowTypeError
from saga.history import HistoryEvent, WorkflowStarted, WorkflowStatus
from saga.store.base import WorkflowRecord
from saga.workflow import definition_of


def replay_history(workflows: Sequence[Any], workflow_id: str, events: list[HistoryEvent]) -> None:
    """Re-run the workflow code over ``events``; raises NondeterminismError on a mismatch."""
    if not events or not isinstance(events[0].attributes, WorkflowStarted):
        raise ValueError("a history must begin with WorkflowStarted")
    started = events[0].attributes
    definitions = {d.name: d for d in (definition_of(w) for w in workflows)}
    definition = definitions.get(started.workflow_type)
    if definition is None:
        raise UnknownWorkflowTypeError(started.workflow_type, list(definitions))
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
    Execution.restore(record, events, definition).instance.dispose()
