"""Histories recorded live, exported as JSON, replayed: every event type, and a changed deploy.

One WorkflowEnvironment on a SQLite file runs workflows that, between them, write every
event type (a patch, a retried attempt, timers, a signal sent with ``handle.signal``, a
cancel, a terminate, an execution timeout, failed steps and workflows). Their histories
are exported the way ``saga history ID --json`` does, and replayed by ``Replayer``, by
``replay_folder`` and by the ``saga`` command itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saga import NondeterminismError, UnknownWorkflowTypeError
from saga.client import WorkflowHandle
from saga.errors import WorkflowFailureError
from saga.history import EVENT_TYPES, HistoryEvent, history_from_json, history_to_json
from saga.testing import Replayer, WorkflowEnvironment, replay_folder
from tests.integration import replayer_workflows as v1
from tests.integration import replayer_workflows_changed as v2
from tests.integration.test_replay_children import NEW_TYPES

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


@dataclass
class Recorded:
    folder: Path
    database_url: str
    histories: dict[str, list[HistoryEvent]]
    statuses: dict[str, str]


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _has(handle: WorkflowHandle, event_type: str, count: int = 1) -> bool:
    return [e.type for e in await handle.history()].count(event_type) >= count


async def _status(handle: WorkflowHandle) -> str:
    try:
        await handle.result(timeout=WAIT)
    except WorkflowFailureError as exc:
        return exc.status
    return "COMPLETED"


async def _record(folder: Path) -> Recorded:
    url = f"sqlite+aiosqlite:///{folder / 'saga.db'}"
    v1.calls.clear()
    v1.release = asyncio.Event()
    statuses: dict[str, str] = {}
    histories: dict[str, list[HistoryEvent]] = {}
    async with WorkflowEnvironment(
        workflows=v1.WORKFLOWS, activities=v1.ACTIVITIES, database_url=url, time_skipping=True
    ) as env:
        client = env.client
        everything = await client.start_workflow(v1.Everything.run, "o-1", id="everything")
        # Signal once the workflow waits on its condition (its second timer is running);
        # the gate step keeps the clock from skipping to that timer meanwhile.
        await _until(lambda: _has(everything, "TimerStarted", 2), "the condition's timer")
        await everything.signal("approve", "ops")
        await _until(lambda: _has(everything, "WorkflowSignaled"), "the signal")
        v1.release.set()
        statuses["everything"] = await _status(everything)

        terminated = await client.start_workflow(v1.Waits.run, "o-3", id="terminated")
        await _until(lambda: _has(terminated, "WorkflowStarted"), "the start")
        await terminated.terminate("stuck on purpose")
        statuses["terminated"] = await _status(terminated)

        timed_out = await client.start_workflow(
            v1.Waits.run, "o-4", id="timed-out", execution_timeout=60
        )
        statuses["timed-out"] = await _status(timed_out)

        failed = await client.start_workflow(v1.fails, "o-5", id="failed")
        statuses["failed"] = await _status(failed)

        # Last: its held step keeps the worker busy (no more time skipping) until shutdown.
        cancelled = await client.start_workflow(v1.Undoable.run, "o-2", id="cancelled")
        await _until(lambda: _has(cancelled, "ActivityScheduled", 2), "the held step")
        await cancelled.cancel("customer changed their mind")
        statuses["cancelled"] = await _status(cancelled)

        for workflow_id in statuses:
            histories[workflow_id] = await client.get_workflow_handle(workflow_id).history()
    exports = folder / "histories"
    exports.mkdir()
    for workflow_id, events in histories.items():
        text = json.dumps(history_to_json(workflow_id, events), indent=2)
        (exports / f"{workflow_id}.json").write_text(text)
    return Recorded(folder, url, histories, statuses)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return asyncio.run(_record(tmp_path_factory.mktemp("replayer")))


def _export(recorded: Recorded, workflow_id: str) -> dict[str, Any]:
    exported: dict[str, Any] = json.loads(
        (recorded.folder / "histories" / f"{workflow_id}.json").read_text()
    )
    return exported


# --- the recordings --------------------------------------------------------------------------
def test_the_runs_ended_as_designed(recorded: Recorded) -> None:
    assert recorded.statuses == {
        "everything": "COMPLETED",
        "terminated": "TERMINATED",
        "timed-out": "TIMED_OUT",
        "failed": "FAILED",
        "cancelled": "CANCELLED",
    }


def test_between_them_the_histories_hold_every_event_type(recorded: Recorded) -> None:
    seen = {e.type for events in recorded.histories.values() for e in events}
    # Child-workflow and continue-as-new events: tests/integration/test_replay_children.py.
    assert seen == set(EVENT_TYPES) - NEW_TYPES


# --- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "workflow_id", ["everything", "terminated", "timed-out", "failed", "cancelled"]
)
def test_every_export_replays_from_dict_path_and_event_list(
    recorded: Recorded, workflow_id: str
) -> None:
    replayer = Replayer(workflows=v1.WORKFLOWS)
    path = recorded.folder / "histories" / f"{workflow_id}.json"
    exported = _export(recorded, workflow_id)

    from_dict = replayer.replay(exported)
    from_path = replayer.replay(path)
    from_events = replayer.replay(recorded.histories[workflow_id], workflow_id=workflow_id)
    from_bare_list = replayer.replay(exported["events"])

    assert from_dict.workflow_id == from_path.workflow_id == from_events.workflow_id
    assert from_dict.workflow_id == workflow_id
    assert from_dict.events == from_path.events == len(recorded.histories[workflow_id])
    assert from_dict.closed and from_bare_list.closed
    assert from_path.source == str(path)


def test_the_json_export_is_lossless(recorded: Recorded) -> None:
    for workflow_id, events in recorded.histories.items():
        exported = _export(recorded, workflow_id)
        parsed_id, parsed = history_from_json(exported)
        assert parsed_id == workflow_id
        assert [e.to_json() for e in parsed] == [e.to_json() for e in events]


def test_replay_folder_gives_one_case_per_file(recorded: Recorded) -> None:
    cases = replay_folder(recorded.folder / "histories", v1.WORKFLOWS)

    assert [str(c) for c in cases] == sorted(f"{w}.json" for w in recorded.statuses)
    results = [case.replay() for case in cases]
    assert {r.workflow_type for r in results} == {"Everything", "Waits", "Undoable", "Fails"}


def test_replay_folder_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no history folder"):
        replay_folder(tmp_path / "nope", v1.WORKFLOWS)


# --- a changed workflow ----------------------------------------------------------------------
def test_a_changed_workflow_fails_naming_the_event_and_both_commands(recorded: Recorded) -> None:
    events = recorded.histories["everything"]
    first_step = next(e for e in events if e.type == "ActivityScheduled")

    with pytest.raises(NondeterminismError) as caught:
        Replayer(workflows=v2.WORKFLOWS).replay(recorded.folder / "histories" / "everything.json")

    err = caught.value
    assert (err.workflow_id, err.event_id) == ("everything", first_step.event_id)
    message = str(err)
    assert f"at event {first_step.event_id}" in message
    assert "history has ActivityScheduled(seq=1, activity='flaky')" in message
    assert "the code produced TimerStarted(seq=1)" in message
    assert "everything.json" in message  # which file, when replaying a folder
    assert "\n" not in message


def test_the_other_histories_still_replay_on_the_changed_deploy(recorded: Recorded) -> None:
    replayer = Replayer(workflows=[*v2.WORKFLOWS, v1.Undoable, v1.Waits, v1.fails])
    for workflow_id in ("terminated", "timed-out", "failed", "cancelled"):
        replayer.replay(_export(recorded, workflow_id))


def test_a_type_no_workflow_has_is_refused(recorded: Recorded) -> None:
    with pytest.raises(UnknownWorkflowTypeError, match="Waits"):
        Replayer(workflows=[v1.Everything]).replay(_export(recorded, "terminated"))


def test_malformed_input_is_a_value_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    replayer = Replayer(workflows=v1.WORKFLOWS)
    with pytest.raises(ValueError, match="cannot read history"):
        replayer.replay(broken)
    with pytest.raises(ValueError, match="WorkflowStarted"):
        replayer.replay([])
    with pytest.raises(ValueError, match="at least one workflow"):
        Replayer(workflows=[])


# --- the command line ------------------------------------------------------------------------
def _saga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "saga", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_saga_history_export_replays_with_saga_replay(recorded: Recorded) -> None:
    exported = _saga("history", "everything", "--json", "--db", recorded.database_url)
    assert exported.returncode == 0, exported.stderr
    path = recorded.folder / "cli-everything.json"
    path.write_text(exported.stdout)
    assert json.loads(exported.stdout) == _export(recorded, "everything")

    ok = _saga("replay", "--app", "tests.integration.replayer_workflows", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "deterministic" in ok.stdout

    changed = _saga("replay", "--app", "tests.integration.replayer_workflows_changed", str(path))
    assert changed.returncode == 1
    lines = changed.stderr.strip().splitlines()
    assert len(lines) == 1, changed.stderr
    assert "nondeterminism in workflow 'everything' at event" in lines[0]
    assert "ActivityScheduled(seq=1, activity='flaky')" in lines[0]
    assert "TimerStarted(seq=1)" in lines[0]
