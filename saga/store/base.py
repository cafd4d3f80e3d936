"""The Store protocol and the records it reads and writes.

Only the coordinator appends history, and only through :meth:`Store.commit`, whose
every workflow write is fenced by the version it read: the conditional update is what
keeps two coordinators from advancing one workflow (invariant 5). Clients write new
workflows and inbox rows (signals, cancel and terminate requests), never history.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from saga.failure import FailureInfo
from saga.history import HistoryEvent, WorkflowStatus
from saga.messages import TaskMessage


class TimerKind(enum.StrEnum):
    """What happens when a timer row is due."""

    TIMER = "timer"  # workflow.sleep / asyncio.sleep: TimerFired input
    RETRY = "retry"  # next attempt of activity `seq`: republish its task
    SCHEDULE_TO_CLOSE = "schedule_to_close"  # activity `seq` ran out of time: ActivityFailed
    WORKFLOW_TIMEOUT = "workflow_timeout"  # the whole workflow ran out of time
    CHILD_START = "child_start"  # create child `seq` (due at once; done after the commit)
    CHILD_CANCEL = "child_cancel"  # ask child `seq` to cancel (due at once)
    PARENT = "parent"  # this child run ended: tell its parent, then close the row


@dataclass
class WorkflowRecord:
    """A row of the workflows table."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: WorkflowStatus
    version: int
    shard: int
    input: list[Any]
    start_time: datetime
    close_time: datetime | None = None
    result: Any = None
    error: FailureInfo | None = None
    history_length: int = 0
    stuck_reason: str | None = None
    trace_context: dict[str, str] = field(default_factory=dict)
    execution_timeout: float | None = None


@dataclass
class WorkflowPage:
    """One page of :meth:`Store.list_workflows`; pass ``next_cursor`` to get the next."""

    workflows: list[WorkflowRecord]
    next_cursor: str | None


@dataclass
class OutboxRow:
    """A task committed with the command that caused it, until its step is over."""

    message: TaskMessage
    sent: bool

    @property
    def key(self) -> tuple[str, int, int]:
        """(workflow id, seq, attempt): the row's identity."""
        return (self.message.workflow_id, self.message.seq, self.message.attempt)


@dataclass
class TimerRow:
    """A durable due time."""

    workflow_id: str
    run_id: str
    kind: TimerKind
    seq: int
    due_at: datetime
    attempt: int = 0
    shard: int = 0


@dataclass
class InboxRow:
    """Input from a client waiting for the coordinator: a signal, cancel or terminate."""

    id: int
    workflow_id: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass
class WorkflowWrite:
    """Everything one workflow's activation changes, applied atomically with its fence.

    ``expected_version`` is the version the writer's state was built from; the workflow
    row is updated only if it still has that version, and then gets ``expected_version + 1``.
    """

    workflow_id: str
    run_id: str
    expected_version: int
    events: list[HistoryEvent] = field(default_factory=list)
    status: WorkflowStatus | None = None
    result: Any = None
    error: FailureInfo | None = None
    close_time: datetime | None = None
    stuck_reason: str | None = None
    clear_stuck: bool = False
    outbox_add: list[TaskMessage] = field(default_factory=list)
    outbox_delete_seqs: list[int] = field(default_factory=list)
    timers_add: list[TimerRow] = field(default_factory=list)
    timers_delete: list[tuple[TimerKind, int]] = field(default_factory=list)
    inbox_delete: list[int] = field(default_factory=list)

    @property
    def closes(self) -> bool:
        """True when this write gives the workflow a final status."""
        return self.status is not None and self.status.is_closed


@dataclass(frozen=True)
class LeaseFence:
    """The shard leases a batch is written under: nothing is written unless all still hold.

    ``epochs`` maps each shard the batch touches to the epoch of the writer's lease.
    """

    owner: str
    epochs: dict[int, int]


@dataclass
class WriteBatch:
    """Writes of many workflows committed in one transaction (group commit)."""

    writes: list[WorkflowWrite] = field(default_factory=list)
    mark_sent: list[tuple[str, int, int]] = field(default_factory=list)
    fence: LeaseFence | None = None


@dataclass(frozen=True)
class Member:
    """A coordinator as it announces itself in its heartbeat row."""

    identity: str
    host: str
    node: str
    """Names the host and process namespace: a ``pid`` means the same process only here."""
    pid: int
    started_at: datetime
    degraded: str | None = None
    http: str | None = None


@dataclass(frozen=True)
class MemberState:
    """A coordinator's row as read back: the member and its last heartbeat."""

    member: Member
    heartbeat_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ShardLease:
    """One shard's lease row; ``owner`` is None when released."""

    shard: int
    owner: str | None
    epoch: int
    expires_at: datetime
    owner_since: datetime | None


@dataclass(frozen=True)
class ClusterState:
    """What :meth:`Store.cluster` reads: members, leases and the database's clock."""

    now: datetime
    shard_count: int
    members: list[MemberState]
    leases: list[ShardLease]
    outbox_unsent: int

    def alive(self, member: MemberState) -> bool:
        """Its heartbeat has not expired."""
        return member.expires_at > self.now

    def held(self, lease: ShardLease) -> bool:
        """Someone holds this lease now (it has an owner and has not expired)."""
        return lease.owner is not None and lease.expires_at > self.now

    def owned_by(self, identity: str) -> list[int]:
        """Shards whose unexpired lease ``identity`` holds."""
        return [
            lease.shard for lease in self.leases if lease.owner == identity and self.held(lease)
        ]

    def unowned(self) -> list[int]:
        """Shards no live lease covers (nobody advances their workflows now)."""
        held = {lease.shard for lease in self.leases if self.held(lease)}
        return [shard for shard in range(self.shard_count) if shard not in held]


class Store(Protocol):
    """Persistence for the coordinator and clients. Implemented in :mod:`saga.store.sql`."""

    url: str

    async def connect(self) -> None:
        """Open the engine, retrying a few times; raises StoreError if unreachable."""

    async def aclose(self) -> None:
        """Dispose of the engine; idempotent."""

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic)."""

    async def create_workflow(self, record: WorkflowRecord) -> None:
        """Insert a new RUNNING workflow with version 0 and no history.

        A closed workflow with the same id is replaced (its old history stays, under its
        run id). Raises WorkflowAlreadyStartedError if one is RUNNING.
        """

    async def create_workflow_with_inbox(
        self, record: WorkflowRecord, inbox: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """Create a workflow as :meth:`create_workflow` does, with its first inbox rows.

        Both in one transaction; ``inbox`` holds (kind, payload) pairs. Used by
        signal-with-start, and for a child's link to its parent.
        """

    async def continue_as_new(
        self,
        write: WorkflowWrite,
        record: WorkflowRecord,
        inbox: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> list[str]:
        """End a run and start the next under the same workflow id, in one transaction.

        ``write`` is the old run's fenced closing write (status CONTINUED_AS_NEW);
        ``record`` the new run, inserted as :meth:`create_workflow` does, except that
        inbox rows the old run did not apply stay for the new one; ``inbox`` rows are
        added. Returns the workflow id if the fence failed (then nothing was written).
        """

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The current run of a workflow, or None."""

    async def shard_count(self) -> int:
        """How many shards workflows hash into; fixed when the database was created."""

    async def set_shard_count(self, count: int) -> None:
        """Choose the shard count of a database that holds no workflow yet.

        Raises ConfigurationError once workflows exist (their shards would move).
        """

    async def load_history(self, workflow_id: str, run_id: str) -> list[HistoryEvent]:
        """All events of a run, in order."""

    async def commit(self, batch: WriteBatch) -> list[str]:
        """Apply the batch in one transaction.

        Returns the ids of workflows whose fence failed: nothing of theirs is written,
        while every other write of the batch is (each write is atomic on its own).
        Closing writes also delete every outbox row and timer of the workflow. With a
        ``batch.fence``, raises LeaseLostError (writing nothing) if a lease moved on.
        """

    async def outbox(
        self, *, only_unsent: bool, limit: int = 1000, owner: str | None = None
    ) -> list[OutboxRow]:
        """Outbox rows, oldest first; with ``owner``, only of the shards it holds."""

    async def mark_sent(self, keys: Sequence[tuple[str, int, int]]) -> None:
        """Record that these tasks reached the broker."""

    async def reset_outbox(self) -> int:
        """Mark every row unsent (after a restart over a non-durable transport)."""

    async def timers_due_before(
        self, when: datetime, limit: int = 1000, owner: str | None = None
    ) -> list[TimerRow]:
        """Timers due before ``when``, soonest first; with ``owner``, of its shards only."""

    async def add_inbox(self, workflow_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Queue input for a RUNNING workflow; raises WorkflowNotFoundError otherwise."""

    async def inbox_for(self, workflow_id: str) -> list[InboxRow]:
        """Pending inbox rows of a workflow, oldest first."""

    async def workflows_needing_work(
        self, limit: int = 1000, owner: str | None = None
    ) -> list[str]:
        """RUNNING workflows never activated (version 0), with inbox rows, or stuck.

        With ``owner``, only those of the shards it holds.
        """

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | None = None,
        workflow_type: str | None = None,
        id_prefix: str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> WorkflowPage:
        """Workflows newest first, filtered, paged by an opaque cursor."""

    async def count_by_status(self) -> dict[str, int]:
        """How many workflows have each status."""

    async def register_workflow_types(self, names: Sequence[str]) -> None:
        """Record workflow types some coordinator can run (for clients starting by name)."""

    async def known_workflow_types(self) -> list[str]:
        """Every workflow type ever registered."""

    # -- shard leases (see saga.store._leases) ------------------------------------------

    async def heartbeat(self, member: Member, ttl: float, shard_count: int) -> None:
        """Announce ``member`` alive for ``ttl`` seconds.

        Also creates the lease rows of shards ``0 .. shard_count - 1`` that are missing.
        """

    async def renew_leases(self, owner: str, ttl: float) -> dict[int, int]:
        """Extend every lease ``owner`` still holds by ``ttl``; returns {shard: epoch}.

        A lease that expired is renewed too if nobody claimed it since (same epoch).
        """

    async def claim_shards(
        self, owner: str, shards: Sequence[int], ttl: float, *, force: bool = False
    ) -> dict[int, int]:
        """Take those of ``shards`` whose lease is free or expired; returns {shard: new epoch}.

        ``force`` takes them whoever holds them: only for a coordinator that knows it is
        alone (an in-process broker: nobody else can receive its shards' messages).
        """

    async def release_shards(self, owner: str, shards: Sequence[int]) -> None:
        """Give shards up at once (graceful hand-over); only leases ``owner`` holds."""

    async def leave(self, owner: str) -> None:
        """Release every lease of ``owner`` and delete its heartbeat row."""

    async def cluster(self) -> ClusterState:
        """Members, leases and outbox backlog, with the database's current time."""


def open_store(url: str) -> Store:
    """Build the store for a database URL (not yet connected)."""
    from saga.store.sql import SQLStore

    return SQLStore(url)
