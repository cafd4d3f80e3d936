"""Parent and child workflows: what the coordinator does outside one workflow's history.

A child is a workflow like any other (its own id, history and row), linked to its
parent by events in both histories and by durable timers, so every hand-over survives
a crash and happens at least once (duplicates are ignored by sequence number):

* the parent's ``ChildWorkflowInitiated(seq)`` commits with a CHILD_START timer, due at
  once. When it fires, the child's row is created together with a ``parent`` inbox row
  (one transaction), which becomes ``WorkflowStarted.parent`` in the child's history;
  then the parent records ``ChildWorkflowStarted`` (or ``ChildWorkflowStartFailed``).
* a child's end commits its closing events with a PARENT timer while its row stays
  RUNNING; when that fires, the outcome goes to the parent's inbox (``child_result``)
  and only then is the child's row closed. The parent turns the row into
  ``ChildWorkflowCompleted`` / ``ChildWorkflowFailed``.
* ``ChildWorkflowCancelRequested(seq)`` commits with a CHILD_CANCEL timer; when it
  fires, a ``cancel`` goes to the child's inbox.
* when a parent closes with children still running, each is asked to cancel (best
  effort, after the commit): a child never outlives its parent unnoticed.
"""

from __future__ import annotations

import logging
from datetime import datetime

from saga._runtime.execution import Execution
from saga.client import DEFAULT_SHARDS, shard_of
from saga.errors import TransportError, WorkflowAlreadyStartedError, WorkflowNotFoundError
from saga.history import ParentInfo, WorkflowStatus
from saga.messages import ResultMessage
from saga.store.base import Store, TimerKind, TimerRow, WorkflowRecord
from saga.transports.base import Transport

log = logging.getLogger("saga.coordinator")

LINK_TIMERS = frozenset({TimerKind.CHILD_START, TimerKind.CHILD_CANCEL, TimerKind.PARENT})
"""Timer kinds whose work is done by :class:`Links` rather than by the execution."""


class Links:
    """The coordinator's side of parent/child hand-overs."""

    def __init__(self, store: Store, transport: Transport) -> None:
        self.store = store
        self.transport = transport
        self.shard_count = DEFAULT_SHARDS  # the database's, set when the coordinator starts

    async def on_timer(self, ex: Execution, timer: TimerRow, now: datetime) -> None:
        """Act on a CHILD_START, CHILD_CANCEL or PARENT timer of ``ex``."""
        if timer.run_id != ex.run_id:
            return  # an earlier run's (its closing write deleted it; this run's may share the key)
        if timer.kind is TimerKind.PARENT:
            await self._notify_parent(ex, now)
        elif timer.kind is TimerKind.CHILD_START:
            await self._start_child(ex, timer.seq, now)
        else:
            await self._cancel_child(ex, timer.seq)

    async def after_close(self, ex: Execution) -> None:
        """``ex`` closed (committed): ask the children it leaves behind to cancel."""
        for child in ex.children.values():
            if child.started:
                reason = f"parent workflow {ex.workflow_id!r} closed"
                await self._request_cancel(child.command.workflow_id, reason)

    async def _notify_parent(self, ex: Execution, now: datetime) -> None:
        if ex.parent is None or ex.outcome is None or ex.parent_notified:
            ex.drop_timer(TimerKind.PARENT, 0)
            return
        try:
            await self.store.add_inbox(ex.parent.workflow_id, "child_result", ex.parent_payload())
        except WorkflowNotFoundError:
            log.info(
                "parent already closed; child outcome not delivered",
                extra={"workflow_id": ex.workflow_id, "parent": ex.parent.workflow_id},
            )
        else:
            await self._wake(ex.parent.workflow_id)
        ex.finish_close(now)

    async def _start_child(self, ex: Execution, seq: int, now: datetime) -> None:
        child = ex.children.get(seq)
        if ex.closed or child is None or child.started:
            ex.drop_timer(TimerKind.CHILD_START, seq)
            return
        c = child.command
        if not await self._already_created(c.workflow_id, c.run_id):
            record = WorkflowRecord(
                workflow_id=c.workflow_id,
                run_id=c.run_id,
                workflow_type=c.workflow_type,
                status=WorkflowStatus.RUNNING,
                version=0,
                shard=shard_of(c.workflow_id, self.shard_count),
                input=c.args,
                start_time=now,
                trace_context=ex.record.trace_context,
                execution_timeout=c.execution_timeout,
            )
            link = ParentInfo(workflow_id=ex.workflow_id, run_id=ex.run_id, seq=seq)
            try:
                await self.store.create_workflow_with_inbox(
                    record, [("parent", link.model_dump(mode="json"))]
                )
            except WorkflowAlreadyStartedError as exc:
                ex.on_child_start_failed(seq, exc.run_id, now)
                return
        if child.cancel_requested:
            await self._request_cancel(c.workflow_id, f"parent {ex.workflow_id!r} cancelled it")
        await self._wake(c.workflow_id)
        ex.on_child_started(seq, now)

    async def _already_created(self, workflow_id: str, run_id: str) -> bool:
        """Whether an earlier attempt (before a crash) created this child run."""
        existing = await self.store.get_workflow(workflow_id)
        if existing is None:
            return False
        if existing.run_id == run_id:
            return True
        # It may have moved on since (continue-as-new): its history says if it was ours.
        return bool(await self.store.load_history(workflow_id, run_id))

    async def _cancel_child(self, ex: Execution, seq: int) -> None:
        child = ex.children.get(seq)
        ex.drop_timer(TimerKind.CHILD_CANCEL, seq)
        if child is not None and child.started:  # not started: the start passes it on
            reason = f"parent workflow {ex.workflow_id!r} cancelled it"
            await self._request_cancel(child.command.workflow_id, reason)

    async def _request_cancel(self, workflow_id: str, reason: str) -> None:
        try:
            await self.store.add_inbox(workflow_id, "cancel", {"reason": reason})
        except WorkflowNotFoundError:
            return  # it ended already
        await self._wake(workflow_id)

    async def _wake(self, workflow_id: str) -> None:
        # Best effort, like a client's: the coordinators' sweep finds the work anyway.
        try:
            await self.transport.publish_result(
                ResultMessage(
                    kind="wake",
                    workflow_id=workflow_id,
                    wake_reason=None,
                    shard=shard_of(workflow_id, self.shard_count),
                )
            )
        except TransportError as exc:
            log.info("wake not sent: %s", exc, extra={"workflow_id": workflow_id})
