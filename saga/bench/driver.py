"""Drive load against saga, embedded or against real servers, and measure it.

Closed loop (``--concurrency C``): C clients each start a saga and wait for it, again
and again. Open loop (``--rate R[:SECONDS]``, repeatable): sagas start at a steady rate
per phase, whatever the backlog — maru's way of finding where latency breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saga.bench.report import BenchReport, Bucket, Percentiles
from saga.bench.scenarios import ACTIVITIES, SCENARIOS, WORKFLOWS, BenchParams, ledger
from saga.client import Client
from saga.errors import SagaError, WorkflowFailureError
from saga.history import ActivityCompleted, ActivityScheduled, WorkflowStatus


@dataclass
class BenchConfig:
    """What to run; see ``saga bench --help``."""

    scenario: str = "trip-booking"
    workflows: int | None = 1000
    duration: float | None = None
    concurrency: int = 50
    rates: list[tuple[float, float]] = field(default_factory=list)
    failure_rate: float = 0.0
    activity_time: float = 0.0
    payload_bytes: int = 0
    database_url: str | None = None
    broker_url: str | None = None
    coordinators: int = 1
    workers: int = 1
    lease_ttl: float | None = None
    external: bool = False
    timeout: float = 60.0
    sample: int = 200
    seed: int = 1


@dataclass
class _Run:
    id: str
    began: float
    fail: bool
    ended: float | None = None
    status: str | None = None


@dataclass
class _Progress:
    runs: list[_Run] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            key = r.status or "RUNNING"
            out[key] = out.get(key, 0) + 1
        return out


@contextlib.asynccontextmanager
async def _system(cfg: BenchConfig) -> AsyncIterator[Client]:
    """The saga deployment under test, yielding a client to it."""
    if cfg.broker_url is None:
        from saga.testing import WorkflowEnvironment

        url = cfg.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
        ledger.reset()
        async with WorkflowEnvironment(
            workflows=WORKFLOWS, activities=ACTIVITIES, database_url=url
        ) as env:
            yield env.client
        return
    if cfg.database_url is None:
        raise SagaError("--broker needs --db too")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if not cfg.external:
            processes = await _spawn(cfg)
        client = await Client.connect(database_url=cfg.database_url, broker_url=cfg.broker_url)
        async with client:
            yield client
    finally:
        await asyncio.to_thread(_stop, processes)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a graceful drain), then SIGKILL whatever is still there after 30 s."""
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _spawn(cfg: BenchConfig) -> list[subprocess.Popen[bytes]]:
    """Migrate the database, start coordinators and workers, wait until each is ready.

    Their logs go to files (``saga-bench-*`` in the temp directory), never to a pipe
    nobody reads: a daemon blocked on a full pipe would stall the whole run.
    """
    base = [sys.executable, "-m", "saga"]
    common = ["--db", str(cfg.database_url), "--broker", str(cfg.broker_url)]
    upgrade = await asyncio.to_thread(
        subprocess.run,
        [*base, "db", "upgrade", "--db", str(cfg.database_url)],
        capture_output=True,
        text=True,
        check=False,
    )
    if upgrade.returncode != 0:
        raise SagaError(f"bench: saga db upgrade failed: {upgrade.stderr.strip()}")
    app = ["--app", "saga.bench.scenarios"]
    leases = [] if cfg.lease_ttl is None else ["--lease-ttl", str(cfg.lease_ttl)]
    commands = [("coordinator", [*base, "coordinator", *app, *common, *leases])] * cfg.coordinators
    commands += [("worker", [*base, "worker", *app, *common])] * cfg.workers
    logs = Path(tempfile.mkdtemp(prefix="saga-bench-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for index, (role, command) in enumerate(commands):
            log_path = logs / f"{role}-{index}.log"
            started.append((_launch(command, log_path, env), log_path))
        for proc, log_path in started:
            await _await_ready(proc, log_path)
    except BaseException:
        await asyncio.to_thread(_stop, [proc for proc, _ in started])
        raise
    return [proc for proc, _ in started]


def _launch(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        # Our own interpreter running saga: no untrusted input in the command.
        return subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.DEVNULL, stderr=log_file, env=env
        )


async def _await_ready(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait for the daemon's ``ready`` line; raise with its last words if it dies first."""
    deadline = time.monotonic() + 60
    while True:
        text = await asyncio.to_thread(log_path.read_text, errors="replace")
        if " ready (pid " in text:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            last = text.strip().splitlines()[-1:] or ["(no output)"]
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "not ready"
            raise SagaError(f"bench daemon {state} ({log_path}): {last[0]}")
        await asyncio.sleep(0.1)


async def _one(
    client: Client, cfg: BenchConfig, index: int, rng: random.Random, progress: _Progress
) -> None:
    workflow, _ = SCENARIOS[cfg.scenario]
    fail = rng.random() < cfg.failure_rate
    params = BenchParams(
        activity_time=cfg.activity_time, payload="x" * cfg.payload_bytes, fail=fail
    )
    run = _Run(
        id=f"bench-{cfg.seed}-{index}-{os.getpid()}-{int(time.time())}", began=0.0, fail=fail
    )
    run.began = time.perf_counter()
    progress.runs.append(run)
    handle = await client.start_workflow(workflow.run, params, id=run.id)
    try:
        await handle.result(timeout=cfg.timeout)
        run.status = WorkflowStatus.COMPLETED.value
    except WorkflowFailureError as exc:
        run.status = exc.status
    except TimeoutError:
        return  # stays RUNNING: reported as stuck
    run.ended = time.perf_counter()


async def _drive(client: Client, cfg: BenchConfig, progress: _Progress) -> None:
    rng = random.Random(cfg.seed)
    counter = iter(range(10**9))
    began = time.perf_counter()

    def more() -> bool:
        if cfg.duration is not None and time.perf_counter() - began >= cfg.duration:
            return False
        return cfg.workflows is None or len(progress.runs) < cfg.workflows

    if cfg.rates:
        tasks: list[asyncio.Task[None]] = []
        for rate, seconds in cfg.rates:
            phase_end = time.perf_counter() + seconds
            next_at = time.perf_counter()
            while time.perf_counter() < phase_end and more():
                tasks.append(asyncio.create_task(_one(client, cfg, next(counter), rng, progress)))
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*tasks)
        return

    async def loop() -> None:
        while more():
            await _one(client, cfg, next(counter), rng, progress)

    await asyncio.gather(*(loop() for _ in range(cfg.concurrency)))


async def _show(progress: _Progress, stop: asyncio.Event) -> None:
    from rich.live import Live
    from rich.text import Text

    def render() -> Text:
        counts = progress.counts()
        now = time.perf_counter()
        recent = sum(1 for r in progress.runs if r.ended and now - r.ended < 1.0)
        finished = sum(v for k, v in counts.items() if k != "RUNNING")
        return Text(
            f"started {len(progress.runs)}  completed {counts.get('COMPLETED', 0)}  "
            f"compensated {counts.get('COMPENSATED', 0)}  "
            f"failed {counts.get('FAILED', 0) + counts.get('COMPENSATION_FAILED', 0)}  "
            f"backlog {len(progress.runs) - finished}  rate {recent}/s"
        )

    with Live(render(), refresh_per_second=4, transient=False, redirect_stderr=False) as live:
        while not stop.is_set():
            live.update(render())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        live.update(render())


async def _check(
    client: Client, cfg: BenchConfig, progress: _Progress, embedded: bool
) -> tuple[list[str], list[str], list[str], list[float]]:
    lost, stuck, inconsistent, schedule_to_start = [], [], [], []
    sampled = 0
    for run in progress.runs:
        record = await client.store.get_workflow(run.id)
        if record is None:
            lost.append(run.id)
            continue
        if not record.status.is_closed:
            stuck.append(run.id)
            continue
        if run.status is None:
            run.status = record.status.value
        expected = (
            {WorkflowStatus.COMPLETED}
            if not run.fail
            else {WorkflowStatus.COMPENSATED, WorkflowStatus.FAILED}
        )
        if record.status not in expected:
            inconsistent.append(f"{run.id}: {record.status.value}")
        if record.status is WorkflowStatus.COMPENSATED or sampled < cfg.sample:
            sampled += 1
            events = await client.store.load_history(record.workflow_id, record.run_id)
            schedule_to_start.extend(_schedule_to_start(events))
            if record.status is WorkflowStatus.COMPENSATED:
                desc_steps = [e.attributes for e in events]
                forward = sum(1 for a in desc_steps if isinstance(a, ActivityCompleted))
                comps = [
                    a for a in desc_steps if isinstance(a, ActivityScheduled) and a.compensation
                ]
                if cfg.scenario == "trip-booking" and forward != 2 * len(comps):
                    inconsistent.append(f"{run.id}: {len(comps)} compensations for its steps")
    if embedded and cfg.scenario == "trip-booking" and ledger.active:
        # Completed trips keep their 3 reservations; compensated ones must keep none.
        completed = sum(1 for r in progress.runs if r.status == "COMPLETED")
        if len(ledger.active) != 3 * completed:
            inconsistent.append(f"{len(ledger.active)} reservations held, expected {3 * completed}")
    return lost, stuck, inconsistent, schedule_to_start


def _schedule_to_start(events: list[Any]) -> list[float]:
    scheduled = {}
    out = []
    for e in events:
        a = e.attributes
        if isinstance(a, ActivityScheduled):
            scheduled[a.seq] = e.timestamp
        started = getattr(a, "started_at", None)
        if isinstance(a, ActivityCompleted) and started is not None and a.seq in scheduled:
            out.append(max(0.0, (started - scheduled[a.seq]).total_seconds()))
    return out


def _timeline(runs: list[_Run], t0: float) -> list[Bucket]:
    by_second: dict[int, list[float]] = {}
    for r in runs:
        if r.ended is not None:
            by_second.setdefault(int(r.ended - t0), []).append(r.ended - r.began)
    buckets = []
    for second in range(max(by_second, default=-1) + 1):
        values = by_second.get(second, [])
        p = Percentiles.of(values)
        buckets.append(Bucket(second=second, finished=len(values), p50_ms=p.p50, p99_ms=p.p99))
    return buckets


async def run_bench(
    cfg: BenchConfig,
    *,
    show_progress: bool = True,
    on_client: Callable[[Client], None] | None = None,
) -> BenchReport:
    """Run the configured load and return the report."""
    if cfg.scenario not in SCENARIOS:
        raise SagaError(f"unknown scenario {cfg.scenario!r}: {', '.join(SCENARIOS)}")
    embedded = cfg.broker_url is None
    progress = _Progress()
    async with _system(cfg) as client:
        if on_client is not None:
            on_client(client)
        stop = asyncio.Event()
        shower = asyncio.create_task(_show(progress, stop)) if show_progress else None
        t0 = time.perf_counter()
        try:
            await _drive(client, cfg, progress)
        finally:
            elapsed = time.perf_counter() - t0
            stop.set()
            if shower is not None:
                await shower
        lost, stuck, inconsistent, s2s = await _check(client, cfg, progress, embedded)
    _, steps = SCENARIOS[cfg.scenario]
    latencies = [r.ended - r.began for r in progress.runs if r.ended is not None]
    finished = len(latencies)
    latency = Percentiles.of(latencies)
    return BenchReport(
        scenario=cfg.scenario,
        mode="embedded" if embedded else ("external" if cfg.external else "distributed"),
        config={k: v for k, v in asdict(cfg).items() if k not in ("database_url", "broker_url")},
        started=len(progress.runs),
        by_status=progress.counts(),
        lost=lost,
        stuck=stuck,
        inconsistent=inconsistent,
        duration_s=elapsed,
        workflows_per_s=finished / elapsed if elapsed else 0.0,
        steps_per_s=finished * steps / elapsed if elapsed else 0.0,
        latency_ms=latency,
        schedule_to_start_ms=Percentiles.of(s2s),
        per_step_overhead_ms=max(0.0, latency.mean / steps - cfg.activity_time * 1000),
        timeline=_timeline(progress.runs, t0),
    )
