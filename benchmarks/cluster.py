"""Many coordinators: throughput with 1, 2, 3 coordinator processes, the CPU split, takeover.

    .venv/bin/python -m benchmarks.cluster [--workflows 1500] [--coordinators 1,2,3]
        [--workers 1] [--takeover-ttl 3,10] [--takeover-mode kill,stop] [--out FILE]

Each run gets its own scratch PostgreSQL database and RabbitMQ vhost
(:func:`benchmarks.distributed.scratch`), dropped afterwards.

1. **Raw limits**: one connection's commit and one publish with confirm
   (:func:`benchmarks.baseline.measure`), 16 connections committing at once, and one
   queue's publish and consume rate — the figures the scaling estimate rests on.
2. **Throughput**: ``saga bench --scenario trip-booking`` (3 activities) with K coordinator
   and W worker processes, ``--workflows`` sagas from ``--concurrency`` closed-loop
   clients. While it runs, a thread samples ``utime + stime`` of every process in
   ``/proc`` (:mod:`benchmarks.cpu`): the coordinators, the workers, this process (the
   bench driver and its clients), PostgreSQL and RabbitMQ, and the machine's busy time,
   so the figures come with who used the 2 cores.
3. **Takeover**: 3 coordinators with ``--lease-ttl T`` and sagas flowing; after
   ``--kill-after`` seconds one coordinator is SIGKILLed (reaped at once, as systemd
   would: its host's peers see its pid gone and release its leases) or SIGSTOPped (what
   a peer on another host sees of a dead one: its lease must expire), then killed once
   its shards moved. Measured: the time until every shard it held is leased to a live
   coordinator (polling ``shard_leases``), and the longest time with no saga completing
   (from ``workflows.close_time``), overall and on the victim's shards.

It prints Markdown and writes everything as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from benchmarks.baseline import (
    asyncpg_dsn,
    measure,
    postgres_commits_parallel,
    rabbitmq_queue_rate,
)
from benchmarks.cpu import Classifier, CpuSampler, servers
from benchmarks.distributed import add_service_arguments, command, machine, scratch
from saga.bench import BenchConfig, run_bench
from saga.bench.driver import _spawn, _stop
from saga.bench.report import BenchReport
from saga.errors import SagaError

STEPS = 3
_TROUBLE = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|lost shard")


def _classifier(database: str) -> Classifier:
    me = os.getpid()
    server = servers(database)

    def classify(pid: int, comm: str, ppid: int, line: str) -> str | None:
        if pid == me:
            return "bench driver (clients)"
        if ppid == me:
            for role in ("coordinator", "worker"):
                if f" {role} " in line:
                    return f"{role} {pid}"
            return None
        return server(pid, comm, ppid, line)

    return classify


def _log_files(procs: list[subprocess.Popen[bytes]]) -> dict[int, Path]:
    """Where each daemon's log goes (``saga bench`` points their stderr at a file)."""
    return {p.pid: Path(os.readlink(f"/proc/{p.pid}/fd/2")) for p in procs if p.poll() is None}


@contextlib.asynccontextmanager
async def _deployment(
    cfg: BenchConfig,
) -> AsyncIterator[tuple[list[subprocess.Popen[bytes]], dict[str, Any]]]:
    """``saga bench``'s coordinators and workers, started once the shards are spread.

    A coordinator that starts first takes every shard; the others get their share over
    the next lease rounds. Driving load only once each holds its share measures K
    coordinators, not one and then K. Yields the processes and a dict that, once they
    stopped, holds what their logs said (:func:`_logs`); the logs are then deleted.

    A daemon that dies while starting is a finding, not the end of the benchmark: it is
    recorded under ``startup_failures`` and the deployment started again (twice at most).
    """
    failures: list[str] = []
    while True:
        try:
            procs = await _spawn(cfg)
            break
        except SagaError as exc:
            failures.append(str(exc))
            failed = re.search(r"\((/\S+/saga-bench-[^/]+)/", str(exc))
            if failed:
                shutil.rmtree(failed.group(1), ignore_errors=True)
            if len(failures) > 2:
                raise
    files = _log_files(procs)
    said: dict[str, Any] = {"startup_failures": failures}
    try:
        await _balanced(str(cfg.database_url), cfg.coordinators)
        yield procs, said
    finally:
        await asyncio.to_thread(_stop, procs)
        said.update(_logs(files))
        for folder in {path.parent for path in files.values()}:
            shutil.rmtree(folder, ignore_errors=True)


async def _balanced(db: str, coordinators: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    conn = await asyncpg.connect(asyncpg_dsn(db))
    try:
        shards = await conn.fetchval("SELECT count(*) FROM shard_leases")
        high = -(-shards // coordinators)  # each aims at ceil(shards / coordinators)
        while time.monotonic() < deadline:
            held = await conn.fetch(
                "SELECT owner, count(*) AS n FROM shard_leases "
                "WHERE owner IS NOT NULL AND expires_at > now() GROUP BY owner"
            )
            counts = [r["n"] for r in held]
            spread = all(n <= high for n in counts)
            if len(counts) == coordinators and spread and sum(counts) == shards:
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise RuntimeError(f"shards not spread over {coordinators} coordinators in {within:g} s")


def _logs(logs: dict[int, Path]) -> dict[str, Any]:
    """What the daemons said about shards, and every warning or error (a few lines)."""
    claimed: dict[str, list[str]] = {}
    trouble: list[str] = []
    for pid, path in sorted(logs.items()):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        name = f"{path.stem} (pid {pid})"
        claimed[name] = [ln for ln in lines if "shard(s)" in ln or "is gone" in ln]
        trouble += [f"{name}: {ln}" for ln in lines if _TROUBLE.search(ln)]
    return {"shard_lines": claimed, "trouble": trouble[:40], "trouble_count": len(trouble)}


async def _lease_owners(db: str) -> dict[str, Any]:
    """How many shards each coordinator holds now, by pid."""
    conn = await asyncpg.connect(asyncpg_dsn(db))
    try:
        rows = await conn.fetch(
            "SELECT c.pid, count(*) AS n FROM shard_leases l "
            "JOIN coordinators c ON c.identity = l.owner GROUP BY c.pid ORDER BY c.pid"
        )
    finally:
        await conn.close()
    return {str(r["pid"]): r["n"] for r in rows}


async def _integrity(db: str) -> dict[str, Any]:
    """Sagas whose history does not hold exactly 3 scheduled and 3 completed steps."""
    conn = await asyncpg.connect(asyncpg_dsn(db))
    try:
        odd = await conn.fetch(
            "SELECT workflow_id, "
            "count(*) FILTER (WHERE type = 'ActivityScheduled') AS scheduled, "
            "count(*) FILTER (WHERE type = 'ActivityCompleted') AS completed "
            "FROM history_events GROUP BY workflow_id "
            "HAVING count(*) FILTER (WHERE type = 'ActivityScheduled') <> 3 "
            "OR count(*) FILTER (WHERE type = 'ActivityCompleted') <> 3"
        )
        unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE NOT sent")
    finally:
        await conn.close()
    return {"odd_histories": [dict(r) for r in odd[:20]], "outbox_unsent": unsent}


def _cpu_table(split: dict[str, float], wall: float) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    capacity = cores * wall
    busy = split.pop("machine busy")
    ours = sum(v for k, v in split.items() if "other databases" not in k)
    rows = {k: {"cpu_s": round(v, 1), "share": round(v / capacity, 3)} for k, v in split.items()}
    rows["everything else (other sessions' tests, kernel)"] = {
        "cpu_s": round(busy - sum(split.values()), 1),
        "share": round((busy - sum(split.values())) / capacity, 3),
    }
    return {
        "wall_s": round(wall, 2),
        "capacity_cpu_s": round(capacity, 1),
        "machine_busy_share": round(busy / capacity, 3),
        "this_run_share": round(ours / capacity, 3),
        "by_process": dict(sorted(rows.items())),
    }


def _figures(report: BenchReport) -> dict[str, Any]:
    return {
        "sagas": report.started,
        "by_status": report.by_status,
        "ok": report.ok,
        "lost": report.lost[:10],
        "stuck": report.stuck[:10],
        "inconsistent": report.inconsistent[:10],
        "seconds": round(report.duration_s, 2),
        "workflows_per_s": round(report.workflows_per_s, 1),
        "steps_per_s": round(report.steps_per_s, 1),
        "latency_ms": {k: round(v, 1) for k, v in report.latency_ms.model_dump().items()},
    }


async def throughput(args: argparse.Namespace, coordinators: int, workers: int) -> dict[str, Any]:
    """One ``saga bench`` run with K coordinators and W workers, with the CPU split."""
    async with scratch(args.admin_db, args.broker, "cluster") as (db, broker):
        database = urlsplit(db).path.lstrip("/")
        cfg = BenchConfig(
            scenario="trip-booking",
            workflows=args.workflows,
            concurrency=args.concurrency,
            database_url=db,
            broker_url=broker,
            coordinators=coordinators,
            workers=workers,
            timeout=args.timeout,
        )
        marks: dict[str, Any] = {}

        def on_client(_: object) -> None:
            marks["began"] = time.monotonic()
            marks["owners"] = asyncio.get_running_loop().create_task(_owners_later(db))

        with CpuSampler(_classifier(database)) as sampler:
            async with _deployment(cfg) as (_, said):
                load_before = os.getloadavg()
                report = await run_bench(
                    replace(cfg, external=True), show_progress=False, on_client=on_client
                )
                load_after = os.getloadavg()
        wall = report.duration_s
        split = sampler.split(marks["began"], marks["began"] + wall)
        return {
            "coordinators": coordinators,
            "workers": workers,
            "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
            **_figures(report),
            "shards_by_coordinator_pid": await marks["owners"],
            "integrity": await _integrity(db),
            "cpu": _cpu_table(split, wall),
            "logs": said,
        }


async def _owners_later(db: str, after: float = 3.0) -> dict[str, Any]:
    await asyncio.sleep(after)
    return await _lease_owners(db)


async def _signal_one(
    db: str,
    proc: subprocess.Popen[bytes],
    ttl: float,
    mode: str,
    after: float,
    marks: dict[str, Any],
) -> dict[str, Any]:
    """Kill (or stop) one coordinator; wait until every shard it held has a live owner."""
    await asyncio.sleep(after)
    victim = proc.pid
    conn = await asyncpg.connect(asyncpg_dsn(db))
    try:
        identity = await conn.fetchval("SELECT identity FROM coordinators WHERE pid = $1", victim)
        shards = [
            r["shard"]
            for r in await conn.fetch("SELECT shard FROM shard_leases WHERE owner = $1", identity)
        ]
        marks["victim_shards"] = shards
        marks["signalled_at"] = time.time()
        signalled = time.monotonic()
        os.kill(victim, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
        if mode == "kill":
            # Reap it now, as its parent would: until then its pid (a zombie) looks alive.
            await asyncio.to_thread(proc.wait)
        moved = None
        while time.monotonic() - signalled < 3 * ttl + 30:
            rows = await conn.fetch(
                "SELECT owner, owner_since FROM shard_leases WHERE shard = ANY($1::int[])", shards
            )
            if all(r["owner"] not in (None, identity) for r in rows):
                moved = time.monotonic() - signalled
                last_claim = max(r["owner_since"] for r in rows).timestamp()
                break
            await asyncio.sleep(0.05)
        new_owners = await conn.fetch(
            "SELECT c.pid, count(*) AS n FROM shard_leases l JOIN coordinators c "
            "ON c.identity = l.owner WHERE l.shard = ANY($1::int[]) GROUP BY c.pid",
            shards,
        )
    finally:
        await conn.close()
        if mode == "stop":
            proc.kill()
            await asyncio.to_thread(proc.wait)
    return {
        "victim_pid": victim,
        "victim_shards": len(shards),
        "all_moved_after_s": None if moved is None else round(moved, 2),
        "last_claim_after_s": None
        if moved is None
        else round(last_claim - marks["signalled_at"], 2),
        "new_owners_by_pid": {str(r["pid"]): r["n"] for r in new_owners},
    }


async def _completions(db: str, killed_at: float, shards: list[int]) -> dict[str, Any]:
    """The longest time with no saga completing, before and after the signal."""
    conn = await asyncpg.connect(asyncpg_dsn(db))
    try:
        rows = await conn.fetch(
            "SELECT shard, extract(epoch FROM close_time)::float8 AS t FROM workflows "
            "WHERE close_time IS NOT NULL ORDER BY close_time"
        )
    finally:
        await conn.close()
    times = [r["t"] for r in rows]
    victims = [r["t"] for r in rows if r["shard"] in set(shards)]
    first = times[0] if times else killed_at

    def longest_gap(ts: list[float], since: float, until: float) -> float:
        inside = [since] + [t for t in ts if since < t <= until]
        return max((b - a for a, b in zip(inside, inside[1:], strict=False)), default=0.0)

    after = [t for t in victims if t > killed_at]
    per_second = [
        sum(1 for t in times if killed_at + s <= t < killed_at + s + 1) for s in range(-3, 20)
    ]
    return {
        "longest_gap_before_s": round(longest_gap(times, first + 2, killed_at), 2),
        "longest_gap_after_s": round(longest_gap(times, killed_at, times[-1] if times else 0), 2),
        "victim_shards_first_completion_after_s": round(after[0] - killed_at, 2) if after else None,
        "completions_per_second_from_minus_3_s": per_second,
    }


async def takeover(args: argparse.Namespace, ttl: float, mode: str) -> dict[str, Any]:
    """3 coordinators, sagas flowing, one killed (or stopped) mid-run."""
    async with scratch(args.admin_db, args.broker, "cluster") as (db, broker):
        cfg = BenchConfig(
            scenario="trip-booking",
            workflows=None,
            duration=args.kill_after + 3 * ttl + 15,
            concurrency=args.concurrency,
            database_url=db,
            broker_url=broker,
            coordinators=3,
            workers=args.takeover_workers,
            lease_ttl=ttl,
            timeout=args.timeout,
        )
        marks: dict[str, Any] = {}
        async with _deployment(cfg) as (procs, said):

            def on_client(_: object) -> None:
                marks["task"] = asyncio.get_running_loop().create_task(
                    _signal_one(db, procs[0], ttl, mode, args.kill_after, marks)
                )

            load_before = os.getloadavg()
            report = await run_bench(
                replace(cfg, external=True), show_progress=False, on_client=on_client
            )
            moved = await marks["task"]
        return {
            "lease_ttl_s": ttl,
            "signal": "SIGKILL (reaped at once)" if mode == "kill" else "SIGSTOP, then SIGKILL",
            "load_average": round(load_before[0], 2),
            **_figures(report),
            **moved,
            **await _completions(db, marks["signalled_at"], marks["victim_shards"]),
            "integrity": await _integrity(db),
            "logs": said,
        }


async def limits(args: argparse.Namespace) -> dict[str, Any]:
    """The raw limits the scaling estimate rests on."""
    async with scratch(args.admin_db, args.broker, "cluster") as (db, broker):
        load = os.getloadavg()[0]
        return {
            "load_average": round(load, 2),
            **await measure(db, broker, args.rounds),
            "postgres_commits_16_connections": await postgres_commits_parallel(db),
            "rabbitmq_one_queue": await rabbitmq_queue_rate(broker),
        }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command("benchmarks.cluster"),
        "machine": await machine(args.admin_db),
    }
    if args.rounds:
        result["limits"] = await limits(args)
    result["throughput"], result["takeover"] = [], []
    for _ in range(args.repeat):
        for w in _ints(args.workers):
            for k in _ints(args.coordinators):
                result["throughput"].append(
                    await _attempt(throughput(args, k, w), coordinators=k, workers=w)
                )
                _save(result, args.out)
    for ttl in _floats(args.takeover_ttl):
        for mode in filter(None, args.takeover_mode.split(",")):
            result["takeover"].append(await _attempt(takeover(args, ttl, mode), ttl=ttl, mode=mode))
            _save(result, args.out)
    return result


async def _attempt(run: Coroutine[Any, Any, dict[str, Any]], **what: Any) -> dict[str, Any]:
    """One run's figures, or why it failed: on a shared machine someone may restart
    PostgreSQL under us, and the other runs are still worth having."""
    try:
        return await run
    except Exception as exc:  # recorded in the results and shown in the summary
        return {**what, "error": f"{type(exc).__name__}: {exc}"}


def _save(result: dict[str, Any], out: str | None) -> None:
    """Keep what was measured so far (a later run that fails loses nothing)."""
    if out:
        Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"- date: {result['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}; Python {m['python']}, "
        f"PostgreSQL {m['postgresql']}, RabbitMQ {m['rabbitmq']}",
        f"- command: `{result['command']}`",
        "",
        "| coordinators | workers | load avg | sagas | sagas/s | steps/s | p50 ms | p99 ms "
        "| shards per coordinator | ok |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    failed = [t for t in result["throughput"] + result["takeover"] if "error" in t]
    done = [t for t in result["throughput"] if "error" not in t]
    for t in done:
        lines.append(
            f"| {t['coordinators']} | {t['workers']} | {t['load_average'][0]}→"
            f"{t['load_average'][1]} | {t['sagas']} | {t['workflows_per_s']} | "
            f"{t['steps_per_s']:.0f} | {t['latency_ms']['p50']:.0f} | "
            f"{t['latency_ms']['p99']:.0f} | "
            f"{'/'.join(str(n) for n in t['shards_by_coordinator_pid'].values())} | "
            f"{'yes' if t['ok'] and not t['integrity']['odd_histories'] else 'NO'} |"
        )
    for t in done:
        cpu = t["cpu"]
        lines += [
            "",
            f"CPU, {t['coordinators']} coordinator(s) + {t['workers']} worker(s), "
            f"{cpu['wall_s']} s × {m['cores']} cores = {cpu['capacity_cpu_s']} CPU s; "
            f"machine busy {cpu['machine_busy_share']:.0%}, this run {cpu['this_run_share']:.0%}:",
            "",
            "| process | CPU s | share of the machine |",
            "| --- | ---: | ---: |",
            *(
                f"| {name} | {row['cpu_s']} | {row['share']:.1%} |"
                for name, row in cpu["by_process"].items()
            ),
        ]
    lines += [
        "",
        "| lease ttl | signal | victim's shards | all leased again after | "
        "longest gap before / after | victim's shards' first completion after | ok |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for t in (t for t in result["takeover"] if "error" not in t):
        lines.append(
            f"| {t['lease_ttl_s']:g} s | {t['signal']} | {t['victim_shards']} | "
            f"{t['all_moved_after_s']} s | {t['longest_gap_before_s']} / "
            f"{t['longest_gap_after_s']} s | {t['victim_shards_first_completion_after_s']} s | "
            f"{'yes' if t['ok'] and not t['integrity']['odd_histories'] else 'NO'} |"
        )
    lines += ["", *(f"- failed: {t}" for t in failed)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_service_arguments(parser)
    parser.add_argument("--workflows", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--coordinators", default="1,2,3", help="comma-separated K values")
    parser.add_argument("--workers", default="1", help="comma-separated W values")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the throughput runs")
    parser.add_argument("--rounds", type=int, default=500, help="baseline round trips (0: skip)")
    parser.add_argument("--takeover-ttl", default="3,10", help="lease times to try (empty: none)")
    parser.add_argument("--takeover-mode", default="kill,stop", help="kill, stop or both")
    parser.add_argument("--takeover-workers", type=int, default=1)
    parser.add_argument("--kill-after", type=float, default=8.0, help="seconds into the run")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a saga may take")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    _save(result, args.out)
    print(markdown(result))


if __name__ == "__main__":
    main()
