"""A workflow's steps and compensations drawn as a timeline in the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from saga.client import WorkflowDescription

_WIDTH = 30
_STYLE = {
    "COMPLETED": "green",
    "FAILED": "red",
    "RETRYING": "yellow",
    "SCHEDULED": "cyan",
    "CANCELLED": "magenta",
}


def _bar(start: float, end: float, total: float, style: str) -> Text:
    left = int(_WIDTH * start / total) if total else 0
    width = max(1, int(_WIDTH * (end - start) / total) if total else 1)
    left = min(left, _WIDTH - width)
    return Text(" " * left) + Text("█" * width, style=style) + Text(" " * (_WIDTH - left - width))


def print_timeline(desc: WorkflowDescription, console: Console | None = None) -> None:
    """Print each step with status, attempts, duration and a bar over the saga's time.

    On a narrow terminal (under 130 columns) the bars are left out and errors are listed
    under the table, so nothing is cut to an ellipsis.
    """
    console = console or Console()
    wide = console.width >= 130
    end = desc.close_time or max(
        (s.closed_at or s.scheduled_at for s in desc.steps), default=desc.start_time
    )
    total = max((end - desc.start_time).total_seconds(), 1e-6)
    table = Table(title=f"{desc.type} {desc.id}", title_justify="left")
    columns = ("#", "step", "status", "attempts", "duration") + (("timeline",) if wide else ())
    for column in columns:
        table.add_column(column, no_wrap=True)
    if wide:
        table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=60)
    errors: list[str] = []
    for step in desc.steps:
        start = (step.scheduled_at - desc.start_time).total_seconds()
        stop = ((step.closed_at or end) - desc.start_time).total_seconds()
        style = _STYLE.get(step.status, "white")
        name = f"↩ {step.activity}" if step.compensation else step.activity
        row: list[str | Text] = [
            str(step.seq),
            name,
            Text(step.status, style=style),
            str(step.attempts),
            f"{stop - start:.3f}s",
        ]
        if wide:
            row += [
                _bar(start, stop, total, style),
                (step.error.describe() if step.error else "")[:80],
            ]
        elif step.error:
            errors.append(f"#{step.seq} {step.activity}: {step.error.describe()}")
        table.add_row(*row)
    console.print(table)
    for line in errors:
        console.print(Text(line, style="red"))
    status_style = "green" if desc.status.value in ("COMPLETED", "COMPENSATED") else "red"
    console.print(
        Text("status: ")
        + Text(desc.status.value, style=f"bold {status_style}")
        + Text(f"   events: {desc.history_length}   took: {total:.3f}s (workflow time)")
    )
    if desc.error is not None:
        console.print(f"error: {desc.error.describe()}")
    for warning in desc.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
