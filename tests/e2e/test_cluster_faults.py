"""Several coordinators on one PostgreSQL and RabbitMQ, and the faults they must survive.

Real processes throughout: ``saga coordinator`` daemons with a short lease
(``--lease-ttl 2``), bank workers whose steps write a ledger in PostgreSQL, deduplicated
by ``activity.info().idempotency_key`` (see :mod:`tests.e2e.apps.bank`). Each test
disturbs the cluster one way (SIGKILL at random moments, death between commit and
publish, a paused owner whose lease moves on, forged result messages, a PostgreSQL
restart, a killed timer owner) and then checks what must hold whatever happened:
every saga ends as it should, every history is well formed (events numbered without
gaps, each step scheduled once and completed once, nothing after the close), and the
ledger has each step's effect exactly once, so the balances are what the transfers
imply. Shard ownership is read as an operator would, from ``saga status --json``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from saga.client import shard_of
from saga.failure import FailureInfo
from saga.messages import ResultMessage
from saga.store.base import open_store
from saga.transports.base import results_queue_name
from saga.transports.rabbitmq import RabbitMQTransport
from tests.e2e.cluster import (
    BANK_APP,
    DEADLINE,
    Cluster,
    Daemon,
    owners,
    run,
    wait_until,
)
from tests.fixtures.broker import TestBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TTL = 2.0
"""``--lease-ttl`` of every coordinator here: takeovers take seconds, not the default 10."""
SLACK = 8.0
"""Takeover allowance beyond the lease time: a status poll is a process start, and the
machine has two busy cores."""
ACTIVITY_EVENTS = ("ActivityCompleted", "ActivityFailed")
CLOSING_EVENTS = (
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowCancelled",
    "WorkflowContinuedAsNew",
    "WorkflowTerminated",
    "WorkflowTimedOut",
)

Status = dict[str, Any]
Events = list[dict[str, Any]]


# --- the cluster ---------------------------------------------------------------------------
def bank_coordinator(cluster: Cluster, *extra: str, env: dict[str, str] | None = None) -> Daemon:
    return cluster.coordinator("--lease-ttl", f"{TTL:g}", *extra, app=BANK_APP, env=env)


def bank_worker(cluster: Cluster) -> Daemon:
    return cluster.worker("bank", app=BANK_APP)


def wait_status(
    cluster: Cluster, condition: Callable[[Status], bool], what: str, timeout: float = DEADLINE
) -> Status:
    """Poll ``saga status --json`` until ``condition`` holds; that status."""
    seen: list[Status] = []

    def check() -> bool:
        seen[:] = [cluster.status()]
        return condition(seen[0])

    def explain() -> str:
        last = json.dumps(seen[0], indent=1) if seen else "none"
        return f"last status: {last}\n{cluster.explain()}"

    wait_until(check, what, timeout=timeout, explain=explain)
    return seen[0]


def live(status: Status) -> dict[int, dict[str, Any]]:
    """pid -> entry of each coordinator the status calls alive."""
    return {c["pid"]: c for c in status["coordinators"] if c["alive"]}


def balanced(daemons: list[Daemon]) -> Callable[[Status], bool]:
    """Healthy, exactly ``daemons`` alive, each with a share no one will take from it."""

    def check(status: Status) -> bool:
        alive = live(status)
        share = -(-status["shard_count"] // len(daemons))
        return (
            status["healthy"]
            and set(alive) == {d.pid for d in daemons}
            and all(1 <= len(c["shards"]) <= share for c in alive.values())
        )

    return check


def owned_by(shard: int, daemon: Daemon) -> Callable[[Status], bool]:
    def check(status: Status) -> bool:
        owner = owners(status).get(shard)
        return owner is not None and owner["alive"] and owner["pid"] == daemon.pid

    return check


def taken_over_from(dead: Daemon) -> Callable[[Status], bool]:
    """Every shard owned by a live coordinator other than ``dead``."""

    def check(status: Status) -> bool:
        held = owners(status)
        return (
            not status["unowned_shards"]
            and len(held) == status["shard_count"]
            and all(c["alive"] and c["pid"] != dead.pid for c in held.values())
        )

    return check


def healthy(status: Status) -> bool:
    return bool(status["healthy"])


def lost_shards(coordinator: Daemon) -> set[int]:
    """The shards ``coordinator`` logged losing to another coordinator."""
    lost: set[int] = set()
    for line in coordinator.log().splitlines():
        found = re.search(r"lost shard.*\sshards=(\"(?:[^\"\\]|\\.)*\"|\S+)", line)
        if found:
            value = json.loads(found.group(1))
            lost.update(json.loads(value) if isinstance(value, str) else value)
    return lost


def owner_of(cluster: Cluster, shard: int, daemons: list[Daemon]) -> Daemon:
    owner = owners(cluster.status())[shard]
    return next(d for d in daemons if d.pid == owner["pid"])


def kill_and_time_takeover(cluster: Cluster, victim: Daemon) -> float:
    """SIGKILL ``victim``; seconds until ``saga status`` shows its shards on live owners."""
    killed = time.monotonic()
    victim.kill()
    wait_status(cluster, taken_over_from(victim), f"takeover of {victim.name}'s shards")
    return time.monotonic() - killed


def count_by_status(cluster: Cluster) -> dict[str, int]:
    async def read() -> dict[str, int]:
        store = open_store(cluster.db)
        await store.connect()
        try:
            return await store.count_by_status()
        finally:
            await store.aclose()

    return run(read())


def wait_closed(cluster: Cluster, count: int, timeout: float = DEADLINE) -> None:
    """Until ``count`` workflows exist and none is RUNNING."""

    def closed() -> bool:
        by_status = count_by_status(cluster)
        return sum(by_status.values()) == count and not by_status.get("RUNNING")

    wait_until(closed, f"{count} closed workflows", timeout=timeout, explain=cluster.explain)


def closed_here(coordinator: Daemon, workflow_id: str) -> bool:
    """Whether ``coordinator`` logged closing ``workflow_id``."""
    return any(
        "workflow closed" in line and f"workflow_id={workflow_id} " in f"{line} "
        for line in coordinator.log().splitlines()
    )


class Starter(threading.Thread):
    """Starts workflows at a steady rate in the background, while the test disturbs."""

    def __init__(
        self, cluster: Cluster, workflow_type: str, inputs: dict[str, Any], rate: float
    ) -> None:
        super().__init__(daemon=True)
        self.args = (cluster, workflow_type, inputs, rate)
        self.ids: list[str] = []
        self.error: BaseException | None = None
        self.start()

    @property
    def started(self) -> int:
        return len(self.ids)

    def run(self) -> None:
        cluster, workflow_type, inputs, rate = self.args
        try:
            cluster.start_workflows(workflow_type, inputs, rate=rate, started=self.ids)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float | None = DEADLINE) -> None:
        super().join(timeout)
        assert not self.is_alive(), "starting the workflows took too long"
        if self.error is not None:
            raise self.error


def transfer(source: str, target: str, amount: int, **knobs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, "amount": amount, **knobs}


# --- what must hold ------------------------------------------------------------------------
def attrs(event: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = event["attributes"]
    return found


def of_type(events: Events, *types: str) -> Events:
    return [e for e in events if e["type"] in types]


def assert_well_formed(workflow_id: str, events: Events) -> None:
    """No duplicate or conflicting events: what two writers at once would leave behind."""
    where = f"history of {workflow_id}: {[e['type'] for e in events]}"
    assert [e["event_id"] for e in events] == list(range(1, len(events) + 1)), where
    assert events and events[0]["type"] == "WorkflowStarted", where
    closing = [i for i, e in enumerate(events) if e["type"] in CLOSING_EVENTS]
    assert closing in ([], [len(events) - 1]), where  # at most one close, and nothing after

    scheduled = Counter(attrs(e)["seq"] for e in of_type(events, "ActivityScheduled"))
    assert all(n == 1 for n in scheduled.values()), f"a step scheduled twice: {where}"
    ended = Counter(attrs(e)["seq"] for e in of_type(events, *ACTIVITY_EVENTS))
    assert all(n == 1 for n in ended.values()), f"a step ended twice: {where}"
    assert set(ended) <= set(scheduled), f"an unscheduled step ended: {where}"
    failed_attempts: dict[int, list[int]] = defaultdict(list)
    for e in of_type(events, "ActivityAttemptFailed"):
        failed_attempts[attrs(e)["seq"]].append(attrs(e)["attempt"])
    for seq, attempts in failed_attempts.items():
        assert seq in scheduled, where
        assert attempts == list(range(1, len(attempts) + 1)), f"attempts {attempts}: {where}"
    for e in of_type(events, *ACTIVITY_EVENTS):
        seq, attempt = attrs(e)["seq"], attrs(e)["attempt"]
        assert attempt == len(failed_attempts[seq]) + 1, f"step {seq} ended by {attempt}: {where}"

    started = Counter(attrs(e)["seq"] for e in of_type(events, "TimerStarted"))
    fired = Counter(attrs(e)["seq"] for e in of_type(events, "TimerFired"))
    assert all(n == 1 for n in started.values()), where
    assert all(n == 1 for n in fired.values()), f"a timer fired twice: {where}"
    assert set(fired) <= set(started), where


def assert_ledger_matches(
    histories: dict[str, Events], statuses: dict[str, str], ledger: list[dict[str, Any]]
) -> None:
    """Each step of each saga applied exactly once, under its own idempotency key."""
    applied: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in ledger:
        applied[row["workflow_id"]].append(row)
    assert set(applied) <= set(histories), f"ledger rows of unknown sagas: {set(applied)}"
    for workflow_id, events in histories.items():
        run_id = attrs(events[0])["run_id"]
        seqs = {attrs(e)["activity"]: attrs(e)["seq"] for e in of_type(events, "ActivityScheduled")}
        expected = {
            "COMPLETED": ["deposit", "withdraw"],
            "COMPENSATED": ["refund", "withdraw"],
        }[statuses[workflow_id]]
        rows = applied[workflow_id]
        assert sorted(r["op"] for r in rows) == expected, (workflow_id, rows)
        for row in rows:
            assert row["idempotency_key"] == f"{workflow_id}/{run_id}/{seqs[row['op']]}", row


def expected_balances(
    transfers: dict[str, dict[str, Any]], statuses: dict[str, str]
) -> dict[str, int]:
    balances: dict[str, int] = defaultdict(int)
    for workflow_id, t in transfers.items():
        moved = t["amount"] if statuses[workflow_id] == "COMPLETED" else 0
        balances[t["source"]] -= moved
        balances[t["target"]] += moved
    return dict(balances)


def assert_bank_consistent(
    cluster: Cluster, transfers: dict[str, dict[str, Any]], statuses: dict[str, str]
) -> int:
    """Histories well formed, ledger and balances exact; returns duplicates absorbed."""
    histories = cluster.histories(transfers)
    for workflow_id, events in histories.items():
        assert_well_formed(workflow_id, events)
    ledger = cluster.ledger()
    assert_ledger_matches(histories, statuses, ledger)
    balances = {a: b for a, b in cluster.balances().items() if b}
    assert balances == {a: b for a, b in expected_balances(transfers, statuses).items() if b}
    return len(cluster.executions()) - len(ledger)


def steps(events: Events, activity: str) -> tuple[int, Events]:
    """The seq of ``activity`` in a history, and the events about that step."""
    (scheduled,) = [
        e for e in of_type(events, "ActivityScheduled") if attrs(e)["activity"] == activity
    ]
    seq = attrs(scheduled)["seq"]
    return seq, [e for e in events if attrs(e).get("seq") == seq and e["type"] != "TimerStarted"]


# --- the scenarios -------------------------------------------------------------------------
@pytest.mark.timeout(360)
def test_two_of_three_coordinators_killed_with_200_transfers_in_flight(cluster: Cluster) -> None:
    seed = int(os.environ.get("SAGA_E2E_SEED") or random.SystemRandom().randrange(10**6))
    print(f"\nseed {seed} (SAGA_E2E_SEED={seed} repeats this run)")
    rng = random.Random(seed)
    cluster.saga_ok("db", "upgrade")
    coordinators = [bank_coordinator(cluster) for _ in range(3)]
    bank_worker(cluster)
    bank_worker(cluster)
    wait_status(cluster, balanced(coordinators), "shards spread over 3 coordinators")

    accounts = [f"acct-{i}" for i in range(8)]
    transfers: dict[str, dict[str, Any]] = {}
    for i in range(200):
        source, target = rng.sample(accounts, 2)
        amount = rng.randint(1, 100)
        delay = rng.choice((0.0, 0.2, 0.5))
        transfers[f"transfer-{i:03d}"] = transfer(source, target, amount, delay=delay)
    # Started at a steady pace from the side, so the kills land among sagas in flight.
    starter = Starter(cluster, "E2ETransfer", transfers, rate=10)

    takeovers: list[float] = []
    survivors = list(coordinators)
    for moment in (rng.uniform(1.0, 4.0), rng.uniform(0.5, 3.0)):
        time.sleep(moment)  # when the fault strikes (the test waits for nothing here)
        victim = rng.choice(survivors)
        survivors.remove(victim)
        applied, started = len(cluster.ledger()), starter.started
        takeovers.append(kill_and_time_takeover(cluster, victim))
        print(
            f"killed {victim.name} with {started} of 200 sagas started and {applied} of 400 "
            f"steps applied: its shards taken over in {takeovers[-1]:.1f}s"
        )
    starter.join()

    wait_closed(cluster, len(transfers), timeout=180)
    statuses = cluster.statuses(transfers)
    assert Counter(statuses.values()) == {"COMPLETED": 200}, cluster.explain()
    duplicates = assert_bank_consistent(cluster, transfers, statuses)
    print(f"takeover times {[round(t, 1) for t in takeovers]}s; duplicates absorbed {duplicates}")
    assert all(t <= TTL + SLACK for t in takeovers), takeovers
    final = cluster.status()
    assert final["healthy"], final
    assert set(live(final)) == {d.pid for d in survivors}
    assert "claimed shard" in survivors[0].log()  # the dead ones' shards, among others


def test_killed_between_commit_and_publish_the_next_owner_publishes_once(
    cluster: Cluster,
) -> None:
    cluster.saga_ok("db", "upgrade")
    workflow_id = "transfer-kill-after-commit"
    doomed = bank_coordinator(cluster, env={"SAGA_TEST_KILL_AFTER_COMMIT": "1"})
    shard = shard_of(workflow_id, cluster.status()["shard_count"])
    bank_worker(cluster)
    cluster.start_workflows("E2ETransfer", {workflow_id: transfer("ann", "bob", 30)})

    # It commits the withdrawal's task to its outbox, then dies before publishing it.
    assert doomed.wait_exit() == -9, doomed.explain()
    assert "killing myself before publishing" in doomed.log()
    (scheduled,) = of_type(cluster.histories([workflow_id])[workflow_id], "ActivityScheduled")
    assert attrs(scheduled)["activity"] == "withdraw"
    assert cluster.executions() == []  # never published: no worker has seen it

    heir = bank_coordinator(cluster)
    wait_status(cluster, owned_by(shard, heir), f"shard {shard} owned by the new coordinator")
    wait_closed(cluster, 1)
    statuses = cluster.statuses([workflow_id])
    assert statuses == {workflow_id: "COMPLETED"}, cluster.explain()
    transfers = {workflow_id: transfer("ann", "bob", 30)}
    assert_bank_consistent(cluster, transfers, statuses)
    runs = Counter(e["op"] for e in cluster.executions())
    assert runs == {"withdraw": 1, "deposit": 1}, runs  # published by the heir, once


def test_paused_owner_loses_its_shard_and_steps_back(
    cluster: Cluster, rabbitmq_broker: TestBroker
) -> None:
    cluster.saga_ok("db", "upgrade")
    first, second = bank_coordinator(cluster), bank_coordinator(cluster)
    bank_worker(cluster)
    wait_status(cluster, balanced([first, second]), "shards spread over 2 coordinators")
    workflow_id = "transfer-split-brain"
    shard = shard_of(workflow_id, cluster.status()["shard_count"])
    queue = results_queue_name(shard)
    release = cluster.folder / "release-withdraw"
    request = transfer("ann", "bob", 40, hold="withdraw", hold_file=str(release))
    cluster.start_workflows("E2ETransfer", {workflow_id: request})
    wait_until(
        lambda: release.with_name(release.name + ".waiting").exists(),
        "the withdrawal under way",
        explain=cluster.explain,
    )

    # The owner freezes (think: a long GC pause) with the saga in its cache, its
    # connections open and its lease in the database, until the lease runs out.
    old = owner_of(cluster, shard, [first, second])
    new = second if old is first else first
    paused = time.monotonic()
    old.pause()
    try:
        wait_status(cluster, owned_by(shard, new), f"shard {shard} moved to {new.name}")
        moved = time.monotonic() - paused
        print(f"\nshard {shard} moved off the paused coordinator in {moved:.1f}s")
        release.touch()  # the step ends; the saga must go on, on the new owner
        wait_until(
            lambda: cluster.statuses([workflow_id])[workflow_id] != "RUNNING",
            f"the saga completed by {new.name} while {old.name} is paused",
            timeout=TTL + SLACK + 20,
            explain=lambda: (
                f"{queue} (ready, unacked, consumers): "
                f"{_queue_row(rabbitmq_broker, queue)}\n{cluster.explain()}"
            ),
        )
    finally:
        old.resume()

    # Back, it finds its lease gone and drops the shard; it writes nothing more.
    wait_until(
        lambda: shard in lost_shards(old), f"{old.name} losing shard {shard}", explain=old.explain
    )
    assert old.proc.poll() is None, old.explain()  # it stepped back; it did not crash
    status = wait_status(cluster, healthy, "a healthy cluster")
    assert set(live(status)) == {first.pid, second.pid}
    statuses = cluster.statuses([workflow_id])
    assert statuses == {workflow_id: "COMPLETED"}, cluster.explain()
    events = cluster.history(workflow_id)  # as ``saga history ID --json`` prints it
    assert_well_formed(workflow_id, events)
    assert_bank_consistent(cluster, {workflow_id: request}, statuses)


async def _inject(broker_url: str, messages: list[ResultMessage]) -> None:
    async with RabbitMQTransport(broker_url) as transport:
        for message in messages:
            await transport.publish_result(message)


def _queue_row(broker: TestBroker, queue: str) -> list[int]:
    """Ready and unacknowledged messages of ``queue``, and its consumers ([] if none)."""
    listing = broker.control.run(
        "list_queues",
        "-p",
        broker.vhost,
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
    )
    for line in listing.splitlines():
        name, *numbers = line.split("\t")
        if name == queue:
            return [int(n) for n in numbers]
    return []


def _queue_depth(broker: TestBroker, queue: str) -> int:
    """Ready plus unacknowledged messages of ``queue`` (0 if it does not exist)."""
    return sum(_queue_row(broker, queue)[:2])


def test_duplicate_and_stale_results_are_ignored(
    cluster: Cluster, rabbitmq_broker: TestBroker
) -> None:
    cluster.saga_ok("db", "upgrade")
    bank_coordinator(cluster)
    bank_worker(cluster)
    workflow_id = "transfer-forged-results"
    shard = shard_of(workflow_id, cluster.status()["shard_count"])
    release = cluster.folder / "release-deposit"
    # The deposit's first attempt fails (retryable); the second waits for ``release``.
    request = transfer("ann", "bob", 25, deposit_failures=1, hold="deposit", hold_file=str(release))
    cluster.start_workflows("E2ETransfer", {workflow_id: request})
    waiting = release.with_name(release.name + ".waiting")
    wait_until(waiting.exists, "the deposit's second attempt", explain=cluster.explain)
    assert waiting.read_text() == "2"

    events = cluster.histories([workflow_id])[workflow_id]
    run_id = attrs(events[0])["run_id"]
    withdraw_seq, withdraw_events = steps(events, "withdraw")
    (withdrawn,) = of_type(withdraw_events, "ActivityCompleted")
    deposit_seq, _ = steps(events, "deposit")
    base = {"workflow_id": workflow_id, "run_id": run_id, "shard": shard, "worker": "forger"}
    forged = [
        # The withdrawal's completion delivered again: same step, attempt and result.
        ResultMessage(
            kind="completed", seq=withdraw_seq, attempt=1, result=attrs(withdrawn)["result"], **base
        ),
        # ... and again with another result: still the same (seq, attempt).
        ResultMessage(kind="completed", seq=withdraw_seq, attempt=1, result="FORGED", **base),
        # The deposit's first attempt, which failed, reported again, and as a success.
        ResultMessage(
            kind="failed",
            seq=deposit_seq,
            attempt=1,
            failure=FailureInfo(message="the bank is unavailable", type="BankUnavailable"),
            **base,
        ),
        ResultMessage(kind="completed", seq=deposit_seq, attempt=1, result="FORGED", **base),
        # A step the workflow never scheduled; a run that is not this one.
        ResultMessage(kind="completed", seq=99, attempt=1, result="FORGED", **base),
        ResultMessage(
            kind="completed",
            seq=deposit_seq,
            attempt=2,
            result="FORGED",
            **{**base, "run_id": "not-this-run"},
        ),
    ]
    run(_inject(cluster.broker, forged))
    queue = results_queue_name(shard)
    wait_until(
        lambda: _queue_depth(rabbitmq_broker, queue) == 0,
        f"forged results consumed from {queue}",
        explain=cluster.explain,
    )
    # Nothing moved: the saga still waits for the deposit's second attempt.
    assert cluster.histories([workflow_id])[workflow_id] == events
    assert cluster.statuses([workflow_id]) == {workflow_id: "RUNNING"}

    release.touch()
    wait_closed(cluster, 1)
    statuses = cluster.statuses([workflow_id])
    assert statuses == {workflow_id: "COMPLETED"}, cluster.explain()
    events = cluster.histories([workflow_id])[workflow_id]
    assert_well_formed(workflow_id, events)
    for activity, attempt in (("withdraw", 1), ("deposit", 2)):
        _, about = steps(events, activity)
        (completed,) = of_type(about, "ActivityCompleted")
        assert attrs(completed)["attempt"] == attempt
        assert attrs(completed)["result"] != "FORGED"
    assert "FORGED" not in json.dumps(of_type(events, "WorkflowCompleted"))
    assert_bank_consistent(cluster, {workflow_id: request}, statuses)
    assert _queue_depth(rabbitmq_broker, queue) == 0


def _local_postgres(url: str) -> tuple[str, str]:
    """(version, cluster name) of the local PostgreSQL cluster serving ``url``'s port."""
    port = str(urlsplit(url.replace("+asyncpg", "")).port or 5432)
    lsclusters = shutil.which("pg_lsclusters")
    if lsclusters is None:
        pytest.fail(
            "cannot restart PostgreSQL: no pg_lsclusters here (run this test where the "
            "database is a local Debian cluster, as on CI)",
            pytrace=False,
        )
    listing = subprocess.run(
        [lsclusters, "--no-header"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    for line in listing.splitlines():
        version, name, cluster_port, *_ = line.split()
        if cluster_port == port:
            return version, name
    pytest.fail(f"cannot restart PostgreSQL: no local cluster on port {port}", pytrace=False)


def _pg_ctlcluster(version: str, name: str, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _pg_running(version: str, name: str) -> bool:
    return _pg_ctlcluster(version, name, "status").returncode == 0


@pytest.mark.timeout(300)
def test_postgresql_restart_with_50_transfers_in_flight(cluster: Cluster) -> None:
    version, name = _local_postgres(cluster.db)
    cluster.saga_ok("db", "upgrade")
    coordinators = [bank_coordinator(cluster) for _ in range(2)]
    bank_worker(cluster)
    wait_status(cluster, balanced(coordinators), "shards spread over 2 coordinators")
    transfers = {
        f"transfer-{i:02d}": transfer(
            f"acct-{i % 5}", f"acct-{(i + 1) % 5}", 10 + i, delay=0.3, deposit_refused=i % 10 == 0
        )
        for i in range(50)
    }
    cluster.start_workflows("E2ETransfer", transfers)
    wait_until(lambda: len(cluster.ledger()) >= 15, "15 steps applied", explain=cluster.explain)

    try:
        in_flight = count_by_status(cluster).get("RUNNING", 0)
        restarted = _pg_ctlcluster(version, name, "restart")
        assert restarted.returncode == 0, restarted.stderr
        print(f"\nPostgreSQL {version}/{name} restarted with {in_flight} sagas running")
    finally:
        if not _pg_running(version, name):  # never leave the shared server down
            _pg_ctlcluster(version, name, "start")
    assert in_flight > 0  # the restart did catch sagas half-way
    wait_closed(cluster, len(transfers), timeout=180)

    statuses = cluster.statuses(transfers)
    expected = {
        w: "COMPENSATED" if t["deposit_refused"] else "COMPLETED" for w, t in transfers.items()
    }
    assert statuses == expected, cluster.explain()
    duplicates = assert_bank_consistent(cluster, transfers, statuses)
    print(f"duplicates absorbed by the ledger's idempotency keys: {duplicates}")

    async def unsent() -> int:
        store = open_store(cluster.db)
        await store.connect()
        try:
            return len(await store.outbox(only_unsent=False))
        finally:
            await store.aclose()

    assert run(unsent()) == 0  # every step's task published and its row done with
    wait_status(cluster, balanced(coordinators), "both coordinators healthy again")


def test_a_durable_timer_fires_once_on_the_next_owner_and_not_early(cluster: Cluster) -> None:
    cluster.saga_ok("db", "upgrade")
    coordinators = [bank_coordinator(cluster) for _ in range(2)]
    wait_status(cluster, balanced(coordinators), "shards spread over 2 coordinators")
    workflow_id = "timer-takeover"
    shard = shard_of(workflow_id, cluster.status()["shard_count"])
    owner = owner_of(cluster, shard, coordinators)
    heir = next(d for d in coordinators if d is not owner)

    cluster.start_workflows("E2ETimer", {workflow_id: 5.0})

    def timer_started() -> bool:
        return bool(of_type(cluster.histories([workflow_id])[workflow_id], "TimerStarted"))

    wait_until(timer_started, "the timer started", explain=cluster.explain)
    owner.kill()
    killed_at = datetime.now(UTC)
    events = cluster.histories([workflow_id])[workflow_id]
    (started,) = of_type(events, "TimerStarted")
    fire_at = datetime.fromisoformat(attrs(started)["fire_at"])
    assert killed_at < fire_at, "the owner was killed too late: the timer may have fired"

    wait_closed(cluster, 1)
    assert cluster.statuses([workflow_id]) == {workflow_id: "COMPLETED"}
    events = cluster.history(workflow_id)
    assert_well_formed(workflow_id, events)
    (fired,) = of_type(events, "TimerFired")
    assert attrs(fired)["seq"] == attrs(started)["seq"]
    assert datetime.fromisoformat(fired["timestamp"]) >= fire_at
    assert not closed_here(owner, workflow_id)
    assert closed_here(heir, workflow_id), heir.explain()
    print(
        f"\ntimer due {fire_at.time()}, owner killed {(fire_at - killed_at).total_seconds():.1f}s "
        f"before; fired at {fired['timestamp']} on {heir.name}"
    )
