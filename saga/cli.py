"""The ``saga`` command: daemons, operator commands and the embedded demo.

Exit codes: 0 success, 1 the operation failed, 2 bad usage; the reason is one line on
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from saga.activity import is_activity
from saga.client import Client, WorkflowDescription
from saga.config import Settings
from saga.errors import SagaError, WorkflowFailureError
from saga.history import WorkflowStatus, history_from_json, history_to_json
from saga.store.base import open_store
from saga.transports.memory import MemoryTransport

log = logging.getLogger("saga.cli")


class UsageError(Exception):
    """Bad command-line usage: exit 2."""


def load_app(spec: str) -> tuple[list[Any], list[Any]]:
    """Import comma-separated modules; return the workflows and activities they define."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn/celery: --app is relative to here
    workflows: dict[int, Any] = {}
    activities: dict[int, Any] = {}
    for name in filter(None, (s.strip() for s in spec.split(","))):
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise SagaError(f"cannot import --app module {name!r}: {exc}") from exc
        for value in vars(module).values():
            if hasattr(value, "__saga_workflow__") and not callable(getattr(value, "__self__", None)):
                if isinstance(value, type) or asyncio.iscoroutinefunction(value):
                    workflows[id(value)] = value
            if is_activity(value):
                activities[id(value)] = value
    return list(workflows.values()), list(activities.values())


def _print_json(data: Any) -> None:
    print(json.dumps(to_jsonable_python(data), indent=2, default=str))


def _as_dict(desc: WorkflowDescription) -> dict[str, Any]:
    data = dataclasses.asdict(desc)
    data["status"] = desc.status.value
    return data


async def _client(args: argparse.Namespace, *, needs_broker: bool) -> Client:
    settings = Settings.resolve(database_url=args.db, broker_url=args.broker)
    if needs_broker:
        return await Client.connect(database_url=settings.database_url, broker_url=settings.broker_url)
    store = open_store(settings.database_url)
    await store.connect()
    return Client(store, MemoryTransport(), owns_connections=True)


def _parse_input(text: str | None) -> list[Any]:
    if text is None:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from exc
    return value if isinstance(value, list) else [value]


# --- commands ---------------------------------------------------------------------------
async def cmd_start(args: argparse.Namespace) -> int:
    client = await _client(args, needs_broker=True)
    async with client:
        handle = await client.start_workflow(args.type, *_parse_input(args.input), id=args.id)
        if not args.wait:
            _print_json({"id": handle.id, "run_id": handle.run_id}) if args.json else print(handle.id)
            return 0
        return await _print_result(client, handle.id, args.json)


async def _print_result(client: Client, workflow_id: str, as_json: bool) -> int:
    try:
        result = await client.get_workflow_handle(workflow_id).result()
    except WorkflowFailureError as exc:
        if as_json:
            _print_json({"id": workflow_id, "status": exc.status, "error": str(exc.cause)})
        else:
            print(f"{exc.status}: {exc.cause}", file=sys.stderr)
        return 1
    _print_json(result) if as_json else print(json.dumps(to_jsonable_python(result)))
    return 0


async def cmd_result(args: argparse.Namespace) -> int:
    async with await _client(args, needs_broker=False) as client:
        return await _print_result(client, args.id, True)


async def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    async with await _client(args, needs_broker=False) as client:
        rows = [
            d
            async for d in client.list_workflows(status=args.status, type=args.type)
        ][: args.limit]
    if args.json:
        _print_json([_as_dict(d) for d in rows])
        return 0
    table = Table("ID", "TYPE", "STATUS", "STARTED", "CLOSED")
    for d in rows:
        table.add_row(d.id, d.type, d.status.value, f"{d.start_time:%Y-%m-%d %H:%M:%S}",
                      f"{d.close_time:%H:%M:%S}" if d.close_time else "")
    Console().print(table)
    return 0


async def cmd_describe(args: argparse.Namespace) -> int:
    async with await _client(args, needs_broker=False) as client:
        desc = await client.get_workflow_handle(args.id).describe()
    if args.json:
        _print_json(_as_dict(desc))
    else:
        from saga.timeline import print_timeline

        print_timeline(desc)
    return 0


async def cmd_history(args: argparse.Namespace) -> int:
    async with await _client(args, needs_broker=False) as client:
        events = await client.get_workflow_handle(args.id).history()
    if args.json:
        _print_json(history_to_json(args.id, events))
    else:
        for e in events:
            attrs = e.attributes.model_dump(mode="json", exclude_defaults=True)
            print(f"{e.event_id:>5}  {e.timestamp:%H:%M:%S.%f}  {e.type:<24} {json.dumps(attrs)}")
    return 0


def _steer(action: Callable[..., Awaitable[None]]) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def run(args: argparse.Namespace) -> int:
        async with await _client(args, needs_broker=True) as client:
            await action(client.get_workflow_handle(args.id), args)
        return 0

    return run


async def _signal(handle: Any, args: argparse.Namespace) -> None:
    await handle.signal(args.name, *_parse_input(args.input))


async def _cancel(handle: Any, args: argparse.Namespace) -> None:
    await handle.cancel(args.reason or "")


async def _terminate(handle: Any, args: argparse.Namespace) -> None:
    await handle.terminate(args.reason)


async def cmd_replay(args: argparse.Namespace) -> int:
    from saga.replay import replay_history

    workflows, _ = load_app(args.app)
    try:
        data = json.loads(Path(args.history).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SagaError(f"cannot read history {args.history}: {exc}") from exc
    workflow_id, events = history_from_json(data)
    replay_history(workflows, workflow_id, events)
    print(f"replayed {len(events)} events of {workflow_id}: deterministic")
    return 0


async def cmd_db_upgrade(args: argparse.Namespace) -> int:
    store = open_store(Settings.resolve(database_url=args.db).database_url)
    await store.connect()
    try:
        await store.migrate()
    finally:
        await store.aclose()
    print("database schema is up to date")
    return 0


async def _serve(
    name: str, start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]
) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await start()
    print(f"saga {name} ready (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        await stopping.wait()
    finally:
        await stop()
    return 0


async def cmd_coordinator(args: argparse.Namespace) -> int:
    from saga.coordinator import Coordinator

    workflows, _ = load_app(args.app)
    if not workflows:
        raise SagaError(f"--app {args.app!r} defines no workflow")
    coordinator = Coordinator(workflows=workflows, database_url=args.db, broker_url=args.broker)
    return await _serve("coordinator", coordinator.start, coordinator.aclose)


async def cmd_worker(args: argparse.Namespace) -> int:
    from saga.worker import Worker

    _, activities = load_app(args.app)
    if not activities:
        raise SagaError(f"--app {args.app!r} defines no activity")
    worker = Worker(activities=activities, broker_url=args.broker, queues=args.queue or None,
                    concurrency=args.concurrency)
    return await _serve("worker", worker.start, worker.aclose)


def _rate(text: str) -> tuple[float, float]:
    rate, _, seconds = text.partition(":")
    try:
        return float(rate), float(seconds or "10")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate wants R or R:SECONDS, not {text!r}") from None


async def cmd_bench(args: argparse.Namespace) -> int:
    from saga.bench import BenchConfig, run_bench
    from saga.bench.report import render_html

    cfg = BenchConfig(
        scenario=args.scenario,
        workflows=args.workflows if args.duration is None or args.workflows_given else None,
        duration=args.duration,
        concurrency=args.concurrency,
        rates=args.rate or [],
        failure_rate=args.failure_rate,
        activity_time=args.activity_time,
        payload_bytes=args.payload_bytes,
        database_url=args.db,
        broker_url=args.broker,
        coordinators=args.coordinators,
        workers=args.workers,
        external=args.external,
        timeout=args.timeout,
    )
    report = await run_bench(cfg, show_progress=not args.quiet)
    if args.json_file:
        Path(args.json_file).write_text(report.model_dump_json(indent=2))
    if args.html:
        Path(args.html).write_text(render_html(report))
    lat = report.latency_ms
    print(
        f"{report.scenario} ({report.mode}): {report.started} sagas in {report.duration_s:.1f}s, "
        f"{report.workflows_per_s:.1f} sagas/s, {report.steps_per_s:.1f} steps/s; latency ms "
        f"p50 {lat.p50:.1f} p95 {lat.p95:.1f} p99 {lat.p99:.1f} max {lat.max:.1f}; "
        f"by status {report.by_status}"
    )
    problems = [("lost", report.lost), ("stuck", report.stuck),
                ("inconsistent", report.inconsistent)]
    for label, ids in problems:
        if ids:
            print(f"saga bench: {len(ids)} {label}: {', '.join(ids[:20])}", file=sys.stderr)
    return 0 if report.ok else 1


async def cmd_demo(args: argparse.Namespace) -> int:
    from saga.demo import run_demo

    return await run_demo(args.example, args.fail)


# --- parsing ------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        self.exit(2, f"saga: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--db", help="database URL (default: $SAGA_DATABASE_URL)")
    conn.add_argument("--broker", help="broker URL (default: $SAGA_BROKER_URL)")
    conn.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = argparse.ArgumentParser(add_help=False, parents=[conn])
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = _Parser(prog="saga", description="Durable sagas on PostgreSQL and RabbitMQ.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", parents=[common], help="run an example embedded (no servers)")
    p.add_argument("example", choices=["trip-booking", "money-transfer"])
    p.add_argument("--fail", help="step to fail: car|hotel|flight, or withdraw|deposit")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("coordinator", parents=[common], help="run the coordinator daemon")
    p.add_argument("--app", required=True, help="module(s) defining workflows, comma-separated")
    p.add_argument("--http", help="serve the HTTP API on HOST:PORT")
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("worker", parents=[common], help="run activities from their queues")
    p.add_argument("--app", required=True, help="module defining activities")
    p.add_argument("--queue", action="append", help="only these queues (repeatable)")
    p.add_argument("--concurrency", type=int, default=100, help="activities at once")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("start", parents=[common], help="start a workflow")
    p.add_argument("type")
    p.add_argument("--input", help="JSON argument (a list for several arguments)")
    p.add_argument("--id")
    p.add_argument("--wait", action="store_true", help="wait for the result")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("list", parents=[common], help="list workflows")
    p.add_argument("--status", choices=[s.value for s in WorkflowStatus])
    p.add_argument("--type")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("describe", cmd_describe, "status, steps and compensations"),
        ("history", cmd_history, "history events (--json: the replayable export)"),
        ("result", cmd_result, "wait for and print the result"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.set_defaults(func=func)

    p = sub.add_parser("signal", parents=[common], help="send a signal")
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--input", help="JSON argument (a list for several arguments)")
    p.set_defaults(func=_steer(_signal))
    p = sub.add_parser("cancel", parents=[common], help="cancel (compensations still run)")
    p.add_argument("id")
    p.add_argument("--reason")
    p.set_defaults(func=_steer(_cancel))
    p = sub.add_parser("terminate", parents=[common], help="end now, running no more code")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_steer(_terminate))

    p = sub.add_parser("replay", parents=[common], help="check a history against current code")
    p.add_argument("--app", required=True)
    p.add_argument("history")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("bench", parents=[conn], help="load test (embedded by default)")
    p.add_argument("--scenario", default="trip-booking",
                   choices=["noop", "trip-booking", "money-transfer", "timers"])
    p.add_argument("--workflows", type=int, default=1000)
    p.add_argument("--duration", type=float, help="seconds to keep starting sagas")
    p.add_argument("--concurrency", type=int, default=50, help="closed-loop clients")
    p.add_argument("--rate", type=_rate, action="append",
                   help="open loop: R sagas/s for SECONDS (R[:SECONDS], repeat for phases)")
    p.add_argument("--failure-rate", type=float, default=0.0, help="share whose last step fails")
    p.add_argument("--activity-time", type=float, default=0.0, help="simulated work, seconds")
    p.add_argument("--payload-bytes", type=int, default=0)
    p.add_argument("--coordinators", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--external", action="store_true", help="drive daemons already running")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a saga may take")
    p.add_argument("--json", dest="json_file", metavar="FILE", help="write the report as JSON")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("db", parents=[common], help="database schema")
    p.add_argument("action", choices=["upgrade"])
    p.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``saga`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.workflows_given = "--workflows" in argv
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code = asyncio.run(args.func(args))
    except UsageError as exc:
        print(f"saga: error: {exc}", file=sys.stderr)
        code = 2
    except SagaError as exc:
        print(f"saga: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
