"""Failure points: what the explorer breaks in one run, and how it is written down.

A point is one or more faults joined by ``+``; each fault is ``KIND:TARGET``:

=====================================  ===================================================
``fail:book_flight#3``                 every attempt of step 3 (``book_flight``) raises a
                                       retryable error, until the policy gives up (or the
                                       retry cap is reached, after which it succeeds)
``fail-nonretryable:book_flight#3``    step 3 raises a non-retryable error
``timeout:book_flight#3``              attempt 1 of step 3 does its work, then runs past its
                                       start-to-close timeout (the worker's timeout fires)
``duplicate-result:book_flight#3``     every result of step 3 reaches the coordinator twice
``redeliver:book_flight#3``            the task of step 3 is delivered twice: it runs twice
``crash:after-event-4``                the process dies right after event 4 is committed
``crash:before-event-5``               the process dies while committing event 5 (lost)
=====================================  ===================================================

``fail-nonretryable:book_flight#3+fail-nonretryable:cancel_car#4`` breaks a compensation
that only runs because an earlier fault made the saga compensate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STEP_KINDS = ("fail", "fail-nonretryable", "timeout", "duplicate-result", "redeliver")
"""Faults aimed at one step (an activity call, forward or compensation)."""

KIND_GROUPS = ("fail", "fail-nonretryable", "timeout", "duplicate-result", "redeliver", "crash")
"""What ``kinds=`` (``--kind``) selects by."""

_STEP = re.compile(r"^(?P<activity>[^#+:]+)#(?P<seq>\d+)$")
_CRASH = re.compile(r"^(?P<when>after|before)-event-(?P<event>\d+)$")


@dataclass(frozen=True)
class Fault:
    """One injected fault: aimed at a step (``activity``/``seq``) or at an event (crash)."""

    kind: str
    activity: str = ""
    seq: int = 0
    event: int = 0

    @property
    def is_crash(self) -> bool:
        """True for ``crash-after`` and ``crash-before``."""
        return self.kind in ("crash-after", "crash-before")

    def __str__(self) -> str:
        if self.kind == "crash-after":
            return f"crash:after-event-{self.event}"
        if self.kind == "crash-before":
            return f"crash:before-event-{self.event}"
        return f"{self.kind}:{self.activity}#{self.seq}"

    @classmethod
    def parse(cls, text: str) -> Fault:
        """The inverse of ``str()``; raises ValueError naming the accepted forms."""
        kind, _, target = text.strip().partition(":")
        if kind == "crash" and (m := _CRASH.match(target)):
            return cls(kind=f"crash-{m['when']}", event=int(m["event"]))
        if kind in STEP_KINDS and (m := _STEP.match(target)):
            return cls(kind=kind, activity=m["activity"], seq=int(m["seq"]))
        raise ValueError(
            f"bad failure point {text!r}: expected KIND:ACTIVITY#SEQ (KIND one of "
            f"{', '.join(STEP_KINDS)}) or crash:after-event-N / crash:before-event-N"
        )

    def describe(self, retry_cap: int) -> str:
        """One sentence for the report."""
        step = f"{self.activity}#{self.seq}"
        return {
            "fail": f"every attempt of {step} fails (retryable), at most {retry_cap}",
            "fail-nonretryable": f"{step} fails with a non-retryable error",
            "timeout": f"attempt 1 of {step} does its work, then exceeds start_to_close_timeout",
            "duplicate-result": f"every result of {step} is delivered twice",
            "redeliver": f"the task of {step} is delivered twice (the activity runs twice)",
            "crash-after": f"the process dies right after event {self.event} is committed; "
            "a new one replays the history",
            "crash-before": f"the process dies while committing event {self.event} "
            "(the commit is lost); a new one replays the history",
        }[self.kind]


@dataclass(frozen=True)
class FailurePoint:
    """The faults of one run; ``id`` is what ``--only`` takes."""

    faults: tuple[Fault, ...] = ()

    @property
    def id(self) -> str:
        """``fault+fault``; ``baseline`` for the run without faults."""
        return "+".join(str(f) for f in self.faults) or "baseline"

    def __str__(self) -> str:
        return self.id

    @property
    def crash(self) -> Fault | None:
        """The crash of this run, if any (at most one per run)."""
        return next((f for f in self.faults if f.is_crash), None)

    @property
    def group(self) -> str:
        """The kind of the last fault (what this point is about), e.g. ``crash``."""
        if not self.faults:
            return "baseline"
        last = self.faults[-1]
        return "crash" if last.is_crash else last.kind

    def step_fault(self, seq: int) -> Fault | None:
        """The fault aimed at step ``seq``, if any."""
        return next((f for f in self.faults if not f.is_crash and f.seq == seq), None)

    def plus(self, fault: Fault) -> FailurePoint:
        """The same faults and one more."""
        return FailurePoint((*self.faults, fault))

    def injects_compensation_failure(self, compensation_seqs: set[int]) -> bool:
        """True when a fault makes one of these compensation steps fail."""
        return any(
            f.seq in compensation_seqs and f.kind in ("fail", "fail-nonretryable", "timeout")
            for f in self.faults
        )

    @classmethod
    def parse(cls, text: str) -> FailurePoint:
        """Parse an id; ``baseline`` is the empty point."""
        text = text.strip()
        if text == "baseline":
            return cls()
        faults = tuple(Fault.parse(part) for part in text.split("+"))
        if sum(f.is_crash for f in faults) > 1:
            raise ValueError(f"bad failure point {text!r}: at most one crash per run")
        return cls(faults)

    def describe(self, retry_cap: int) -> str:
        """The faults in words, joined by ``; then``."""
        if not self.faults:
            return "no fault: the run every other point is compared with"
        return "; then ".join(f.describe(retry_cap) for f in self.faults)
