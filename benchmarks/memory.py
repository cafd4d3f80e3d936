"""Coordinator memory with many sleeping sagas: flat between 10,000 and 100,000?

    .venv/bin/python -m benchmarks.memory [--small 10000] [--large 100000]

On a scratch PostgreSQL database and RabbitMQ vhost it creates and drops, it spawns one
``saga coordinator`` process (no worker: nothing here runs an activity), then starts
``bench-timers`` sagas that sleep for a day, through :class:`saga.Client` from many
concurrent callers. Once ``--small`` of them are activated (``version >= 1`` and a timer
row each), it lets the coordinator settle and reads its resident memory (VmRSS, median
of several samples); then it goes on to ``--large`` and reads it again.

The coordinator's memory should be bounded by its workflow cache (10,000 instances)
and its timer heap (~1,000 timers), not by how many sagas are open: the target is
RSS at ``--large`` within ±10 % of RSS at ``--small``. The defaults are the target's
figures; a quick run (``--small 2000 --large 20000``) checks the machinery only, as
2,000 sagas do not fill the cache.

Starts run at most ``--window`` ahead of activation, so what is measured is memory
held for open sagas, not a backlog of start notices queued in the coordinator (the
peak, VmHWM, is reported too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from benchmarks.baseline import asyncpg_dsn
from benchmarks.distributed import (
    _admin,
    _cpu_model,
    _rabbitmqctl,
    _with_database,
    _with_vhost,
    add_service_arguments,
)
from saga.bench import BenchConfig
from saga.bench.driver import _spawn, _stop
from saga.bench.scenarios import BenchParams, Timers
from saga.client import Client
from saga.errors import StoreError, WorkflowAlreadyStartedError

SLEEP = 24 * 3600.0  # seconds: no timer fires while we measure
TOLERANCE = 0.10
COUNTS = """SELECT (SELECT count(*) FROM workflows WHERE version >= 1),
                   (SELECT count(*) FROM timers)"""
"""Sagas the coordinator has run up to their sleep (a first commit), and their timers."""


@contextlib.asynccontextmanager
async def scratch(admin_db: str, broker: str) -> AsyncIterator[tuple[str, str]]:
    """A database and a vhost of our own, dropped afterwards (also on SIGTERM or Ctrl-C)."""
    name = f"saga_bench_mem_{secrets.token_hex(4)}"
    vhost = f"saga-bench-mem-{secrets.token_hex(4)}"
    user = urlsplit(broker).username or "guest"
    await _admin(admin_db, f'CREATE DATABASE "{name}"')
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield _with_database(admin_db, name), _with_vhost(broker, vhost)
    finally:
        await _admin(admin_db, f'DROP DATABASE IF EXISTS "{name}"')
        with contextlib.suppress(subprocess.CalledProcessError):  # add_vhost may have failed
            _rabbitmqctl("delete_vhost", vhost)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


@dataclass
class Watch:
    """Every second: how many sagas are activated, and the coordinator's RSS then."""

    pid: int
    dsn: str
    activated: int = 0
    timers: int = 0
    timeline: list[tuple[float, int, float]] = field(default_factory=list)
    """(seconds, activated sagas, RSS MiB): shows whether memory levels off or keeps growing."""
    polled: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        began = time.monotonic()
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
                try:
                    while True:
                        self.activated, self.timers = await conn.fetchrow(COUNTS)
                        rss = mib(memory_kib(self.pid)["VmRSS"])
                        self.timeline.append(
                            (round(time.monotonic() - began, 1), self.activated, rss)
                        )
                        async with self.polled:
                            self.polled.notify_all()
                        await asyncio.sleep(1.0)
                finally:
                    await conn.close(timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(1.0)  # a shared server restarting: count again after

    async def until(self, condition: Callable[[], bool]) -> None:
        async with self.polled:
            await self.polled.wait_for(condition)

    async def until_activated(self, count: int) -> None:
        """The coordinator's sweep finds the sagas whose start notice got lost."""
        await self.until(lambda: self.activated >= count)


async def start_one(client: Client, workflow_id: str, params: BenchParams) -> None:
    """Start one saga, again if the database went away meanwhile (a shared server restarts)."""
    while True:
        try:
            await client.start_workflow(Timers.run, params, id=workflow_id)
            return
        except WorkflowAlreadyStartedError:
            return  # the attempt that failed had written it
        except StoreError:
            await asyncio.sleep(1.0)


async def start_sagas(
    client: Client, watch: Watch, ids: range, concurrency: int, window: int
) -> None:
    """Start ``ids`` from ``concurrency`` callers, never more than ``window`` unactivated."""
    params = BenchParams(sleep=SLEEP)
    numbers = iter(ids)
    started = ids.start

    def within_window() -> bool:
        return started - watch.activated < window

    async def caller() -> None:
        nonlocal started
        for number in numbers:
            await watch.until(within_window)
            await start_one(client, f"sleeper-{number}", params)
            started += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def settled_rss(pid: int, settle: float, samples: int) -> dict[str, Any]:
    """After ``settle`` seconds, the median of ``samples`` RSS readings a second apart."""
    await asyncio.sleep(settle)
    readings = []
    for _ in range(samples):
        readings.append(memory_kib(pid)["VmRSS"])
        await asyncio.sleep(1.0)
    return {
        "rss_mib": mib(statistics.median(readings)),
        "rss_samples_mib": [mib(r) for r in readings],
        "peak_mib": mib(memory_kib(pid)["VmHWM"]),
    }


async def measure(args: argparse.Namespace, db: str, broker: str) -> dict[str, Any]:
    """Spawn the coordinator, fill it with ``--small`` then ``--large`` sleeping sagas."""
    (coordinator,) = await _spawn(BenchConfig(database_url=db, broker_url=broker, workers=0))
    watch = Watch(coordinator.pid, asyncpg_dsn(db))
    watching = asyncio.create_task(watch.run())
    points = []
    try:
        idle = await settled_rss(coordinator.pid, 0.0, args.samples)
        client = await Client.connect(database_url=db, broker_url=broker)
        async with client:
            for previous, count in itertools.pairwise((0, args.small, args.large)):
                began = time.monotonic()
                await start_sagas(
                    client, watch, range(previous, count), args.concurrency, args.window
                )
                started_s = time.monotonic() - began
                try:
                    async with asyncio.timeout(args.timeout):
                        await watch.until_activated(count)
                except TimeoutError:
                    raise TimeoutError(f"{watch.activated} of {count} sagas activated") from None
                points.append(
                    {
                        "sleeping_sagas": count,
                        "timer_rows": watch.timers,
                        "start_s": round(started_s, 1),
                        "start_per_s": round((count - previous) / started_s, 1),
                        "activated_s": round(time.monotonic() - began, 1),
                        **await settled_rss(coordinator.pid, args.settle, args.samples),
                    }
                )
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await asyncio.to_thread(_stop, [coordinator])
    return {"idle_rss_mib": idle["rss_mib"], "points": points, "timeline": watch.timeline}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    async with scratch(args.admin_db, args.broker) as (db, broker):
        figures = await measure(args, db, broker)
    small, large = figures["points"]
    ratio = large["rss_mib"] / small["rss_mib"]
    return {
        "date": date,
        "command": shlex.join(
            [Path(sys.executable).name, "-m", "benchmarks.memory", *sys.argv[1:]]
        ),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        **figures,
        "ratio": round(ratio, 3),
        "flat": abs(ratio - 1) <= TOLERANCE,
        "seconds": round(time.monotonic() - began, 1),
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"- date: {result['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}; Python {m['python']}; "
        f"load average {m['load_average_before'][0]} before, {m['load_average_after'][0]} after",
        f"- command: `{result['command']}` ({result['seconds']:.0f} s in all)",
        f"- coordinator idle: {result['idle_rss_mib']} MiB",
        "",
        "| sleeping sagas | timer rows | started in | all activated after | RSS (median) | peak |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in result["points"]:
        lines.append(
            f"| {p['sleeping_sagas']:,} | {p['timer_rows']:,} | {p['start_s']} s "
            f"({p['start_per_s']:.0f}/s) | {p['activated_s']} s | {p['rss_mib']} MiB | "
            f"{p['peak_mib']} MiB |"
        )
    verdict = "flat" if result["flat"] else "NOT flat"
    lines += ["", f"RSS on the way (activated sagas: MiB): {_milestones(result)}"]
    lines += ["", f"RSS ratio large/small: {result['ratio']:.3f} ({verdict}, target ±10 %)"]
    return "\n".join(lines)


def _milestones(result: dict[str, Any], steps: int = 10) -> str:
    """The RSS read when each tenth of the large run was first activated."""
    large = result["points"][-1]["sleeping_sagas"]
    marks = []
    for k in range(1, steps + 1):
        goal = large * k // steps
        reached = next((rss for _, n, rss in result["timeline"] if n >= goal), None)
        if reached is not None:
            marks.append(f"{goal // 1000}k: {reached:.0f}")
    return ", ".join(marks)


def _cancel_on_sigterm() -> None:
    """SIGTERM cancels the run like Ctrl-C does, so the scratch database is dropped."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    _cancel_on_sigterm()
    return await run(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_service_arguments(parser)
    parser.add_argument("--small", type=int, default=10_000, help="first measurement")
    parser.add_argument("--large", type=int, default=100_000, help="second measurement")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent start calls")
    parser.add_argument(
        "--window", type=int, default=2000, help="started sagas not yet activated, at most"
    )
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before sampling")
    parser.add_argument("--samples", type=int, default=5, help="RSS readings, a second apart")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to activate all")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    result = asyncio.run(_main(args))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    sys.exit(0 if result["flat"] else 1)


if __name__ == "__main__":
    main()
