"""Workflows and activities shared by the benchmarks."""

from __future__ import annotations

from datetime import timedelta

from saga import RetryPolicy, activity, workflow

OPTIONS = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_attempts=3),
}


@activity.defn(queue="bench")
async def step(index: int) -> int:
    return index + 1


@workflow.defn
class ThreeSteps:
    @workflow.run
    async def run(self, start: int) -> int:
        value = await workflow.execute_activity(step, start, **OPTIONS)
        value = await workflow.execute_activity(step, value, **OPTIONS)
        return await workflow.execute_activity(step, value, **OPTIONS)


@workflow.defn
class ManySteps:
    """A long history: ``count`` activities in a row."""

    @workflow.run
    async def run(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = await workflow.execute_activity(step, value, **OPTIONS)
        return value
