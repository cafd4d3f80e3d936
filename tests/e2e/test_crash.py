"""SIGKILL a real coordinator+worker process mid-workflow, restart it, and finish.

The child (``tests.e2e.two_step_app``) runs a ``WorkflowEnvironment`` on the test's
database (a SQLite file, or the run's PostgreSQL database) with an in-memory broker.
The broker dies with the process; what was committed does not: the restarted
coordinator republishes its outbox and the workflow goes on from its history.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from saga import WorkflowStatus
from saga.client import Client
from saga.store.base import open_store
from saga.transports.memory import MemoryTransport

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0  # seconds for any one thing a child must do


class Child:
    """One ``two_step_app`` process; its output is kept for failure messages."""

    def __init__(self, mode: str, database_url: str, folder: Path) -> None:
        self.out = folder / f"{mode}.out"
        self.err = folder / f"{mode}.err"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.two_step_app", mode, database_url, str(folder)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )

    def output(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()[-4000:]}"

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Poll until ``condition()``; fail if the child dies or the deadline passes."""
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"child exited ({self.proc.returncode}) before {what}\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {DEADLINE}s\n{self.output()}")
            time.sleep(0.02)

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no cleanup, no graceful shutdown
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def outcome(self) -> dict[str, str]:
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"restarted child did not finish in {DEADLINE}s\n{self.output()}")
        assert self.proc.returncode == 0, self.output()
        result: dict[str, str] = json.loads(self.out.read_text().strip().splitlines()[-1])
        return result


@pytest.fixture
def spawn() -> Iterator[Callable[[str, str, Path], Child]]:
    children: list[Child] = []

    def start(mode: str, database_url: str, folder: Path) -> Child:
        child = Child(mode, database_url, folder)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(timeout=10)


def step_one_runs(folder: Path) -> list[str]:
    log = folder / "step_one.log"
    return log.read_text().splitlines() if log.exists() else []


async def read_back(database_url: str) -> tuple[WorkflowStatus, list[str]]:
    """Status and event types, read from the database as an operator would."""
    store = open_store(database_url)
    await store.connect()
    async with Client(store, MemoryTransport(), owns_connections=True) as client:
        handle = client.get_workflow_handle("crash-1")
        info = await handle.describe()
        return info.status, [e.type for e in await handle.history()]


async def test_sigkill_during_step_two_does_not_run_step_one_again(
    database_url: str, tmp_path: Path, spawn: Callable[[str, str, Path], Child]
) -> None:
    first = spawn("start-and-hang-in-two", database_url, tmp_path)
    first.wait_for((tmp_path / "ready").exists, "step two to start")
    first.sigkill()
    assert len(step_one_runs(tmp_path)) == 1

    restarted = spawn("finish", database_url, tmp_path)
    assert restarted.outcome() == {"result": "two(one(order-7))"}

    status, types = await read_back(database_url)
    assert status is WorkflowStatus.COMPLETED
    assert types == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    runs = step_one_runs(tmp_path)
    assert len(runs) == 1, runs  # exactly once, although the process died after it
    assert runs[0].endswith("attempt=1 mode=start-and-hang-in-two")


async def test_sigkill_during_step_one_runs_it_again_with_the_same_key(
    database_url: str, tmp_path: Path, spawn: Callable[[str, str, Path], Child]
) -> None:
    # Its result was never recorded, so the step runs again (at least once), and the
    # idempotency key it gets is the same: the service can tell it is a repeat.
    first = spawn("start-and-hang-in-one", database_url, tmp_path)
    first.wait_for((tmp_path / "ready").exists, "step one to start")
    first.sigkill()

    restarted = spawn("finish", database_url, tmp_path)
    assert restarted.outcome() == {"result": "two(one(order-7))"}
    status, types = await read_back(database_url)
    assert status is WorkflowStatus.COMPLETED
    assert types.count("ActivityCompleted") == 2
    runs = step_one_runs(tmp_path)
    assert len(runs) == 2, runs
    keys = {line.split()[0] for line in runs}
    assert len(keys) == 1 and next(iter(keys)).startswith("crash-1/")
    assert [line.split()[2] for line in runs] == ["mode=start-and-hang-in-one", "mode=finish"]
