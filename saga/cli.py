"""The ``saga`` command: daemons, operator commands and the embedded demo.

Exit codes: 0 success, 1 the operation failed, 2 bad usage; the reason is one line on
stderr, never a traceback (``--log-level debug`` logs it too). ``--json`` output uses
the field names of the Python objects (``WorkflowDescription``, ``HistoryEvent``…).

The daemons (``coordinator``, ``worker``) log to stderr, as text or JSON lines
(``--log-format``), say ``saga <name> ready (pid N)`` once serving, and stop gracefully
on SIGTERM or SIGINT: the worker lets running activities finish for ``--drain-timeout``
seconds and hands the rest back to the broker; the coordinator commits the batch in hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.text import Text

from saga import tracing
from saga.activity import definition_of as activity_definition
from saga.activity import is_activity
from saga.client import Client, WorkflowDescription
from saga.config import Settings
from saga.errors import SagaError, StoreError, WorkflowFailureError, WorkflowNotFoundError
from saga.history import WorkflowStatus, history_from_json, history_to_json
from saga.logs import configure_logging
from saga.store.base import open_store
from saga.transports.memory import MemoryTransport

log = logging.getLogger("saga.cli")
daemon_log = logging.getLogger("saga.daemon")  # lifecycle lines: shown at any --log-level

_STATUS_STYLE = {
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "COMPENSATED": "yellow",
    "FAILED": "red",
    "COMPENSATION_FAILED": "bold red",
    "CANCELLED": "magenta",
    "TERMINATED": "magenta",
    "TIMED_OUT": "red",
}


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
            bound = callable(getattr(value, "__self__", None))
            if (
                hasattr(value, "__saga_workflow__")
                and not bound
                and (isinstance(value, type) or asyncio.iscoroutinefunction(value))
            ):
                workflows[id(value)] = value
            if is_activity(value):
                activities[id(value)] = value
    return list(workflows.values()), list(activities.values())


def _print_json(data: Any) -> None:
    print(json.dumps(to_jsonable_python(data), indent=2, default=str))


def _console() -> Console:
    """Rich output; wide enough to stay readable when piped (no terminal: no width)."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=160)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _hint(exc: SagaError) -> str:
    text = str(exc)
    missing_table = "relation" in text and "does not exist" in text or "no such table" in text
    if isinstance(exc, StoreError) and missing_table:
        return " (has `saga db upgrade` been run on this database?)"
    return ""


def _as_dict(desc: WorkflowDescription) -> dict[str, Any]:
    data = dataclasses.asdict(desc)
    data["status"] = desc.status.value
    data["compensations"] = [dataclasses.asdict(s) for s in desc.compensations]
    return data


async def _client(args: argparse.Namespace, *, needs_broker: bool) -> Client:
    settings = Settings.resolve(database_url=args.db, broker_url=args.broker)
    if needs_broker:
        return await Client.connect(
            database_url=settings.database_url, broker_url=settings.broker_url
        )
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
    """``saga start``: start a workflow by type name; print its id, or wait for its result."""
    inputs = _parse_input(args.input)
    signal_args = _parse_input(args.signal_input)
    if args.signal_input is not None and args.signal is None:
        raise UsageError("--signal-input needs --signal NAME")
    if args.signal is not None and args.id is None:
        raise UsageError("--signal (signal-with-start) needs --id")
    async with await _client(args, needs_broker=True) as client:
        handle = await client.start_workflow(
            args.type,
            *inputs,
            id=args.id,
            start_signal=args.signal,
            start_signal_args=signal_args,
        )
        if args.wait:
            return await _print_result(client, handle.id, args.json, args.timeout)
    if args.json:
        _print_json({"id": handle.id, "run_id": handle.run_id})
    else:
        print(handle.id)
    return 0


async def _print_result(
    client: Client, workflow_id: str, as_json: bool, wait_seconds: float | None
) -> int:
    """Wait for the outcome; print the result (0) or say how the workflow ended (1)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        result = await handle.result(timeout=wait_seconds)
    except WorkflowFailureError as exc:
        if as_json:
            rec = await client.store.get_workflow(workflow_id)
            error = rec.error if rec is not None else None
            _print_json({"id": workflow_id, "status": exc.status, "result": None, "error": error})
        raise
    except TimeoutError:
        raise SagaError(
            f"workflow {workflow_id!r} is still running after {wait_seconds:g}s"
        ) from None
    if as_json:
        _print_json({"id": workflow_id, "status": "COMPLETED", "result": result, "error": None})
    else:
        print(json.dumps(to_jsonable_python(result)))
    return 0


async def cmd_result(args: argparse.Namespace) -> int:
    """``saga result``: wait for a workflow to end; its result, or how it failed."""
    async with await _client(args, needs_broker=False) as client:
        return await _print_result(client, args.id, args.json, args.timeout)


async def cmd_list(args: argparse.Namespace) -> int:
    """``saga list``: workflows newest first, filtered by status and type."""
    from rich.table import Table

    async with await _client(args, needs_broker=False) as client:
        rows: list[WorkflowDescription] = []
        async for d in client.list_workflows(
            status=args.status, type=args.type, page_size=min(args.limit, 500)
        ):
            rows.append(d)
            if len(rows) >= args.limit:
                break
    if args.json:
        _print_json([_as_dict(d) for d in rows])
        return 0
    table = Table(
        "ID",
        "TYPE",
        "STATUS",
        "STARTED (UTC)",
        "CLOSED (UTC)",
        "EVENTS",
        box=None,
        header_style="bold",
    )
    for d in rows:
        table.add_row(
            Text(d.id, overflow="fold"),
            d.type,
            Text(d.status.value, style=_STATUS_STYLE.get(d.status.value, "")),
            f"{d.start_time:%Y-%m-%d %H:%M:%S}",
            f"{d.close_time:%Y-%m-%d %H:%M:%S}" if d.close_time else "",
            str(d.history_length),
        )
    console = _console()
    console.print(table)
    if not rows:
        console.print("no workflows match")
    return 0


async def cmd_describe(args: argparse.Namespace) -> int:
    """``saga describe``: status, every step and compensation with attempts and timings."""
    async with await _client(args, needs_broker=False) as client:
        desc = await client.get_workflow_handle(args.id).describe()
    if args.json:
        _print_json(_as_dict(desc))
    else:
        from saga.timeline import print_timeline

        print_timeline(desc, _console())
    return 0


async def cmd_history(args: argparse.Namespace) -> int:
    """``saga history``: the events; with ``--json`` the export ``saga replay`` reads."""
    async with await _client(args, needs_broker=False) as client:
        events = await client.get_workflow_handle(args.id).history()
    if args.json:
        _print_json(history_to_json(args.id, events))
        return 0
    from rich.table import Table

    table = Table("#", "TIME (UTC)", "EVENT", "DETAILS", box=None, header_style="bold")
    for e in events:
        attrs = _without_stacks(e.attributes.model_dump(mode="json", exclude_defaults=True))
        details = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in attrs.items())
        table.add_row(
            str(e.event_id),
            f"{e.timestamp:%H:%M:%S.%f}"[:-3],
            e.type,
            Text(details, overflow="fold"),
        )
    _console().print(table)
    return 0


def _without_stacks(value: Any) -> Any:
    """Attributes without stack traces (``saga history --json`` keeps them)."""
    if isinstance(value, dict):
        return {k: _without_stacks(v) for k, v in value.items() if k != "stack_trace"}
    if isinstance(value, list):
        return [_without_stacks(v) for v in value]
    return value


_STEER_WORDS = {"signal": "signal", "cancel": "cancellation", "terminate": "termination"}


def _steer(
    action: Callable[..., Awaitable[None]],
) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def run(args: argparse.Namespace) -> int:
        async with await _client(args, needs_broker=True) as client:
            rec = await client.store.get_workflow(args.id)
            if rec is None:
                raise WorkflowNotFoundError(args.id)
            if rec.status.is_closed:
                raise SagaError(
                    f"cannot {args.command} workflow {args.id!r}: "
                    f"it already ended {rec.status.value}"
                )
            await action(client.get_workflow_handle(args.id), args)
        if args.json:
            _print_json({"id": args.id, "run_id": rec.run_id, "requested": args.command})
        else:
            print(f"{_STEER_WORDS[args.command]} of {args.id} recorded; the coordinator applies it")
        return 0

    return run


async def cmd_query(args: argparse.Namespace) -> int:
    """``saga query``: ask a running coordinator a workflow's ``@workflow.query``."""
    inputs = _parse_input(args.input)
    async with await _client(args, needs_broker=True) as client:
        handle = client.get_workflow_handle(args.id)
        result = await handle.query(args.name, *inputs, timeout=args.timeout)
    if args.json:
        _print_json({"id": args.id, "query": args.name, "result": result})
    else:
        print(json.dumps(to_jsonable_python(result)))
    return 0


async def _signal(handle: Any, args: argparse.Namespace) -> None:
    await handle.signal(args.name, *_parse_input(args.input))


async def _cancel(handle: Any, args: argparse.Namespace) -> None:
    await handle.cancel(args.reason or "")


async def _terminate(handle: Any, args: argparse.Namespace) -> None:
    await handle.terminate(args.reason)


async def cmd_replay(args: argparse.Namespace) -> int:
    """``saga replay``: run a history export through the current code; 1 if it diverges."""
    from saga.replay import replay_history

    workflows, _ = load_app(args.app)
    try:
        data = json.loads(await asyncio.to_thread(Path(args.history).read_text))
        workflow_id, events = history_from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SagaError(f"cannot read history {args.history}: {reason}") from exc
    try:
        replay_history(workflows, workflow_id, events)
    except ValueError as exc:
        raise SagaError(f"cannot replay {args.history}: {exc}") from exc
    if args.json:
        _print_json({"workflow_id": workflow_id, "events": len(events), "deterministic": True})
    else:
        print(f"replayed {len(events)} events of {workflow_id}: deterministic")
    return 0


async def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """``saga db upgrade``: bring the schema to the newest revision."""
    store = open_store(Settings.resolve(database_url=args.db).database_url)
    await store.connect()
    try:
        await store.migrate()
        if args.shard_count is not None:
            await store.set_shard_count(args.shard_count)
        shards = await store.shard_count()
    finally:
        await store.aclose()
    if args.json:
        _print_json({"database": _safe_url(store.url), "schema": "up to date", "shards": shards})
    else:
        print(f"database schema of {_safe_url(store.url)} is up to date ({shards} shards)")
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    """``saga status``: who owns which shard, outbox backlog; exit 1 unless healthy."""
    from saga.status import cluster_status, render_status

    store = open_store(Settings.resolve(database_url=args.db).database_url)
    await store.connect()
    try:
        status = await cluster_status(store)
    finally:
        await store.aclose()
    if args.json:
        _print_json(status.model_dump(mode="json"))
    else:
        render_status(status, Console())
    return 0 if status.healthy else 1


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# --- daemons ------------------------------------------------------------------------------
async def _serve(
    name: str,
    start: Callable[[], Coroutine[Any, Any, Any]],
    stop: Callable[[], Awaitable[Any]],
    details: dict[str, Any] | None = None,
) -> int:
    """Start a daemon, announce it, and stop it gracefully on SIGTERM or SIGINT.

    Start-up errors (after the bounded connection retries) end the process with code 1
    and their one-line reason; a signal arriving before we are ready ends it with 0.
    Start-up is quiet unless ``--log-level debug``: its retries would only repeat what
    that one line says.
    """
    root = logging.getLogger()
    configured = root.level
    if configured > logging.DEBUG:
        root.setLevel(max(configured, logging.WARNING))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():
            daemon_log.info("%s again: already stopping", sig.name)
            return
        daemon_log.info("%s received: stopping", sig.name, extra={"pid": os.getpid()})
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    starting = asyncio.create_task(start())
    interrupted = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({starting, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        if starting.cancelled():
            return 0
        starting.result()  # a start-up error: raise it, after the clean-up below
        root.setLevel(configured)
        daemon_log.info(
            "saga %s ready (pid %d)",
            name,
            os.getpid(),
            extra={"pid": os.getpid(), **(details or {})},
        )
        await interrupted
        return 0
    finally:
        interrupted.cancel()
        try:
            await stop()
        except Exception as exc:  # a failure to close must not hide why we stopped
            daemon_log.warning("error while stopping: %s", _one_line(exc))
        if starting.done() and not starting.cancelled() and starting.exception() is None:
            daemon_log.info("saga %s stopped", name)


async def cmd_coordinator(args: argparse.Namespace) -> int:
    """``saga coordinator``: the daemon that advances the workflows of ``--app``."""
    from saga.coordinator import Coordinator

    workflows, _ = load_app(args.app)
    if not workflows:
        raise SagaError(f"--app {args.app!r} defines no workflow")
    coordinator = Coordinator(
        workflows=workflows,
        database_url=args.db,
        broker_url=args.broker,
        drain_timeout=args.drain_timeout,
        lease_ttl=args.lease_ttl,
        shards=args.shards,
    )
    details = {
        "workflows": sorted(coordinator.definitions),
        "db": _safe_url(coordinator.store.url),
        "broker": _safe_url(Settings.resolve(broker_url=args.broker).broker_url),
    }
    if args.http is None:
        return await _serve("coordinator", coordinator.start, coordinator.aclose, details)
    from saga.http.console import Console as HttpConsole

    # The API shares the coordinator's connections; it starts after and stops before it.
    client = Client(coordinator.store, coordinator.transport, workflows=workflows)
    console = HttpConsole(client=client, http=args.http)

    async def start() -> None:
        await coordinator.start()
        await console.start()
        member = coordinator.ownership.member  # `saga status` says where its console is
        coordinator.ownership.member = dataclasses.replace(member, http=console.url)
        daemon_log.info("HTTP API and console at %s", console.url)

    async def stop() -> None:
        try:
            await console.aclose()
        finally:
            await coordinator.aclose()

    return await _serve("coordinator", start, stop, details)


async def cmd_console(args: argparse.Namespace) -> int:
    """``saga console``: the HTTP API and web console over the database (and broker)."""
    from saga.http.console import Console as HttpConsole

    console = HttpConsole(database_url=args.db, broker_url=args.broker, http=args.http)

    async def start() -> None:
        await console.start()
        daemon_log.info("HTTP API and console at %s", console.url)

    return await _serve("console", start, console.aclose)


async def cmd_worker(args: argparse.Namespace) -> int:
    """``saga worker``: run the activities of ``--app`` from their queues."""
    from saga.worker import Worker

    _, activities = load_app(args.app)
    if not activities:
        raise SagaError(f"--app {args.app!r} defines no activity")
    served = {activity_definition(fn).queue for fn in activities}
    unknown = sorted(set(args.queue or ()) - served)
    if unknown:
        raise UsageError(
            f"--queue {', '.join(unknown)}: no activity of {args.app} uses it "
            f"(its queues: {', '.join(sorted(served))})"
        )
    worker = Worker(
        activities=activities,
        broker_url=args.broker,
        queues=args.queue or None,
        concurrency=args.concurrency,
        drain_timeout=args.drain_timeout,
    )
    details = {
        "queues": worker.queues,
        "concurrency": worker.concurrency,
        "broker": _safe_url(Settings.resolve(broker_url=args.broker).broker_url),
    }
    code = await _serve("worker", worker.start, worker.aclose, details)
    _exit_soon(code, grace=3.0)
    return code


def _exit_soon(code: int, *, grace: float) -> None:
    """End the process ``grace`` seconds from now if an activity thread still holds it.

    Past the drain, the tasks of synchronous activities are back in the queue, but their
    threads cannot be cancelled, and the interpreter would wait for them at exit however
    long they take. A stopping worker does not. (Idle executor threads are gone within
    moments of the event loop's shutdown; only a busy one is still there.)
    """
    main_thread = threading.main_thread()

    def watchdog() -> None:
        time.sleep(grace)
        busy = [t for t in threading.enumerate() if t is not main_thread and not t.daemon]
        if any(t.is_alive() for t in busy):
            daemon_log.warning(
                "activity threads still running after the drain; exiting without them"
            )
            os._exit(code)

    threading.Thread(target=watchdog, name="saga-exit-watchdog", daemon=True).start()


def _rate(text: str) -> tuple[float, float]:
    rate, _, seconds = text.partition(":")
    try:
        return float(rate), float(seconds or "10")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate wants R or R:SECONDS, not {text!r}") from None


async def cmd_bench(args: argparse.Namespace) -> int:
    """``saga bench``: drive load, print the figures, optionally write JSON and HTML."""
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
        await asyncio.to_thread(Path(args.json_file).write_text, report.model_dump_json(indent=2))
    if args.html:
        await asyncio.to_thread(Path(args.html).write_text, render_html(report))
    lat = report.latency_ms
    print(
        f"{report.scenario} ({report.mode}): {report.started} sagas in {report.duration_s:.1f}s, "
        f"{report.workflows_per_s:.1f} sagas/s, {report.steps_per_s:.1f} steps/s; latency ms "
        f"p50 {lat.p50:.1f} p95 {lat.p95:.1f} p99 {lat.p99:.1f} max {lat.max:.1f}; "
        f"by status {report.by_status}"
    )
    problems = [
        ("lost", report.lost),
        ("stuck", report.stuck),
        ("inconsistent", report.inconsistent),
    ]
    for label, ids in problems:
        if ids:
            print(f"saga bench: {len(ids)} {label}: {', '.join(ids[:20])}", file=sys.stderr)
    return 0 if report.ok else 1


async def cmd_demo(args: argparse.Namespace) -> int:
    """``saga demo``: an example, embedded, with its timeline."""
    from saga.demo import run_demo

    return await run_demo(args.example, args.fail)


# --- parsing ------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        self.exit(2, f"saga: error: {message}\n")


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _shard_spec(text: str) -> frozenset[int] | None:
    from saga._runtime.ownership import parse_shards

    if text.strip() == "all":
        return None
    try:
        return parse_shards(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    conn = _Parser(add_help=False)
    conn.add_argument("--db", help="database URL (default: $SAGA_DATABASE_URL)")
    conn.add_argument("--broker", help="broker URL (default: $SAGA_BROKER_URL)")
    conn.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    conn.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: info for the daemons, warning otherwise",
    )
    conn.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines on stderr as text or as JSON objects",
    )
    common = _Parser(add_help=False, parents=[conn])
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = _Parser(prog="saga", description="Durable sagas on PostgreSQL and RabbitMQ.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", parents=[common], help="run an example embedded (no servers)")
    p.add_argument("example", choices=["trip-booking", "money-transfer"])
    p.add_argument("--fail", help="step to fail: car|hotel|flight, or withdraw|deposit")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("coordinator", parents=[common], help="run the coordinator daemon")
    p.add_argument("--app", required=True, help="module(s) defining workflows, comma-separated")
    p.add_argument(
        "--http",
        nargs="?",
        const="127.0.0.1:8088",
        metavar="HOST:PORT",
        help="also serve the HTTP API and web console (default 127.0.0.1:8088)",
    )
    p.add_argument(
        "--drain-timeout",
        type=_non_negative,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, time to commit the batch in hand (default 10)",
    )
    p.add_argument(
        "--lease-ttl",
        type=_positive(float),
        default=10.0,
        metavar="SECONDS",
        help="shard lease time: a dead coordinator's shards move within about this (default 10)",
    )
    p.add_argument(
        "--shards",
        type=_shard_spec,
        metavar="SPEC",
        help="the shards it may own, e.g. 0-31 or 0-15,40 (default: any)",
    )
    p.set_defaults(func=cmd_coordinator, daemon=True)

    p = sub.add_parser("status", parents=[common], help="coordinators, shard owners, health")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("console", parents=[common], help="serve the HTTP API and web console")
    p.add_argument(
        "--http",
        default="127.0.0.1:8088",
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8088; set SAGA_API_TOKEN "
        "before binding beyond loopback)",
    )
    p.set_defaults(func=cmd_console, daemon=True)

    p = sub.add_parser("worker", parents=[common], help="run activities from their queues")
    p.add_argument("--app", required=True, help="module(s) defining activities, comma-separated")
    p.add_argument(
        "--queue",
        action="extend",
        nargs="+",
        metavar="QUEUE",
        help="only these queues (--queue a b, or --queue a --queue b)",
    )
    p.add_argument("--concurrency", type=_positive(int), default=100, help="activities at once")
    p.add_argument(
        "--drain-timeout",
        type=_non_negative,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, time running activities get to finish before their "
        "tasks go back to the queue (default 30)",
    )
    p.set_defaults(func=cmd_worker, daemon=True)

    p = sub.add_parser("start", parents=[common], help="start a workflow")
    p.add_argument("type")
    p.add_argument("--input", help="JSON argument (a list for several arguments)")
    p.add_argument("--id")
    p.add_argument("--wait", action="store_true", help="wait for the result")
    p.add_argument(
        "--timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="with --wait: give up waiting after this long (exit 1)",
    )
    p.add_argument(
        "--signal",
        metavar="NAME",
        help="signal-with-start: send this signal, starting the workflow if --id is not running",
    )
    p.add_argument("--signal-input", metavar="JSON", help="the signal's JSON argument(s)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("list", parents=[common], help="list workflows, newest first")
    p.add_argument("--status", choices=[s.value for s in WorkflowStatus])
    p.add_argument("--type")
    p.add_argument("--limit", type=_positive(int), default=100)
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("describe", cmd_describe, "status, steps and compensations"),
        ("history", cmd_history, "history events (--json: the replayable export)"),
        ("result", cmd_result, "wait for the workflow to end; print its result"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        if name == "result":
            p.add_argument(
                "--timeout",
                type=_positive(float),
                metavar="SECONDS",
                help="give up waiting after this long (exit 1)",
            )
        p.set_defaults(func=func)

    p = sub.add_parser("signal", parents=[common], help="send a signal")
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--input", help="JSON argument (a list for several arguments)")
    p.set_defaults(func=_steer(_signal))
    p = sub.add_parser(
        "query", parents=[common], help="ask a query handler (a running coordinator answers)"
    )
    p.add_argument("id")
    p.add_argument("name")
    p.add_argument("--input", help="JSON argument (a list for several arguments)")
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=10.0,
        metavar="SECONDS",
        help="give up when no coordinator answers in time (exit 1; default 10)",
    )
    p.set_defaults(func=cmd_query)
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

    from saga._explore.command import add_parser as add_explore_parser

    add_explore_parser(sub, parents=[common])

    p = sub.add_parser("bench", parents=[conn], help="load test (embedded by default)")
    p.add_argument(
        "--scenario",
        default="trip-booking",
        choices=["noop", "trip-booking", "money-transfer", "timers"],
    )
    p.add_argument("--workflows", type=int, default=1000)
    p.add_argument("--duration", type=float, help="seconds to keep starting sagas")
    p.add_argument("--concurrency", type=int, default=50, help="closed-loop clients")
    p.add_argument(
        "--rate",
        type=_rate,
        action="append",
        help="open loop: R sagas/s for SECONDS (R[:SECONDS], repeat for phases)",
    )
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
    p.add_argument(
        "--shard-count",
        type=_positive(int),
        metavar="N",
        help="shards of a new database (default 64; fixed once it holds workflows)",
    )
    p.set_defaults(func=cmd_db_upgrade)
    return parser


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed: less Python per message and per system call.

    ``SAGA_EVENT_LOOP=asyncio`` asks for the standard loop instead.
    """
    if os.environ.get("SAGA_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``saga`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.workflows_given = "--workflows" in argv
    daemon = getattr(args, "daemon", False)
    level = "debug" if args.verbose else args.log_level or ("info" if daemon else "warning")
    configure_logging(level=level, fmt=args.log_format)
    if daemon:
        daemon_log.setLevel(logging.INFO)
    exporting = tracing.configure_from_env(f"saga-{args.command}")
    try:
        code = run_async(args.func(args))
    except UsageError as exc:
        print(f"saga: error: {_one_line(exc)}", file=sys.stderr)
        code = 2
    except SagaError as exc:
        log.debug("failed", exc_info=True)
        print(f"saga: {_one_line(exc)}{_hint(exc)}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`saga list | head`): not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as exc:  # a bug, or an error nobody wrapped: still one line
        log.debug("unexpected error", exc_info=True)
        print(
            f"saga: unexpected {type(exc).__name__}: {_one_line(exc)} "
            f"(--log-level debug shows the traceback)",
            file=sys.stderr,
        )
        code = 1
    if exporting:
        tracing.shutdown()  # flush spans before the process ends
    sys.exit(code)
