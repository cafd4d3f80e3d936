"""Durable state: workflows, their histories, the outbox, timers and the inbox."""

from __future__ import annotations

from saga.store.base import (
    InboxRow,
    OutboxRow,
    Store,
    TimerKind,
    TimerRow,
    WorkflowPage,
    WorkflowRecord,
    WorkflowWrite,
    WriteBatch,
    open_store,
)

__all__ = [
    "InboxRow",
    "OutboxRow",
    "Store",
    "TimerKind",
    "TimerRow",
    "WorkflowPage",
    "WorkflowRecord",
    "WorkflowWrite",
    "WriteBatch",
    "open_store",
]
