"""The coordinator's view of one workflow run: its code plus the engine's own state.

Workflow code only sees inputs and produces commands. Around it sits what the engine
tracks by itself and rebuilds from history the same way: which attempt of each step is
current, which timers are live, when a failure is retried and when it is final. Each
``on_*`` method turns one input into changes added to the pending :class:`WorkflowWrite`,
which the coordinator commits (fenced by ``version``) for many workflows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    ChildWorkflowCancelRequested,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowInitiated,
    ChildWorkflowStarted,
    ChildWorkflowStartFailed,
    EventAttributes,
    HistoryEvent,
    ParentInfo,
    TimerCancelled,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCancelRequested,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowFailed,
    WorkflowSignaled,
    WorkflowStarted,
    WorkflowStatus,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from saga.messages import ResultMessage, TaskMessage
from saga.store.base import InboxRow, TimerKind, TimerRow, WorkflowRecord, WorkflowWrite
from saga.tracing import Telemetry
from saga.workflow import WorkflowDefinition


@dataclass
class ActivityState:
    """A scheduled step that has not ended yet."""

    command: ActivityScheduled
    scheduled_at: datetime
    attempt: int = 1
    heartbeat_details: list[Any] = field(default_factory=list)


@dataclass
class ChildState:
    """A child workflow this run started and has not heard the end of."""

    command: ChildWorkflowInitiated
    started: bool = False
    cancel_requested: bool = False


Outcome = tuple[WorkflowStatus, Any, FailureInfo | None]
"""How a run ended: status, result, error."""


def _outcome_of(a: EventAttributes) -> Outcome | None:
    """The outcome a closing event records (None for any other event)."""
    if isinstance(a, WorkflowCompleted):
        return WorkflowStatus.COMPLETED, a.result, None
    if isinstance(a, WorkflowFailed):
        return a.status, None, a.failure
    if isinstance(a, WorkflowCancelled):
        error = to_failure(errors.CancelledError("workflow cancelled"), with_stack=False)
        return WorkflowStatus.CANCELLED, None, error
    if isinstance(a, WorkflowTerminated):
        error = to_failure(errors.TerminatedError(a.reason or "terminated"), with_stack=False)
        return WorkflowStatus.TERMINATED, None, error
    if isinstance(a, WorkflowTimedOut):
        error = to_failure(
            errors.TimeoutError(
                "workflow execution timeout", kind=errors.TimeoutKind.WORKFLOW_EXECUTION
            ),
            with_stack=False,
        )
        return WorkflowStatus.TIMED_OUT, None, error
    if isinstance(a, WorkflowContinuedAsNew):
        return WorkflowStatus.CONTINUED_AS_NEW, None, None
    return None


class Execution:
    """Engine state of one workflow run, advanced input by input.

    Children: a ``ChildWorkflowInitiated`` command leaves a CHILD_START timer (due now)
    and a ``ChildWorkflowCancelRequested`` a CHILD_CANCEL one; the coordinator acts on
    them after the commit (create the child, put a cancel in its inbox), so what the
    code decided is done even across a crash. A child's own end is in two steps: its
    closing events commit with a PARENT timer while its row stays RUNNING; when that
    fires the outcome goes to the parent's inbox and only then does the row close.
    """

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
        self.children: dict[int, ChildState] = {}
        self.parent: ParentInfo | None = None
        self.outcome: Outcome | None = None
        """How this run ended, once it did (from its closing event)."""
        self.parent_notified = False
        self.continued: WorkflowRecord | None = None
        """The next run, when this one continued as new (created by the commit)."""
        self.telemetry: Telemetry | None = None
        """Set by the coordinator: spans for new events (never for replayed ones)."""
        self.trace: dict[str, str] = {}
        """Context of the RunWorkflow span, kept in WorkflowStarted: later spans join it."""

    # --- rebuilding from history ---------------------------------------------------
    @classmethod
    def restore(
        cls, record: WorkflowRecord, events: list[HistoryEvent], definition: WorkflowDefinition
    ) -> Execution:
        """Replay ``events`` into a fresh execution; raises NondeterminismError on mismatch."""
        ex = cls(record, definition)
        try:
            ex._replay(events)
        except BaseException:
            ex.instance.dispose()  # never leave its coroutines to the garbage collector
            raise
        return ex

    def _replay(self, events: list[HistoryEvent]) -> None:
        i, n = 0, len(events)
        while i < n:
            event = events[i]
            j = i + 1
            if event.attributes.kind == "input":
                while j < n and events[j].attributes.kind != "input":
                    j += 1
                self._note(event)
                recorded = [e for e in events[i + 1 : j] if e.attributes.kind == "command"]
                self.instance.activate(event, recorded)
                for later in events[i + 1 : j]:
                    self._note(later)
            else:
                self._note(event)
            i = j
        self.next_event_id = n + 1

    def _note(self, event: HistoryEvent) -> None:
        a = event.attributes
        if isinstance(a, WorkflowStarted):
            self.started = True
            self.trace = a.trace_context
            self.parent = a.parent
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
        elif isinstance(a, ChildWorkflowInitiated):
            self.children[a.seq] = ChildState(a)
        elif isinstance(a, ChildWorkflowStarted):
            if (child := self.children.get(a.seq)) is not None:
                child.started = True
        elif isinstance(a, ChildWorkflowCancelRequested):
            if (child := self.children.get(a.seq)) is not None:
                child.cancel_requested = True
        elif isinstance(a, ChildWorkflowStartFailed | ChildWorkflowCompleted | ChildWorkflowFailed):
            self.children.pop(a.seq, None)
        elif isinstance(a, CLOSING_EVENTS):
            self.closed = True
            self.outcome = _outcome_of(a)

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
        event = HistoryEvent(event_id=self.next_event_id, timestamp=now, attributes=attrs)
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
        elif isinstance(a, ChildWorkflowInitiated):
            write.timers_add.append(self._timer(TimerKind.CHILD_START, a.seq, now))
        elif isinstance(a, ChildWorkflowCancelRequested):
            write.timers_add.append(self._timer(TimerKind.CHILD_CANCEL, a.seq, now))
        elif isinstance(a, WorkflowContinuedAsNew):
            self._continue_as_new(a, now)
        elif isinstance(a, WorkflowCompleted):
            self._close(WorkflowStatus.COMPLETED, now, result=a.result)
        elif isinstance(a, WorkflowFailed):
            self._close(a.status, now, error=a.failure)
        elif isinstance(a, WorkflowCancelled):
            cancelled = to_failure(errors.CancelledError("workflow cancelled"), with_stack=False)
            self._close(WorkflowStatus.CANCELLED, now, error=cancelled)

    def _close(
        self,
        status: WorkflowStatus,
        now: datetime,
        *,
        result: Any = None,
        error: FailureInfo | None = None,
    ) -> None:
        self.closed = True
        self.outcome = (status, result, error)
        if self.telemetry is not None:
            self.telemetry.complete_workflow(
                self.trace,
                workflow_type=self.record.workflow_type,
                workflow_id=self.workflow_id,
                run_id=self.run_id,
                status=status.value,
                error=error,
            )
        if self.parent is not None and status is not WorkflowStatus.CONTINUED_AS_NEW:
            self._close_child_run(now)
            return
        write = self._write()
        write.status, write.result, write.error, write.close_time = status, result, error, now

    def _close_child_run(self, now: datetime) -> None:
        """First step of a child's end: no more work of its own, a PARENT timer due now."""
        for seq in list(self.activities):
            self._end_step(seq)
        for seq in list(self.timers):
            self._drop_timer(TimerKind.TIMER, seq)
        for seq in self.children:
            self._drop_timer(TimerKind.CHILD_START, seq)
            self._drop_timer(TimerKind.CHILD_CANCEL, seq)
        self._drop_timer(TimerKind.WORKFLOW_TIMEOUT, 0)
        self._write().timers_add.append(self._timer(TimerKind.PARENT, 0, now))

    def parent_payload(self) -> dict[str, Any]:
        """The ``child_result`` inbox row for the parent of this (closed) child run."""
        assert self.parent is not None and self.outcome is not None
        status, result, error = self.outcome
        return {
            "seq": self.parent.seq,
            "parent_run_id": self.parent.run_id,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "status": status.value,
            "result": result,
            "failure": None if error is None else error.model_dump(mode="json"),
        }

    def finish_close(self, now: datetime) -> None:
        """Second step of a child's end (its parent has the outcome): close the row."""
        assert self.outcome is not None
        self.parent_notified = True
        write = self._write()
        status, write.result, write.error = self.outcome
        write.status, write.close_time = status, now
        write.timers_delete.append((TimerKind.PARENT, 0))

    def _continue_as_new(self, a: WorkflowContinuedAsNew, now: datetime) -> None:
        rec = self.record
        timeout = rec.execution_timeout
        if timeout is not None:  # the execution timeout spans every run
            deadline = rec.start_time + timedelta(seconds=timeout)
            timeout = max(0.0, (deadline - now).total_seconds())
        self.continued = WorkflowRecord(
            workflow_id=self.workflow_id,
            run_id=a.new_run_id,
            workflow_type=rec.workflow_type,
            status=WorkflowStatus.RUNNING,
            version=0,
            shard=rec.shard,
            input=a.args,
            start_time=now,
            trace_context=rec.trace_context,
            execution_timeout=timeout,
        )
        self._close(WorkflowStatus.CONTINUED_AS_NEW, now)

    def continued_inbox(self) -> list[tuple[str, dict[str, Any]]]:
        """Inbox rows the next run starts with: the link to a parent, if any."""
        if self.parent is None:
            return []
        return [("parent", self.parent.model_dump(mode="json"))]

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
            headers=self._dispatch_span(state),
            shard=self.record.shard,
        )

    def _dispatch_span(self, state: ActivityState) -> dict[str, str]:
        if self.telemetry is None:
            return self.trace
        c = state.command
        return self.telemetry.start_activity(
            self.trace,
            activity=c.activity,
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            seq=c.seq,
            attempt=state.attempt,
            queue=c.queue,
            compensation=c.compensation,
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

    def _signaled(self, name: str, args: list[Any]) -> WorkflowSignaled:
        if self.telemetry is not None:
            self.telemetry.event(f"Signal:{name}", self.trace, signal=name)
        return WorkflowSignaled(name=name, args=args)

    # --- inputs ------------------------------------------------------------------------
    def on_start(self, now: datetime, inbox: Sequence[InboxRow] = ()) -> None:
        """Record WorkflowStarted and run the code until it first blocks.

        A ``parent`` row among the workflow's first ``inbox`` rows makes it a child.
        """
        if self.started or self.closed:
            return
        for row in inbox:
            if row.kind == "parent":
                self.parent = ParentInfo.model_validate(row.payload)
        rec = self.record
        if rec.execution_timeout is not None:
            due = rec.start_time + timedelta(seconds=rec.execution_timeout)
            self._write().timers_add.append(self._timer(TimerKind.WORKFLOW_TIMEOUT, 0, due))
        trace = rec.trace_context
        if self.telemetry is not None:
            trace = self.telemetry.run_workflow(
                rec.trace_context, rec.workflow_type, rec.workflow_id, rec.run_id
            )
        self._input(
            WorkflowStarted(
                workflow_type=rec.workflow_type,
                args=rec.input,
                run_id=rec.run_id,
                trace_context=trace,
                execution_timeout=rec.execution_timeout,
                parent=self.parent,
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
            self._input(
                ActivityCompleted(
                    seq=msg.seq,
                    attempt=msg.attempt,
                    result=msg.result,
                    started_at=msg.started_at,
                    worker=msg.worker,
                ),
                now,
            )
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
                    started_at=msg.started_at,
                    worker=msg.worker,
                ),
                now,
            )
            write.timers_add.append(self._timer(TimerKind.RETRY, msg.seq, retry_at, state.attempt))
            return True
        self._end_step(msg.seq)
        self._input(
            ActivityFailed(
                seq=msg.seq,
                attempt=msg.attempt,
                failure=failure,
                started_at=msg.started_at,
                worker=msg.worker,
            ),
            now,
        )
        return True

    def on_timer(self, timer: TimerRow, now: datetime) -> bool:
        """A durable timer is due; False when it no longer matters."""
        if timer.kind in (TimerKind.CHILD_START, TimerKind.CHILD_CANCEL, TimerKind.PARENT):
            return False  # work outside this run (other workflows): the coordinator's
        if self.closed or timer.run_id != self.run_id:
            return False
        if timer.kind is TimerKind.TIMER:
            if timer.seq not in self.timers:
                return False
            self._write().timers_delete.append((TimerKind.TIMER, timer.seq))
            if self.telemetry is not None:
                self.telemetry.event("FireTimer", self.trace, seq=timer.seq)
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
        if row.id in self.inbox_applied or self.continued is not None:
            return False  # after a continue-as-new, what is left is for the next run
        self.inbox_applied.add(row.id)
        self._write().inbox_delete.append(row.id)
        if self.closed:
            return True
        if row.kind == "result":
            self.on_result(ResultMessage.model_validate(row.payload), now)
        elif row.kind == "signal":
            self._input(self._signaled(row.payload["name"], row.payload.get("args", [])), now)
        elif row.kind == "cancel":
            self._input(WorkflowCancelRequested(reason=row.payload.get("reason", "")), now)
        elif row.kind == "child_result":
            self._child_result(row.payload, now)
        elif row.kind == "terminate":
            reason = row.payload.get("reason", "")
            self._append(WorkflowTerminated(reason=reason), now)
            failure = to_failure(errors.TerminatedError(reason or "terminated"), with_stack=False)
            self._close(WorkflowStatus.TERMINATED, now, error=failure)
        return True

    # --- children ----------------------------------------------------------------------
    def on_child_started(self, seq: int, now: datetime) -> None:
        """The coordinator created the child of ``seq`` (or found it created)."""
        child = self.children.get(seq)
        self._drop_timer(TimerKind.CHILD_START, seq)
        if self.closed or child is None or child.started:
            return
        c = child.command
        self._input(ChildWorkflowStarted(seq=seq, workflow_id=c.workflow_id, run_id=c.run_id), now)

    def on_child_start_failed(self, seq: int, running_run_id: str, now: datetime) -> None:
        """The child's id is taken by another running workflow (run ``running_run_id``)."""
        child = self.children.get(seq)
        self._drop_timer(TimerKind.CHILD_START, seq)
        if self.closed or child is None or child.started:
            return
        self._input(
            ChildWorkflowStartFailed(
                seq=seq, workflow_id=child.command.workflow_id, running_run_id=running_run_id
            ),
            now,
        )

    def drop_timer(self, kind: TimerKind, seq: int) -> None:
        """Forget a timer the coordinator has dealt with."""
        self._drop_timer(kind, seq)

    def _child_result(self, p: dict[str, Any], now: datetime) -> None:
        seq = int(p.get("seq", 0))
        child = self.children.get(seq)
        if (
            p.get("parent_run_id") != self.run_id
            or child is None
            or child.command.workflow_id != p.get("workflow_id")
        ):
            return  # a duplicate, or meant for an earlier run
        run_id = str(p.get("run_id") or child.command.run_id)
        if not child.started:  # the outcome overtook the start (a crash in between)
            self.on_child_started(seq, now)
            if self.closed:
                return
        status = WorkflowStatus(p["status"])
        if status is WorkflowStatus.COMPLETED:
            self._input(
                ChildWorkflowCompleted(
                    seq=seq,
                    workflow_id=child.command.workflow_id,
                    run_id=run_id,
                    result=p.get("result"),
                ),
                now,
            )
            return
        raw = p.get("failure")
        failure = (
            FailureInfo.model_validate(raw)
            if raw is not None
            else FailureInfo(message=f"child ended {status.value}", type="ChildWorkflowError")
        )
        self._input(
            ChildWorkflowFailed(
                seq=seq,
                workflow_id=child.command.workflow_id,
                run_id=run_id,
                status=status,
                failure=failure,
            ),
            now,
        )
