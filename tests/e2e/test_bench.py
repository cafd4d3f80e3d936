"""``saga bench`` itself: the report has every field, counts add up, a broken run exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster

pytestmark = pytest.mark.integration

FIELDS = {
    "scenario",
    "mode",
    "config",
    "started",
    "by_status",
    "lost",
    "stuck",
    "inconsistent",
    "duration_s",
    "workflows_per_s",
    "steps_per_s",
    "latency_ms",
    "schedule_to_start_ms",
    "per_step_overhead_ms",
    "timeline",
}


def test_an_embedded_run_reports_every_field_and_its_counts_add_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    done = cluster.saga(
        "bench",
        "--workflows",
        "30",
        "--concurrency",
        "5",
        "--failure-rate",
        "0.4",
        "--json",
        str(report),
        "--html",
        str(page),
        "--quiet",
        connect=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert set(data) == FIELDS
    assert data["mode"] == "embedded" and data["started"] == 30
    assert sum(data["by_status"].values()) == 30
    assert set(data["by_status"]) <= {"COMPLETED", "COMPENSATED"}
    assert data["by_status"].get("COMPENSATED", 0) > 0, "failure rate 0.4 compensates some"
    assert sum(b["finished"] for b in data["timeline"]) == 30
    assert data["lost"] == data["stuck"] == data["inconsistent"] == []
    lat = data["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert data["schedule_to_start_ms"]["max"] > 0
    html = page.read_text()
    assert html.count("<svg") == 2 and "trip-booking" in html
    assert "30 sagas" in done.stdout


def test_an_embedded_run_whose_sagas_cannot_finish_exits_1_naming_them(cluster: Cluster) -> None:
    done = cluster.saga(
        "bench",
        "--scenario",
        "noop",
        "--workflows",
        "3",
        "--concurrency",
        "3",
        "--activity-time",
        "60",
        "--timeout",
        "1",
        "--quiet",
        connect=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "3 stuck: bench-" in done.stderr


@pytest.mark.slow
def test_a_distributed_run_with_no_worker_left_exits_1_naming_the_stuck_sagas(
    cluster: Cluster,
) -> None:
    done = cluster.saga(
        "bench",
        "--scenario",
        "noop",
        "--workflows",
        "2",
        "--concurrency",
        "2",
        "--workers",
        "0",
        "--timeout",
        "2",
        "--quiet",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(distributed)" in done.stdout
    assert "2 stuck: bench-" in done.stderr


@pytest.mark.slow
def test_a_small_distributed_run_completes_every_saga(cluster: Cluster, tmp_path: Path) -> None:
    report = tmp_path / "d.json"
    done = cluster.saga(
        "bench",
        "--workflows",
        "10",
        "--concurrency",
        "5",
        "--json",
        str(report),
        "--quiet",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["mode"] == "distributed" and data["by_status"] == {"COMPLETED": 10}
