"""Real ``saga`` processes for the distributed e2e tests: daemons, CLI calls, clean-up.

A :class:`Cluster` belongs to one test. It has a PostgreSQL database of its own (created
on the run's server, dropped afterwards), task queues of its own on the run's RabbitMQ
vhost (``<prefix>-cars`` etc., deleted afterwards), and a folder where the daemons'
logs and the activities' call records (``calls.jsonl``) live. Every process is
``python -m saga …`` with ``--db`` and ``--broker``; tests wait for what a process
says or writes, with deadlines, never for a fixed time.

Several coordinators may run at once (each with its own arguments, environment and
``--app``); :meth:`Cluster.status` reads ``saga status --json`` (who owns which shard),
and the readers below give histories, statuses and, for :mod:`tests.e2e.apps.bank`,
the ledger its activities write into the cluster's own database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from saga.client import Client
from saga.store.base import open_store
from saga.transports.memory import MemoryTransport
from tests.e2e.apps import bank
from tests.e2e.apps.trip import read_calls

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 90.0  # seconds for anything a process must do; the machine may be busy
APP = "tests.e2e.apps.trip"
BANK_APP = "tests.e2e.apps.bank"

T = TypeVar("T")


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = DEADLINE,
    explain: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``condition`` every 50 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:g}s\n{explain()}", pytrace=False)
        time.sleep(0.05)


class Daemon:
    """One ``saga coordinator`` or ``saga worker`` process; stderr goes to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = folder / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def explain(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"--- {self.name} ({state}) stderr:\n{self.log()[-6000:]}"

    def wait_ready(self) -> Daemon:
        """Until it says ``saga … ready (pid N)``; fail if it dies or takes too long."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited before it was ready\n{self.explain()}", pytrace=False
                )
            return f"ready (pid {self.pid})" in self.log()

        wait_until(ready, f"ready line from {self.name}", explain=self.explain)
        return self

    def wait_log(self, text: str) -> None:
        wait_until(
            lambda: text in self.log(), f"{text!r} in {self.name}'s log", explain=self.explain
        )

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def pause(self) -> None:
        """SIGSTOP: frozen mid-whatever, connections open, until :meth:`resume`."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"{self.name} still running after {timeout:g}s\n{self.explain()}", pytrace=False
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in 30 s (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process could not stop
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class Cluster:
    """The processes of one test and what they share."""

    def __init__(self, db: str, broker: str, folder: Path, prefix: str) -> None:
        self.db = db
        self.broker = broker
        self.folder = folder
        self.prefix = prefix
        self.calls_path = folder / "calls.jsonl"
        self.daemons: list[Daemon] = []
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "SAGA_E2E_CALLS": str(self.calls_path),
            "SAGA_E2E_QUEUE_PREFIX": prefix,
            bank.LEDGER_URL_ENV: db,
            "COLUMNS": "200",  # rich tables as wide as a terminal would have them
        }
        for name in ("SAGA_DATABASE_URL", "SAGA_BROKER_URL"):
            self.env.pop(name, None)  # only what each command is given explicitly
        self._count = 0

    @property
    def queues(self) -> dict[str, str]:
        kinds = ("cars", "hotels", "flights", "bank")
        return {kind: f"{self.prefix}-{kind}" for kind in kinds}

    # --- processes ----------------------------------------------------------------------
    def spawn(
        self,
        name: str,
        *args: str,
        connect: bool = True,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        """Start ``saga *args`` (with ``--db``/``--broker`` unless not ``connect``)."""
        self._count += 1
        argv = [sys.executable, "-m", "saga", *args]
        if connect:
            argv += ["--db", self.db, "--broker", self.broker]
        daemon = Daemon(f"{name}-{self._count}", argv, {**self.env, **(env or {})}, self.folder)
        self.daemons.append(daemon)
        return daemon

    def coordinator(
        self,
        *extra: str,
        app: str = APP,
        env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> Daemon:
        """A coordinator running the workflows of ``app``; ``extra`` are more arguments."""
        daemon = self.spawn("coordinator", "coordinator", "--app", app, *extra, env=env)
        return daemon.wait_ready() if ready else daemon

    def worker(
        self,
        *kinds: str,
        extra: tuple[str, ...] = (),
        app: str = APP,
        ready: bool = True,
    ) -> Daemon:
        """A worker serving the queues of ``kinds`` (``cars``, ``hotels``, ``flights``, ``bank``).

        ``app`` is the module whose activities it runs (the trip's by default).
        """
        queues = [arg for kind in kinds for arg in ("--queue", self.queues[kind])]
        daemon = self.spawn("worker", "worker", "--app", app, *queues, *extra)
        return daemon.wait_ready() if ready else daemon

    def saga(
        self,
        *args: str,
        timeout: float = DEADLINE,
        connect: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one CLI command to the end (with ``--db``/``--broker`` unless not ``connect``)."""
        argv = [sys.executable, "-m", "saga", *args]
        if connect:
            argv += ["--db", self.db, "--broker", self.broker]
        try:
            return subprocess.run(
                argv,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"`saga {' '.join(args)}` took more than {timeout:g}s\n{self.explain()}",
                pytrace=False,
            )

    def saga_ok(self, *args: str, timeout: float = DEADLINE) -> str:
        """Run a CLI command that must succeed; its stdout."""
        done = self.saga(*args, timeout=timeout)
        assert done.returncode == 0, (
            f"`saga {' '.join(args)}` exited {done.returncode}\n{done.stderr}\n{self.explain()}"
        )
        return done.stdout

    def saga_json(self, *args: str, timeout: float = DEADLINE) -> Any:
        return json.loads(self.saga_ok(*args, "--json", timeout=timeout))

    def start_trip(self, workflow_id: str, **request: Any) -> None:
        trip = {"name": workflow_id, **request}
        self.saga_ok("start", "E2ETrip", "--id", workflow_id, "--input", json.dumps(trip))

    def start_workflows(
        self,
        workflow_type: str,
        inputs: dict[str, Any],
        *,
        rate: float | None = None,
        started: list[str] | None = None,
    ) -> None:
        """Start one workflow per ``{id: input}`` through one in-process client.

        ``rate``: at most that many starts a second (default: as fast as they go);
        ``started``: each id is appended to it once its workflow exists.
        """

        async def start() -> None:
            client = await Client.connect(database_url=self.db, broker_url=self.broker)
            async with client:
                began = time.monotonic()
                for n, (workflow_id, arg) in enumerate(inputs.items()):
                    if rate:
                        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
                    await client.start_workflow(workflow_type, arg, id=workflow_id)
                    if started is not None:
                        started.append(workflow_id)

        run(start())

    # --- what happened ------------------------------------------------------------------
    def calls(self) -> list[dict[str, Any]]:
        return read_calls(self.calls_path)

    def status(self) -> dict[str, Any]:
        """``saga status --json``, healthy (exit 0) or not (exit 1)."""
        done = self.saga("status", "--json", "--db", self.db, connect=False)
        assert done.returncode in (0, 1) and done.stdout.strip(), (
            f"`saga status` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def statuses(self, ids: Iterable[str]) -> dict[str, str]:
        """The status of each workflow, read from the database."""
        wanted = list(ids)

        async def read(client: Client) -> dict[str, str]:
            described = [await client.get_workflow_handle(w).describe() for w in wanted]
            return {d.id: d.status.value for d in described}

        return run(self._reading(read))

    def histories(self, ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Each workflow's history in its JSON form (as ``saga history ID --json`` has it)."""
        wanted = list(ids)

        async def read(client: Client) -> dict[str, list[dict[str, Any]]]:
            return {
                w: [e.to_json() for e in await client.get_workflow_handle(w).history()]
                for w in wanted
            }

        return run(self._reading(read))

    def history(self, workflow_id: str) -> list[dict[str, Any]]:
        """One history, through the command line: ``saga history ID --json``."""
        events: list[dict[str, Any]] = self.saga_json("history", workflow_id)["events"]
        return events

    async def _reading(self, body: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        store = open_store(self.db)
        await store.connect()
        async with Client(store, MemoryTransport(), owns_connections=True) as client:
            return await body(client)

    def ledger(self) -> list[dict[str, Any]]:
        """Rows of the bank's ledger: one per applied step."""
        return run(bank.read_ledger(self.db))

    def executions(self) -> list[dict[str, Any]]:
        """Every execution of a bank step, applied or absorbed by its idempotency key."""
        return run(bank.read_executions(self.db))

    def balances(self) -> dict[str, int]:
        """Each account's balance: the sum of its ledger rows."""
        totals: dict[str, int] = {}
        for row in self.ledger():
            totals[row["account"]] = totals.get(row["account"], 0) + row["delta"]
        return totals

    def explain(self) -> str:
        return "\n".join(d.explain() for d in self.daemons)

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from a synchronous test."""
    return asyncio.run(coroutine)


def owners(status: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """shard -> the coordinator entry of ``saga status --json`` that owns it."""
    return {shard: c for c in status["coordinators"] for shard in c["shards"]}


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """Exit ``code``, exactly one line on stderr, no traceback; that line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr  # (stdout may be --json carrying a stack_trace)
    return lines[0]
