"""``saga demo``: the examples, embedded, with a timeline of what happened.

Runs on a SQLite file in a temporary directory and the in-process broker, with time
skipping so retry backoffs cost no real time. Exits 0 when the saga behaved as designed
(right final status, and the fake services left consistent).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from saga.errors import SagaError, WorkflowFailureError
from saga.testing import WorkflowEnvironment
from saga.timeline import print_timeline

_EXPECTED = {
    ("trip-booking", None): "COMPLETED",
    ("trip-booking", "car"): "FAILED",
    ("trip-booking", "hotel"): "COMPENSATED",
    ("trip-booking", "flight"): "COMPENSATED",
    ("money-transfer", None): "COMPLETED",
    ("money-transfer", "withdraw"): "FAILED",
    ("money-transfer", "deposit"): "COMPENSATED",
}


def _examples(name: str) -> tuple[Any, Any]:
    root = Path(__file__).resolve().parent.parent
    if not (root / "examples").is_dir():
        raise SagaError("saga demo runs from a source checkout (the examples/ folder is missing)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    package = name.replace("-", "_")
    workflows = importlib.import_module(f"examples.{package}.workflows")
    activities = importlib.import_module(f"examples.{package}.activities")
    return workflows, activities


async def run_demo(example: str, fail: str | None) -> int:
    """Run one example and print its timeline; 0 when it behaved as designed."""
    if (example, fail) not in _EXPECTED:
        steps = sorted(f for e, f in _EXPECTED if e == example and f)
        raise SagaError(f"--fail for {example} must be one of: {', '.join(steps)}")
    workflows, activities = _examples(example)
    folder = Path(tempfile.mkdtemp(prefix="saga-demo-"))
    url = f"sqlite+aiosqlite:///{folder / 'saga.db'}"
    console = Console()
    console.print(f"[bold]saga demo {example}[/bold]" + (f" --fail {fail}" if fail else ""))
    async with WorkflowEnvironment(
        workflows=workflows.WORKFLOWS,
        activities=activities.ACTIVITIES,
        database_url=url,
        time_skipping=True,
    ) as env:
        workflow, arg, check = _scenario(example, fail, activities)
        handle = await env.client.start_workflow(workflow, arg, id=f"demo-{example}")
        try:
            result = await handle.result(timeout=60)
            console.print(f"result: {result}")
        except WorkflowFailureError as exc:
            console.print(f"outcome: {exc}")
        desc = await handle.describe()
    print_timeline(desc, console)
    problems = check()
    expected = _EXPECTED[(example, fail)]
    if desc.status.value != expected:
        problems.append(f"expected {expected}, got {desc.status.value}")
    for problem in problems:
        console.print(f"[red]inconsistent:[/red] {problem}")
    console.print(f"history: {url} (workflow {desc.id})")
    console.print(f"  inspect it: saga history {desc.id} --db {url}")
    return 1 if problems else 0


def _scenario(example: str, fail: str | None, activities: Any) -> tuple[Any, Any, Any]:
    workflows = _examples(example)[0]
    if example == "trip-booking":
        services = activities.services
        services.reset()
        trip = activities.TripRequest(name="alice", fail_at=fail)

        def check_trip() -> list[str]:
            problems = []
            for service in (services.car, services.hotel, services.flight):
                if fail and service.active:
                    problems.append(f"{service.kind} reservations left: {list(service.active)}")
                if any(n != 1 for n in service.cancellations.values()):
                    problems.append(f"{service.kind} cancelled twice: {service.cancellations}")
            return problems

        return workflows.TripBooking.run, trip, check_trip
    bank = activities.bank
    bank.reset()
    bank.deposit_outage = 2 if fail is None else 0
    transfer = activities.Transfer(
        source="alice",
        target="mallory" if fail == "deposit" else "bob",
        amount=500 if fail == "withdraw" else 50,
        reference="demo-1",
    )

    def check_bank() -> list[str]:
        want = {"alice": 50, "bob": 50} if fail is None else {"alice": 100, "bob": 0}
        return [] if bank.balances == want else [f"balances {bank.balances}, expected {want}"]

    return workflows.MoneyTransfer.run, transfer, check_bank
