"""Replay recorded histories against today's workflow code, in tests and in CI.

Export histories from production with ``saga history ID --json > FILE`` and keep them
in a folder; a change to a workflow that would break the runs those histories belong
to then fails a test, naming the event and the command that differ.

Example:
    >>> Replayer(workflows=[TripBooking]).replay("tests/replay/histories/trip.json")
    ReplayResult(workflow_id='trip-alice', workflow_type='TripBooking', events=12, ...)

One pytest test per file of a folder::

    from saga.testing import replay_folder

    @pytest.mark.parametrize("history", replay_folder(HISTORIES, WORKFLOWS), ids=str)
    def test_production_histories_replay(history):
        history.replay()
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from saga.errors import NondeterminismError
from saga.history import CLOSING_EVENTS, HistoryEvent, WorkflowStarted, history_from_json
from saga.replay import replay_history

__all__ = ["HistoryCase", "ReplayResult", "Replayer", "replay_folder"]

HistorySource: TypeAlias = (
    "Mapping[str, Any] | Sequence[HistoryEvent] | Sequence[Mapping[str, Any]] "
    "| str | os.PathLike[str]"
)
"""A history export (dict), a list of events (or of their JSON), or a file path."""


@dataclass(frozen=True)
class ReplayResult:
    """A history that replayed: whose it was and how far it went."""

    workflow_id: str
    workflow_type: str
    events: int
    closed: bool
    source: str = ""


class Replayer:
    """Replays histories through the given workflows' current code.

    Args:
        workflows: Workflow classes or functions; a history's ``WorkflowStarted``
            names the type to use.
    """

    def __init__(self, *, workflows: Sequence[Any]) -> None:
        if not workflows:
            raise ValueError("Replayer needs at least one workflow")
        self.workflows = list(workflows)

    def replay(self, history: HistorySource, *, workflow_id: str | None = None) -> ReplayResult:
        """Re-run the code over ``history``.

        Args:
            history: The JSON dict ``saga history ID --json`` writes, a list of
                :class:`HistoryEvent` (``await handle.history()``) or of their JSON
                forms, or the path of an export file.
            workflow_id: Overrides the id of the export (only used in messages).

        Raises:
            NondeterminismError: The code no longer produces what history recorded; the
                message names the event and both commands (and the file).
            UnknownWorkflowTypeError: No given workflow has the history's type.
            ValueError: The history is malformed or does not start with WorkflowStarted.
        """
        source = ""
        if isinstance(history, str | os.PathLike):
            source = os.fspath(history)
            try:
                data: Any = json.loads(Path(history).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"cannot read history {source}: {exc}") from exc
        else:
            data = history
        if isinstance(data, Sequence) and all(isinstance(e, HistoryEvent) for e in data):
            exported_id, events = "replay", list(data)
        else:
            exported_id, events = history_from_json(
                dict(data) if isinstance(data, Mapping) else list(data)
            )
        workflow_id = workflow_id or exported_id
        try:
            replay_history(self.workflows, workflow_id, events)
        except NondeterminismError as exc:
            if not source:
                raise
            raise NondeterminismError(
                exc.workflow_id, exc.event_id, f"{exc.detail} (history {source})"
            ) from exc
        started = events[0].attributes
        assert isinstance(started, WorkflowStarted)  # replay_history checked it
        return ReplayResult(
            workflow_id=workflow_id,
            workflow_type=started.workflow_type,
            events=len(events),
            closed=isinstance(events[-1].attributes, CLOSING_EVENTS),
            source=source,
        )


@dataclass(frozen=True)
class HistoryCase:
    """One history file of a folder, replayable on its own (a pytest parameter)."""

    path: Path
    workflows: tuple[Any, ...]

    def replay(self) -> ReplayResult:
        """Replay this file; raises as :meth:`Replayer.replay` does."""
        return Replayer(workflows=self.workflows).replay(self.path)

    def __str__(self) -> str:
        return self.path.name


def replay_folder(
    folder: str | os.PathLike[str], workflows: Sequence[Any], *, pattern: str = "*.json"
) -> list[HistoryCase]:
    """The history files of ``folder`` (sorted, recursively), each ready to replay.

    Cheap to call at collection time: nothing is read until a case is replayed.

    Raises:
        FileNotFoundError: ``folder`` does not exist (a typo would otherwise run nothing).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no history folder {root}")
    return [HistoryCase(p, tuple(workflows)) for p in sorted(root.rglob(pattern))]
