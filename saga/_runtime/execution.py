"""The coordinator's view of one workflow run: its code plus the engine's own state.

Workflow code only sees inputs and produces commands. Around it sits what the engine
tracks by itself and rebuilds from history the same way: which attempt of each step is
current, which timers are live, when a failure is retried and when it is final. Each
``on_*`` method turns one input into changes added to the pending :class:`WorkflowWrite`,
which the coordinator commits (fenced by ``version``) for many workflows at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from saga import errors
from saga._runtime.instance import WorkflowInstance
from saga.failure import FailureInfo, to_failure
from saga.history import (
    CLOSING_EVENTS,
    ActivityAttemptFailed,
    ActivityCancelRequested,
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    EventAttributes,
    HistoryEvent,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCancelRequested,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowSignaled,
    WorkflowStarted,
    WorkflowStatus,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from saga.messages import ResultMessage, TaskMessage
from saga.store.base import InboxRow, TimerKind, TimerRow, WorkflowRecord, WorkflowWrite
from saga.workflow import WorkflowDefinition


@dataclass
class ActivityState:
    """A scheduled step that has not ended yet."""

    command: ActivityScheduled
    scheduled_at: datetime
    attempt: int = 1
    heartbeat_details: list[Any] = field(default_factory=list)


class Execution:
    """Engine state of one workflow run, advanced input by input."""

    def __init__(self, record: WorkflowRecord, definition: WorkflowDefinition) -> None:
        self.record = record
        self.workflow_id = record.workflow_id
        self.run_id = record.run_id
        self.version = record.version
        self.instance = WorkflowInstance(definition, record.workflow_id, record.run_id)
        self.next_event_id = 1
        self.activities: dict[int, ActivityState] = {}
        self.timers: set[int] = set()
        self.started = False
        self.closed = False
        self.inbox_applied: set[int] = set()
        self.pending: WorkflowWrite | None = None

    # --- rebuilding from history ---------------------------------------------------
    @classmethod
    def restore(
        cls, record: WorkflowRecord, events: list[HistoryEvent], definition: WorkflowDefinition
    ) -> Execution:
        """Replay ``events`` into a fresh execution; raises NondeterminismError on mismatch."""
        ex = cls(record, definition)
        i, n = 0, len(events)
        while i < n:
            event = events[i]
            j = i + 1
            if event.attributes.kind == "input":
                while j < n and events[j].attributes.kind != "input":
                    j += 1
                ex._note(event)
                recorded = [e for e in events[i + 1 : j] if e.attributes.kind == "command"]
                ex.instance.activate(event, recorded)
                for later in events[i + 1 : j]:
                    ex._note(later)
            else:
                ex._note(event)
            i = j
        ex.next_event_id = n + 1
        return ex

    def _note(self, event: HistoryEvent) -> None:
        a = event.attributes
        if isinstance(a, WorkflowStarted):
            self.started = True
        elif isinstance(a, ActivityScheduled):
            self.activities[a.seq] = ActivityState(a, event.timestamp)
        elif isinstance(a, ActivityAttemptFailed):
            if (state := self.activities.get(a.seq)) is not None:
                state.attempt = a.attempt + 1
                state.heartbeat_details = a.heartbeat_details
        elif isinstance(a, ActivityCompleted | ActivityFailed | ActivityCancelRequested):
            self.activities.pop(a.seq, None)
        elif isinstance(a, TimerStarted):
            self.timers.add(a.seq)
        elif isinstance(a, TimerFired | TimerCancelled):
            self.timers.discard(a.seq)
        elif isinstance(a, CLOSING_EVENTS):
            self.closed = True

    # --- writing -----------------------------------------------------------------------
    def _write(self) -> WorkflowWrite:
        if self.pending is None:
            self.pending = WorkflowWrite(self.workflow_id, self.run_id, self.version)
        return self.pending

    def take_write(self) -> WorkflowWrite | None:
        """The changes accumulated since the last commit (and forget them)."""
        write, self.pending = self.pending, None
        return write

    def committed(self) -> None:
        """The last taken write is durable: advance the fence."""
        self.version += 1
        self.inbox_applied.clear()

    def _append(self, attrs: EventAttributes, now: datetime) -> HistoryEvent:
        event = HistoryEvent.model_construct(
            event_id=self.next_event_id, timestamp=now, attributes=attrs
        )
        self.next_event_id += 1
        self._note(event)
        self._write().events.append(event)
        return event

    def _input(self, attrs: EventAttributes, now: datetime) -> None:
        event = self._append(attrs, now)
        for command in self.instance.activate(event, None):
            self._effects(self._append(command, now), now)

    def _effects(self, event: HistoryEvent, now: datetime) -> None:
        a, write = event.attributes, self._write()
        if isinstance(a, ActivityScheduled):
            write.outbox_add.append(self._task(self.activities[a.seq]))
            if a.schedule_to_close_timeout is not None:
                due = now + timedelta(seconds=a.schedule_to_close_timeout)
                write.timers_add.append(self._timer(TimerKind.SCHEDULE_TO_CLOSE, a.seq, due))
        elif isinstance(a, ActivityCancelRequested):
            self._end_step(a.seq)
        elif isinstance(a, TimerStarted):
            write.timers_add.append(self._timer(TimerKind.TIMER, a.seq, a.fire_at))
        elif isinstance(a, TimerCancelled):
            self._drop_timer(TimerKind.TIMER, a.seq)
        elif isinstance(a, WorkflowCompleted):
            self._close(WorkflowStatus.COMPLETED, now, result=a.result)
        elif isinstance(a, WorkflowFailed):
            self._close(a.status, now, error=a.failure)
        elif isinstance(a, WorkflowCancelled):
            cancelled = to_failure(errors.CancelledError("workflow cancelled"), with_stack=False)
            self._close(WorkflowStatus.CANCELLED, now, error=cancelled)

    def _close(
        self, status: WorkflowStatus, now: datetime, *, result: Any = None,
        error: FailureInfo | None = None,
    ) -> None:
        write = self._write()
        write.status, write.result, write.error, write.close_time = status, result, error, now
        self.closed = True

    def _task(self, state: ActivityState) -> TaskMessage:
        c = state.command
        return TaskMessage(
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            workflow_type=self.record.workflow_type,
            seq=c.seq,
            attempt=state.attempt,
            activity=c.activity,
            queue=c.queue,
            args=c.args,
            scheduled_at=state.scheduled_at,
            start_to_close_timeout=c.start_to_close_timeout,
            heartbeat_timeout=c.heartbeat_timeout,
            compensation=c.compensation,
            heartbeat_details=state.heartbeat_details,
            headers=self.record.trace_context,
        )

    def _timer(self, kind: TimerKind, seq: int, due: datetime, attempt: int = 0) -> TimerRow:
        return TimerRow(
            self.workflow_id, self.run_id, kind, seq, due, attempt, shard=self.record.shard
        )

    def _drop_timer(self, kind: TimerKind, seq: int) -> None:
        write = self._write()
        before = len(write.timers_add)
        write.timers_add = [t for t in write.timers_add if (t.kind, t.seq) != (kind, seq)]
        if len(write.timers_add) == before:
            write.timers_delete.append((kind, seq))

    def _end_step(self, seq: int) -> None:
        """Forget the step's task and its timers, committed or still pending."""
        write = self._write()
        write.outbox_add = [m for m in write.outbox_add if m.seq != seq]
        write.outbox_delete_seqs.append(seq)
        self._drop_timer(TimerKind.RETRY, seq)
        self._drop_timer(TimerKind.SCHEDULE_TO_CLOSE, seq)

    # --- inputs ------------------------------------------------------------------------
    def on_start(self, now: datetime) -> None:
        """Record WorkflowStarted and run the code until it first blocks."""
        if self.started or self.closed:
            return
        rec = self.record
        if rec.execution_timeout is not None:
            due = rec.start_time + timedelta(seconds=rec.execution_timeout)
            self._write().timers_add.append(self._timer(TimerKind.WORKFLOW_TIMEOUT, 0, due))
        self._input(
            WorkflowStarted(
                workflow_type=rec.workflow_type,
                args=rec.input,
                run_id=rec.run_id,
                trace_context=rec.trace_context,
                execution_timeout=rec.execution_timeout,
            ),
            max(now, rec.start_time),
        )

    def on_result(self, msg: ResultMessage, now: datetime) -> bool:
        """Apply a worker's report; False when it is a duplicate or stale (ignored)."""
        state = self.activities.get(msg.seq)
        if self.closed or msg.run_id != self.run_id or state is None:
            return False
        if msg.attempt != state.attempt:
            return False
        if msg.kind == "completed":
            self._end_step(msg.seq)
            self._input(ActivityCompleted(seq=msg.seq, attempt=msg.attempt, result=msg.result), now)
            return True
        failure = msg.failure or FailureInfo(message="unknown failure", type="Error")
        policy = state.command.retry_policy
        retry_at = now + policy.backoff(msg.attempt)
        deadline = (
            state.scheduled_at + timedelta(seconds=state.command.schedule_to_close_timeout)
            if state.command.schedule_to_close_timeout is not None
            else None
        )
        if policy.allows_retry(msg.attempt, failure.type, failure.non_retryable) and (
            deadline is None or retry_at < deadline
        ):
            write = self._write()
            write.outbox_add = [m for m in write.outbox_add if m.seq != msg.seq]
            write.outbox_delete_seqs.append(msg.seq)
            self._append(
                ActivityAttemptFailed(
                    seq=msg.seq,
                    attempt=msg.attempt,
                    failure=failure,
                    next_attempt_at=retry_at,
                    heartbeat_details=msg.heartbeat_details,
                ),
                now,
            )
            write.timers_add.append(self._timer(TimerKind.RETRY, msg.seq, retry_at, state.attempt))
            return True
        self._end_step(msg.seq)
        self._input(ActivityFailed(seq=msg.seq, attempt=msg.attempt, failure=failure), now)
        return True

    def on_timer(self, timer: TimerRow, now: datetime) -> bool:
        """A durable timer is due; False when it no longer matters."""
        if self.closed or timer.run_id != self.run_id:
            return False
        if timer.kind is TimerKind.TIMER:
            if timer.seq not in self.timers:
                return False
            self._write().timers_delete.append((TimerKind.TIMER, timer.seq))
            self._input(TimerFired(seq=timer.seq), now)
            return True
        if timer.kind is TimerKind.WORKFLOW_TIMEOUT:
            self._append(WorkflowTimedOut(), now)
            failure = to_failure(
                errors.TimeoutError(
                    "workflow execution timeout", kind=errors.TimeoutKind.WORKFLOW_EXECUTION
                ),
                with_stack=False,
            )
            self._close(WorkflowStatus.TIMED_OUT, now, error=failure)
            return True
        state = self.activities.get(timer.seq)
        if state is None:
            return False
        if timer.kind is TimerKind.RETRY:
            if timer.attempt != state.attempt:
                return False
            write = self._write()
            write.timers_delete.append((TimerKind.RETRY, timer.seq))
            write.outbox_add.append(self._task(state))
            return True
        failure = to_failure(
            errors.TimeoutError(
                f"activity {state.command.activity!r} exceeded its schedule-to-close timeout "
                f"of {state.command.schedule_to_close_timeout}s",
                kind=errors.TimeoutKind.SCHEDULE_TO_CLOSE,
            ),
            with_stack=False,
        )
        self._end_step(timer.seq)
        self._input(ActivityFailed(seq=timer.seq, attempt=state.attempt, failure=failure), now)
        return True

    def on_inbox(self, row: InboxRow, now: datetime) -> bool:
        """Apply a client's signal, cancel or terminate request (or a stashed result)."""
        if row.id in self.inbox_applied:
            return False
        self.inbox_applied.add(row.id)
        self._write().inbox_delete.append(row.id)
        if self.closed:
            return True
        if row.kind == "result":
            self.on_result(ResultMessage.model_validate(row.payload), now)
        elif row.kind == "signal":
            self._input(
                WorkflowSignaled(name=row.payload["name"], args=row.payload.get("args", [])), now
            )
        elif row.kind == "cancel":
            self._input(WorkflowCancelRequested(reason=row.payload.get("reason", "")), now)
        elif row.kind == "terminate":
            reason = row.payload.get("reason", "")
            self._append(WorkflowTerminated(reason=reason), now)
            failure = to_failure(errors.TerminatedError(reason or "terminated"), with_stack=False)
            self._close(WorkflowStatus.TERMINATED, now, error=failure)
        return True
