"""``saga demo`` as a user runs it: a real process, its exit code and its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from saga.demo import _EXPECTED

ROOT = Path(__file__).resolve().parents[2]


def saga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saga", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("example", "fail"),
    sorted(_EXPECTED, key=lambda k: (k[0], k[1] or "")),
    ids=lambda v: v or "ok",
)
def test_every_demo_variant_behaves_as_designed(example: str, fail: str | None) -> None:
    done = saga("demo", example, *(["--fail", fail] if fail else []))

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"status: {_EXPECTED[(example, fail)]}" in done.stdout
    assert "inconsistent" not in done.stdout


def test_demo_with_an_unknown_step_to_fail_exits_1_with_one_line() -> None:
    done = saga("demo", "trip-booking", "--fail", "boat")

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "car, flight, hotel" in lines[0]


@pytest.mark.parametrize("argv", [["demo", "cruise"], ["frobnicate"]], ids=["example", "command"])
def test_bad_usage_exits_2(argv: list[str]) -> None:
    done = saga(*argv)

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "invalid choice" in done.stderr
