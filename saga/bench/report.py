"""The bench report: figures as JSON, and a self-contained HTML page with charts."""

from __future__ import annotations

import html
import json
from typing import Any

from pydantic import BaseModel


class Percentiles(BaseModel):
    """Latency distribution in milliseconds."""

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    mean: float = 0.0

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        """Percentiles of ``values`` (seconds) in milliseconds."""
        if not values:
            return cls()
        ordered = sorted(values)

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        return cls(
            p50=at(0.50),
            p95=at(0.95),
            p99=at(0.99),
            max=ordered[-1] * 1000,
            mean=sum(ordered) / len(ordered) * 1000,
        )


class Bucket(BaseModel):
    """One second of the run: sagas finished and their latency."""

    second: int
    finished: int
    p50_ms: float
    p99_ms: float


class BenchReport(BaseModel):
    """Everything ``saga bench`` measured; ``--json`` writes it as is."""

    scenario: str
    mode: str
    config: dict[str, Any]
    started: int
    by_status: dict[str, int]
    lost: list[str]
    stuck: list[str]
    inconsistent: list[str]
    duration_s: float
    workflows_per_s: float
    steps_per_s: float
    latency_ms: Percentiles
    schedule_to_start_ms: Percentiles
    per_step_overhead_ms: float
    timeline: list[Bucket]

    @property
    def ok(self) -> bool:
        """No saga lost, stuck or left inconsistent."""
        return not (self.lost or self.stuck or self.inconsistent)


def _polyline(points: list[tuple[float, float]], width: int, height: int, color: str) -> str:
    if not points:
        return ""
    max_x = max(x for x, _ in points) or 1.0
    max_y = max(y for _, y in points) or 1.0
    coords = " ".join(
        f"{40 + x / max_x * (width - 50):.1f},{height - 20 - y / max_y * (height - 40):.1f}"
        for x, y in points
    )
    return (
        f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>'
        f'<text x="4" y="16" font-size="11">{max_y:.1f}</text>'
        f'<text x="{width - 60}" y="{height - 4}" font-size="11">{max_x:.0f} s</text>'
    )


def _chart(title: str, series: list[tuple[str, str, list[tuple[float, float]]]]) -> str:
    width, height = 640, 220
    lines = "".join(_polyline(points, width, height, color) for _, color, points in series)
    legend = " ".join(
        f'<span style="color:{color}">■ {html.escape(name)}</span>' for name, color, _ in series
    )
    return (
        f"<h2>{html.escape(title)}</h2><div>{legend}</div>"
        f'<svg width="{width}" height="{height}" style="border:1px solid #ccc">'
        f'<line x1="40" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#999"/>'
        f'<line x1="40" y1="10" x2="40" y2="{height - 20}" stroke="#999"/>{lines}</svg>'
    )


def render_html(report: BenchReport) -> str:
    """A page a person can read: headline figures, status counts, two charts."""
    t = report.timeline
    latency = _chart(
        "Latency over time (ms)",
        [
            ("p50", "#1f77b4", [(b.second, b.p50_ms) for b in t]),
            ("p99", "#d62728", [(b.second, b.p99_ms) for b in t]),
        ],
    )
    throughput = _chart(
        "Throughput over time (sagas finished per second)",
        [("finished/s", "#2ca02c", [(b.second, float(b.finished)) for b in t])],
    )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in report.by_status.items()
    )
    lat = report.latency_ms
    verdict = "OK" if report.ok else "FAILED: lost, stuck or inconsistent sagas"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>saga bench: {html.escape(report.scenario)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}</style>
</head><body>
<h1>saga bench: {html.escape(report.scenario)} ({html.escape(report.mode)})</h1>
<p><b>{verdict}</b> — {report.started} sagas in {report.duration_s:.1f} s:
{report.workflows_per_s:.1f} sagas/s, {report.steps_per_s:.1f} steps/s</p>
<table><tr><th>latency</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>
<tr><td>end to end (ms)</td><td>{lat.p50:.1f}</td><td>{lat.p95:.1f}</td><td>{lat.p99:.1f}</td>
<td>{lat.max:.1f}</td></tr>
<tr><td>schedule to start (ms)</td><td>{report.schedule_to_start_ms.p50:.1f}</td>
<td>{report.schedule_to_start_ms.p95:.1f}</td><td>{report.schedule_to_start_ms.p99:.1f}</td>
<td>{report.schedule_to_start_ms.max:.1f}</td></tr></table>
<p>per-step overhead: {report.per_step_overhead_ms:.2f} ms</p>
<h2>Final status</h2><table>{rows}</table>
{latency}{throughput}
<h2>Configuration</h2><pre>{html.escape(json.dumps(report.config, indent=2))}</pre>
</body></html>"""
