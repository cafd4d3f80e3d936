"""The explorer's report: one row per failure point, as a rich table or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from saga._explore.checks import CheckResult

_STATUS_STYLE = {
    "COMPLETED": "green",
    "COMPENSATED": "yellow",
    "FAILED": "red",
    "COMPENSATION_FAILED": "bold red",
    "RUNNING": "bold red",
}


@dataclass(frozen=True)
class PointResult:
    """One failure point: what was injected, how the saga ended, each invariant."""

    point: str
    description: str
    status: str
    checks: list[CheckResult]
    reproduce: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every invariant held."""
        return all(c.ok for c in self.checks)

    @property
    def broken(self) -> list[CheckResult]:
        """The invariants that did not hold."""
        return [c for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``saga explore --json``)."""
        return {
            "point": self.point,
            "description": self.description,
            "status": self.status,
            "ok": self.ok,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
            "notes": self.notes,
            "reproduce": self.reproduce,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class ExploreReport:
    """Everything :func:`saga.testing.explore` ran, and what held.

    ``assert_ok()`` fails a test with every broken point and how to reproduce it.
    """

    workflow: str
    results: list[PointResult]
    skipped: list[tuple[str, str]]
    seconds: float
    retry_cap: int

    @property
    def ok(self) -> bool:
        """No invariant broke at any point."""
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[PointResult]:
        """The points at which some invariant broke."""
        return [r for r in self.results if not r.ok]

    def __getitem__(self, point: str) -> PointResult:
        for result in self.results:
            if result.point == point:
                return result
        raise KeyError(f"no failure point {point!r} in this report")

    @property
    def points(self) -> list[str]:
        """Ids of every point run, in order."""
        return [r.point for r in self.results]

    def summary(self) -> str:
        """One line: how many points, how many broke, how long it took."""
        broken = self.failures
        head = (
            f"{self.workflow}: {len(self.results)} failure points in {self.seconds:.2f}s, "
            f"{len(broken)} broke an invariant"
        )
        if broken:
            head += ": " + ", ".join(r.point for r in broken[:5])
            if len(broken) > 5:
                head += f" (+{len(broken) - 5} more)"
        return head

    def explain(self) -> str:
        """Every broken point: its invariants and how to reproduce it (plain text)."""
        lines = [self.summary()]
        for r in self.failures:
            lines.append(f"- {r.point} ({r.description}) -> {r.status}")
            lines += [f"    {c.name}: {c.detail}" for c in r.broken]
            lines.append(f"    reproduce: {r.reproduce}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise AssertionError naming every broken point (for tests)."""
        if not self.ok:
            raise AssertionError(self.explain())

    def to_json(self) -> dict[str, Any]:
        """JSON form (``saga explore --json``)."""
        return {
            "workflow": self.workflow,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "retry_cap": self.retry_cap,
            "points": [r.to_json() for r in self.results],
            "skipped": [{"point": p, "reason": why} for p, why in self.skipped],
        }

    def print(self, console: Console | None = None) -> None:
        """The table: failure point → final status → invariants; then what broke."""
        console = console or Console()
        table = Table(
            title=f"saga explore {self.workflow}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        table.add_column("failure point", overflow="fold", min_width=32, max_width=48)
        table.add_column("status", no_wrap=True)
        table.add_column("invariants", overflow="fold")
        for r in self.results:
            status = Text(r.status, style=_STATUS_STYLE.get(r.status, "magenta"))
            if r.ok:
                verdict = Text(f"✓ all {len(r.checks)} hold", style="green")
            else:
                verdict = Text("✗ " + ", ".join(c.name for c in r.broken), style="bold red")
            table.add_row(Text(r.point.replace("+", "+\n")), status, verdict)
        console.print(table)
        for point, why in self.skipped:
            console.print(f"[dim]skipped {point}: {why}[/dim]")
        notes = sorted({n for r in self.results for n in r.notes})
        for note in notes:
            console.print(f"[dim]note: {note}[/dim]")
        for r in self.failures:
            console.print(Text(f"✗ {r.point}", style="bold red") + Text(f"  {r.description}"))
            for c in r.broken:
                console.print(Text("    ") + Text(c.name, style="red") + Text(f": {c.detail}"))
            console.print(Text(f"    reproduce: {r.reproduce}"))
        style = "bold green" if self.ok else "bold red"
        console.print(Text(self.summary(), style=style))
