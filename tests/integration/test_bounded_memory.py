"""The coordinator's memory is bounded by its cache and timer heap, not by open sagas:
evicted workflows resume by replay, and timers beyond the heap come from the database."""

from __future__ import annotations

from datetime import timedelta

from saga import workflow
from saga.testing import WorkflowEnvironment

WAIT = 60.0


@workflow.defn
class Naps:
    @workflow.run
    async def run(self, minutes: int) -> str:
        await workflow.sleep(timedelta(minutes=minutes))
        await workflow.sleep(timedelta(minutes=1))
        return f"slept {minutes + 1}"


async def test_many_sleepers_past_the_cache_and_the_heap_all_wake_on_time(
    database_url: str,
) -> None:
    async with WorkflowEnvironment(
        workflows=[Naps], database_url=database_url, time_skipping=True
    ) as env:
        coordinator = env.coordinator
        coordinator._cache_size = 4  # noqa: SLF001 - small bounds, so both overflow
        coordinator._heap_limit = 6  # noqa: SLF001
        handles = [
            await env.client.start_workflow(Naps.run, m, id=f"nap-{m:02d}")
            for m in range(30, 0, -1)  # started latest-first: the heap must reorder
        ]
        results = [await h.result(timeout=WAIT) for h in handles]
        assert results == [f"slept {m + 1}" for m in range(30, 0, -1)]
        assert len(coordinator._cache) <= 4  # noqa: SLF001
        assert len(coordinator._heap) <= 6  # noqa: SLF001
        for handle in handles:
            events = await handle.history()
            started = [e for e in events if e.type == "TimerStarted"]
            fired = [e for e in events if e.type == "TimerFired"]
            assert len(started) == len(fired) == 2  # each timer fired once
            for start, fire in zip(started, fired, strict=True):
                assert fire.timestamp >= start.attributes.fire_at  # type: ignore[attr-defined]
