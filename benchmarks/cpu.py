"""Who used the CPU during a run: per-process CPU seconds from ``/proc``, sampled.

A background thread reads ``utime + stime`` of every process of interest (and the
machine's busy time from ``/proc/stat``) every ``interval`` seconds. :meth:`CpuSampler.split`
then gives the CPU seconds each group of processes used between two instants (linear
between samples), so a run whose exact end is only known afterwards is still accounted
for; processes born during the window count from zero, those that died keep their last
reading.
"""

from __future__ import annotations

import bisect
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
_BACKEND = re.compile(r"\(\d+\)|\[local\]")

Classifier = Callable[[int, str, int, str], str | None]
"""``(pid, comm, ppid, cmdline) -> group`` (None: not of interest)."""


def stat(pid: int) -> tuple[str, int, float] | None:
    """``(comm, ppid, CPU seconds)`` of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def cmdline(pid: int) -> str:
    """The command line (a PostgreSQL backend's shows its database), or ""."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / TICK


def servers(database: str) -> Classifier:
    """Groups for PostgreSQL (this database's backends, the server's own processes, other
    databases' backends) and RabbitMQ (the whole ``beam.smp`` node)."""

    def classify(pid: int, comm: str, ppid: int, line: str) -> str | None:
        if comm == "beam.smp":
            return "RabbitMQ (beam.smp, whole node)"
        if comm != "postgres":
            return None
        if f" {database} " in f"{line} ":
            return "PostgreSQL backends of this run"
        if _BACKEND.search(line):
            return "PostgreSQL backends of other databases"
        return "PostgreSQL server processes (WAL writer, checkpointer, …)"

    return classify


@dataclass
class _Series:
    group: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def at(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t)
        if i == 0:
            return 0.0  # born after t
        if i == len(self.times):
            return self.cpu[-1]
        t0, t1, c0, c1 = self.times[i - 1], self.times[i], self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1


class CpuSampler:
    """Samples the CPU time of classified processes in a thread, until :meth:`stop`.

    Args:
        classify: Which group a process belongs to (None: ignore it). Called once per pid.
        interval: Seconds between samples.
    """

    def __init__(self, classify: Classifier, interval: float = 0.2) -> None:
        self._classify = classify
        self._interval = interval
        self._me = os.getpid()
        self._known: dict[int, str | None] = {}
        self._series: dict[int, _Series] = {}
        self._busy = _Series("machine")
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        """Read every process of interest now."""
        now = time.monotonic()
        readings: list[tuple[int, float]] = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            got = stat(pid)
            if got is None:
                continue
            comm, ppid, cpu = got
            if pid not in self._known:
                group = self._classify(pid, comm, ppid, cmdline(pid))
                if group is None and ppid == self._me:
                    continue  # maybe forked, not yet exec'ed: look again next time
                self._known[pid] = group
            if self._known[pid] is not None:
                readings.append((pid, cpu))
        busy = machine_busy()
        with self._lock:
            for pid, cpu in readings:
                series = self._series.setdefault(pid, _Series(str(self._known[pid])))
                series.times.append(now)
                series.cpu.append(cpu)
            self._busy.times.append(now)
            self._busy.cpu.append(busy)

    def split(self, began: float, ended: float) -> dict[str, float]:
        """CPU seconds per group between two ``time.monotonic()`` instants, with the
        machine's busy total under ``"machine busy"``."""
        out: dict[str, float] = {}
        with self._lock:
            for series in self._series.values():
                used = series.at(ended) - series.at(began)
                out[series.group] = out.get(series.group, 0.0) + max(0.0, used)
            out["machine busy"] = self._busy.at(ended) - self._busy.at(began)
        return out
