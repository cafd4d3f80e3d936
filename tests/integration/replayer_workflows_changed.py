"""An incompatible deploy of ``Everything``: it now sleeps before reserving."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from saga import ActivityError, workflow
from tests.integration.replayer_workflows import FAST_RETRY, flaky, gate, refuse


@workflow.defn(name="Everything")
class EverythingSleepsFirst:
    def __init__(self) -> None:
        self.approved_by: str | None = None

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.run
    async def run(self, order: str) -> dict[str, Any]:
        patched = workflow.patched("notify-v2")
        await workflow.sleep(timedelta(minutes=1))
        reserved = await workflow.execute_activity(flaky, order, retry_policy=FAST_RETRY)
        await asyncio.gather(
            workflow.wait_condition(lambda: self.approved_by is not None, timeout=3600),
            workflow.execute_activity(gate, order),
        )
        try:
            await workflow.execute_activity(refuse, order, retry_policy=FAST_RETRY)
            refused = False
        except ActivityError:
            refused = True
        return {
            "patched": patched,
            "reserved": reserved,
            "approved_by": self.approved_by,
            "refused": refused,
        }


WORKFLOWS = [EverythingSleepsFirst]
