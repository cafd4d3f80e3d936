"""The app of the long-running e2e tests: a durable sleep, a mailbox, a child.

``woke`` appends one JSON line per call (``workflow_id``, ``key``, ``at``: the wall
time) to the file named by ``SAGA_E2E_CALLS``, under a lock, so a test counts the
calls across SIGKILLs and restarts. Its queue is ``<SAGA_E2E_QUEUE_PREFIX>-alarms``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from saga import activity, workflow

PREFIX = os.environ.get("SAGA_E2E_QUEUE_PREFIX", "e2e")
ALARMS = f"{PREFIX}-alarms"


def read_calls(path: Path) -> list[dict[str, Any]]:
    """Every line written so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@activity.defn(queue=ALARMS)
async def woke(label: str) -> float:
    info = activity.info()
    at = time.time()
    line = {"workflow_id": info.workflow_id, "key": info.idempotency_key, "label": label, "at": at}
    path = os.environ.get("SAGA_E2E_CALLS")
    if path:
        with Path(path).open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(json.dumps(line) + "\n")
    return at


@workflow.defn
class Sleeper:
    """Sleeps ``seconds`` on a durable timer, then says so (an activity) and returns."""

    @workflow.run
    async def run(self, seconds: float) -> dict[str, str]:
        slept_at = workflow.now()
        await workflow.sleep(seconds)
        await workflow.execute_activity(woke, workflow.info().workflow_id)
        return {"slept_at": slept_at.isoformat(), "woke_at": workflow.now().isoformat()}


@workflow.defn
class Mailbox:
    """Waits for a ``deliver`` signal; answers ``received`` queries meanwhile."""

    def __init__(self) -> None:
        self.letters: list[str] = []

    @workflow.signal
    def deliver(self, letter: str) -> None:
        self.letters.append(letter)

    @workflow.query
    def received(self) -> list[str]:
        return self.letters

    @workflow.run
    async def run(self, wanted: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self.letters) >= wanted)
        return self.letters
