"""Distributed throughput and latency: saga on PostgreSQL + RabbitMQ, real processes.

    .venv/bin/python -m benchmarks.distributed [--workflows 1000] [--concurrency 50]

What it does, on a scratch PostgreSQL database and RabbitMQ vhost it creates and drops:

1. measures the raw limits (:mod:`benchmarks.baseline`): one PostgreSQL commit and one
   RabbitMQ publish-with-confirm round trip;
2. runs ``saga bench --scenario trip-booking`` (a 3-activity saga) with a coordinator
   and a worker process it spawns: ``--workflows`` sagas from ``--concurrency``
   closed-loop clients — workflows/s and end-to-end latency (start to result);
3. runs it again at concurrency 1 with ``--activity-time`` of simulated work per step:
   the per-step overhead is (latency − 3 × activity time) / 3.

It prints a Markdown summary (with the machine, the command and the date) and writes
everything as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from benchmarks.baseline import asyncpg_dsn, measure
from saga.bench import BenchConfig, run_bench
from saga.bench.report import BenchReport

STEPS = 3


def _rabbitmqctl(*args: str) -> str:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    done = subprocess.run([ctl, "-q", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def _admin(url: str, statement: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if statement.startswith("DROP DATABASE"):
            name = statement.split('"')[1]
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        if statement.startswith("SHOW"):
            return str(await conn.fetchval(statement))
        await conn.execute(statement)
        return ""
    finally:
        await conn.close()


def _figures(report: BenchReport, activity_time: float) -> dict[str, Any]:
    lat = report.latency_ms
    return {
        "sagas": report.started,
        "by_status": report.by_status,
        "ok": report.ok,
        "seconds": round(report.duration_s, 2),
        "workflows_per_s": round(report.workflows_per_s, 1),
        "steps_per_s": round(report.steps_per_s, 1),
        "latency_ms": {k: round(v, 1) for k, v in lat.model_dump().items()},
        "per_step_overhead_ms": {
            "p50": round(max(0.0, lat.p50 / STEPS - activity_time * 1000), 1),
            "mean": round(max(0.0, lat.mean / STEPS - activity_time * 1000), 1),
        },
    }


@contextlib.asynccontextmanager
async def scratch(
    admin_db: str, broker: str, prefix: str = "bench"
) -> AsyncIterator[tuple[str, str]]:
    """A scratch database ``saga_<prefix>_…`` and vhost ``saga-<prefix>-…``: their URLs.

    Both are dropped on the way out, whatever happened inside (a failed run included).
    """
    name = f"saga_{prefix}_{secrets.token_hex(4)}"
    vhost = f"saga-{prefix}-{secrets.token_hex(4)}"
    user = urlsplit(broker).username or "guest"
    await _admin(admin_db, f'CREATE DATABASE "{name}"')
    try:
        _rabbitmqctl("add_vhost", vhost)
        try:
            _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            yield _with_database(admin_db, name), _with_vhost(broker, vhost)
        finally:
            _rabbitmqctl("delete_vhost", vhost)
    finally:
        await _admin(admin_db, f'DROP DATABASE IF EXISTS "{name}"')


async def machine(admin_db: str) -> dict[str, Any]:
    """The CPU, the system and the versions of Python, PostgreSQL and RabbitMQ."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": await _admin(admin_db, "SHOW server_version"),
        "rabbitmq": _rabbitmqctl("version"),
    }


def command(module: str) -> str:
    """How this script was run, for the record."""
    return shlex.join([Path(sys.executable).name, "-m", module, *sys.argv[1:]])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with scratch(args.admin_db, args.broker) as (db, broker):
        load_before = os.getloadavg()
        baseline = await measure(db, broker, args.rounds)
        loaded = await run_bench(
            BenchConfig(
                scenario="trip-booking",
                workflows=args.workflows,
                concurrency=args.concurrency,
                database_url=db,
                broker_url=broker,
                timeout=args.timeout,
            ),
            show_progress=False,
        )
        serial = await run_bench(
            BenchConfig(
                scenario="trip-booking",
                workflows=args.serial,
                concurrency=1,
                activity_time=args.activity_time,
                database_url=db,
                broker_url=broker,
                timeout=args.timeout,
                seed=2,
            ),
            show_progress=False,
        )
        load_after = os.getloadavg()
        described = await machine(args.admin_db)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command("benchmarks.distributed"),
        "machine": {
            **described,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "baseline": baseline,
        f"concurrency_{args.concurrency}": _figures(loaded, 0.0),
        "concurrency_1": {
            **_figures(serial, args.activity_time),
            "activity_time_ms": args.activity_time * 1000,
        },
    }


def markdown(result: dict[str, Any], concurrency: int) -> str:
    m, b = result["machine"], result["baseline"]
    loaded, serial = result[f"concurrency_{concurrency}"], result["concurrency_1"]
    pg, mq = b["postgres_commit"], b["rabbitmq_publish_confirm"]
    lines = [
        f"- date: {result['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['system']}; Python {m['python']}, "
        f"PostgreSQL {m['postgresql']}, RabbitMQ {m['rabbitmq']}; load average "
        f"{m['load_average_before'][0]} before, {m['load_average_after'][0]} after",
        f"- command: `{result['command']}`",
        "",
        "| measurement | p50 ms | p99 ms | rate |",
        "| --- | ---: | ---: | ---: |",
        f"| PostgreSQL commit (insert + commit, one connection) | {pg['p50_ms']:.1f} | "
        f"{pg['p99_ms']:.1f} | {pg['per_s']:.0f}/s |",
        f"| RabbitMQ publish with confirm (persistent, durable queue) | {mq['p50_ms']:.1f} | "
        f"{mq['p99_ms']:.1f} | {mq['per_s']:.0f}/s |",
        f"| trip booking, {loaded['sagas']} sagas at concurrency {concurrency}: end to end | "
        f"{loaded['latency_ms']['p50']:.0f} | {loaded['latency_ms']['p99']:.0f} | "
        f"{loaded['workflows_per_s']:.1f} sagas/s ({loaded['steps_per_s']:.0f} steps/s) |",
        f"| trip booking, {serial['sagas']} sagas at concurrency 1: end to end "
        f"({serial['activity_time_ms']:g} ms of work per step) | "
        f"{serial['latency_ms']['p50']:.0f} | {serial['latency_ms']['p99']:.0f} | "
        f"{serial['workflows_per_s']:.1f} sagas/s |",
        f"| per-step overhead at concurrency 1 ((latency − work) / 3) | "
        f"{serial['per_step_overhead_ms']['p50']:.1f} | | mean "
        f"{serial['per_step_overhead_ms']['mean']:.1f} ms |",
    ]
    return "\n".join(lines)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """``--admin-db`` and ``--broker``: the servers the scratch database and vhost go on."""
    parser.add_argument(
        "--admin-db",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL allowed to create databases",
    )
    parser.add_argument(
        "--broker",
        default="amqp://guest:guest@127.0.0.1:5672/",
        help="the RabbitMQ server (scratch vhosts are made on it)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_service_arguments(parser)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--serial", type=int, default=200, help="sagas at concurrency 1")
    parser.add_argument(
        "--activity-time",
        type=float,
        default=0.01,
        help="seconds of simulated work per step at concurrency 1",
    )
    parser.add_argument("--rounds", type=int, default=1000, help="baseline round trips")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a saga may take")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result, args.concurrency))


if __name__ == "__main__":
    main()
