"""Real processes killed with SIGKILL mid-saga, then restarted on the same SQLite file.

What ran is counted in files the activities append to (``calls.log``), outside the
process that dies, so the counts survive the crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from saga.client import Client, WorkflowDescription
from saga.history import WorkflowStatus
from saga.store.base import open_store
from saga.transports.memory import MemoryTransport

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


class Child:
    """One run of ``tests.e2e.crash_child`` with its output kept for failure messages."""

    def __init__(self, story: str, folder: Path, phase: str) -> None:
        self.folder = folder
        self.out = folder / f"{phase}.out"
        self.err = folder / f"{phase}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.crash_child", story, str(folder), phase],
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )

    def output(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()[-4000:]}"

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until true; fail if the child dies or the deadline passes."""
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"child exited ({self.proc.returncode}) before {what}\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} after {DEADLINE}s\n{self.output()}")
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no cleanup, no graceful shutdown
        self.proc.wait(timeout=10)

    def finish(self) -> str:
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"restarted child did not finish\n{self.output()}")
        assert self.proc.returncode == 0, self.output()
        return self.out.read_text()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.proc.poll() is None:
            child.kill()


def calls(folder: Path) -> list[list[str]]:
    path = folder / "calls.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def describe(folder: Path) -> WorkflowDescription:
    """Read the outcome from the database file, as an operator would."""
    store = open_store(f"sqlite+aiosqlite:///{folder / 'saga.db'}")
    await store.connect()
    async with Client(store, MemoryTransport(), owns_connections=True) as client:
        return await client.get_workflow_handle("crash-story").describe()


async def test_crash_during_compensation_runs_only_the_remaining_one_on_restart(
    tmp_path: Path, children: list[Child]
) -> None:
    first = Child("compensation", tmp_path, "first")
    children.append(first)
    first.wait_until((tmp_path / "marker").exists, "second compensation starting")
    first.kill()
    before = calls(tmp_path)
    assert [c[:2] for c in before if c[0] == "unbook"] == [["unbook", "b"], ["unbook", "a"]]

    restart = Child("compensation", tmp_path, "restart")
    children.append(restart)
    output = restart.finish()

    assert "COMPENSATED" in output, restart.output()
    log = calls(tmp_path)
    unbooks = [(c[1], c[3]) for c in log if c[0] == "unbook"]
    assert unbooks.count(("b", "first")) == 1
    assert [u for u in unbooks if u[0] == "b"] == [("b", "first")]  # never run again
    assert ("a", "restart") in unbooks  # the interrupted one ran again, to completion
    assert sorted(c[1] for c in log if c[0] == "book") == ["a", "b", "c"]  # steps: once each
    desc = await describe(tmp_path)
    assert desc.status is WorkflowStatus.COMPENSATED
    assert [(c.args, c.status) for c in desc.compensations] == [
        (["b"], "COMPLETED"),
        (["a"], "COMPLETED"),
    ]


async def test_money_transfer_crash_while_deposit_keeps_failing(
    tmp_path: Path, children: list[Child]
) -> None:
    bank_file = tmp_path / "bank.json"
    bank_file.write_text(
        json.dumps({"balances": {"alice": 100, "bob": 0}, "applied": [], "deposit_outage": 10**6})
    )
    first = Child("money-transfer", tmp_path, "first")
    children.append(first)
    first.wait_until(
        lambda: sum(c[0] == "deposit" for c in calls(tmp_path)) >= 2, "two failed deposits"
    )
    first.kill()
    crashed_with = calls(tmp_path)
    assert [c[0] for c in crashed_with].count("withdraw") == 1
    # The bank comes back after two more failures.
    state = json.loads(bank_file.read_text())
    assert state["balances"] == {"alice": 50, "bob": 0}
    state["deposit_outage"] = 2
    bank_file.write_text(json.dumps(state))

    restart = Child("money-transfer", tmp_path, "restart")
    children.append(restart)
    output = restart.finish()

    assert output.startswith("COMPLETED"), restart.output()
    log = calls(tmp_path)
    assert [c[0] for c in log].count("withdraw") == 1  # not run again after the crash
    assert [c[0] for c in log].count("refund") == 0
    deposits = [int(c[1]) for c in log if c[0] == "deposit"]
    assert len(deposits) >= len([c for c in crashed_with if c[0] == "deposit"]) + 3
    assert deposits == sorted(deposits)  # retries carried on from where they were
    assert json.loads(bank_file.read_text())["balances"] == {"alice": 50, "bob": 50}
    desc = await describe(tmp_path)
    assert desc.status is WorkflowStatus.COMPLETED
    steps = {s.activity: s for s in desc.steps}
    assert (steps["withdraw"].status, steps["withdraw"].attempts) == ("COMPLETED", 1)
    assert (steps["deposit"].status, steps["deposit"].attempts) == ("COMPLETED", deposits[-1])
