"""``saga bench``: load generator and report, in the spirit of Temporal's maru."""

from __future__ import annotations

from saga.bench.driver import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
