"""Which shards this coordinator advances: claiming, renewing, spreading and losing leases.

Every ``ttl / 3`` seconds a round: announce ourselves (the heartbeat row), renew our
leases, notice the ones another coordinator took (they are *lost*: drop them at once),
then aim at an even share, ``ceil(eligible shards / live coordinators)``: claim free or
expired shards up to it, hand the excess over gracefully (stop consuming, finish the batch
in hand, then release). A shard left unowned for a whole lease time is claimed whatever
the share, so none is ever orphaned. A coordinator of this host that died (its process is
gone) has its leases released at once instead of waiting for them to expire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import random
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from saga.errors import LeaseLostError, SagaError
from saga.store.base import ClusterState, LeaseFence, Member, MemberState, Store

log = logging.getLogger("saga.coordinator")

ShardsCallback = Callable[[list[int]], Awaitable[None]]


def node_name() -> str:
    """The host and process namespace we run in: where a pid names the same process."""
    host = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return host
    return f"{host}/{boot}/{pid_ns}"


def _process_gone(pid: int) -> bool:
    """No such process, or a zombie (killed, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def parse_shards(spec: str) -> frozenset[int]:
    """``"0-15,32"`` → those shards."""
    shards: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"bad shard range {part.strip()!r}: use e.g. 0-15,32") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"bad shard range {part.strip()!r}: use e.g. 0-15,32")
        shards.update(range(lo, hi + 1))
    return frozenset(shards)


class Ownership:
    """The leases of one coordinator, kept by :meth:`run` in the background.

    Args:
        store: Where the leases live.
        identity: The coordinator's unique name (the lease owner).
        ttl: Lease time in seconds: a dead coordinator's shards move within about this.
        eligible: Shards this coordinator may own (None: all).
        alone: Take every eligible shard by force (an in-process broker: no other
            coordinator can receive these shards' messages anyway).
        on_gained, on_lost, on_releasing: Called with shards that became ours, that
            another coordinator took, and that we are about to hand over.
        health: What is wrong with the coordinator now (None: nothing), published in its
            heartbeat row for ``saga status``.
    """

    def __init__(
        self,
        store: Store,
        identity: str,
        *,
        ttl: float,
        eligible: Collection[int] | None,
        alone: bool,
        on_gained: ShardsCallback,
        on_lost: ShardsCallback,
        on_releasing: ShardsCallback,
        health: Callable[[], str | None] = lambda: None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"lease time must be positive, not {ttl}")
        self.store = store
        self.identity = identity
        self.ttl = ttl
        self.owned: dict[int, int] = {}
        """{shard: epoch} of the leases we hold."""
        self.shard_count = 0
        self.degraded: str | None = None
        self.member = Member(
            identity=identity,
            host=socket.gethostname(),
            node=node_name(),
            pid=os.getpid(),
            started_at=datetime.now(UTC),
        )
        self._eligible_spec = eligible
        self.eligible: frozenset[int] = frozenset()
        self._alone = alone
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._on_releasing = on_releasing
        self._health = health
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Learn the shard count and take a first share before serving."""
        self.shard_count = await self.store.shard_count()
        spec = self._eligible_spec
        self.eligible = frozenset(range(self.shard_count)) if spec is None else frozenset(spec)
        outside = sorted(s for s in self.eligible if s >= self.shard_count)
        if outside or not self.eligible:
            raise SagaError(
                f"--shards names no shard of this database (it has {self.shard_count}: "
                f"0-{self.shard_count - 1}){f'; not there: {outside}' if outside else ''}"
            )
        await self.keep()
        # Renewal runs from now on: subscribing to the first shards may take longer
        # than a short lease.
        self._keeper = asyncio.create_task(self._every_round(self.keep), name="saga-leases")
        try:
            await self.balance()
        except SagaError as exc:  # e.g. a claim that lost a race; the next round retries
            log.warning("first lease round failed: %s", exc, extra={"coordinator": self.identity})

    def fence(self, shards: Iterable[int]) -> LeaseFence:
        """The fence for a batch touching ``shards``; LeaseLostError if one is not ours."""
        wanted = set(shards)
        missing = sorted(wanted - set(self.owned))
        if missing:
            raise LeaseLostError(missing)
        return LeaseFence(self.identity, {s: self.owned[s] for s in wanted})

    async def run(self) -> None:
        """Keep and balance the leases until cancelled; failed rounds are retried.

        Renewal has a loop of its own, so subscribing to or handing over many shards
        (seconds of broker round trips) never delays it past the lease time.
        """
        assert self._keeper is not None, "start() first"
        await asyncio.gather(self._keeper, self._every_round(self.balance))

    async def _every_round(self, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await step()
            except SagaError as exc:
                if self.degraded is None:
                    log.warning("lease round failed: %s", exc, extra={"coordinator": self.identity})
                self.degraded = f"lease round failed: {exc}"
            else:
                if self.degraded is not None and step == self.keep:
                    log.info("leases kept again", extra={"coordinator": self.identity})
                    self.degraded = None

    async def leave(self) -> None:
        """Release everything now, so others take over without waiting (shutdown)."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        self.owned.clear()
        await self.store.leave(self.identity)

    async def lost(self, shards: Iterable[int]) -> None:
        """A commit found these leases gone: drop them (the next round may claim again)."""
        gone = sorted(s for s in shards if s in self.owned)
        for s in gone:
            del self.owned[s]
        if gone:
            log.warning(
                "lost shard(s) %s to another coordinator",
                _ranges(gone),
                extra={"coordinator": self.identity, "shards": gone},
            )
            await self._on_lost(gone)

    async def keep(self) -> None:
        """Heartbeat and renew; drop the shards another coordinator holds now."""
        self.member = dataclasses.replace(self.member, degraded=self.degraded or self._health())
        await self.store.heartbeat(self.member, self.ttl, self.shard_count)
        before = dict(self.owned)  # shards claimed meanwhile are not in this renewal's answer
        held = await self.store.renew_leases(self.identity, self.ttl)
        await self.lost(s for s, epoch in before.items() if held.get(s) != epoch)

    async def balance(self) -> None:
        """Claim up to an even share (orphans whatever the share), hand the excess over."""
        state = await self.store.cluster()
        if await self._reap(state):
            state = await self.store.cluster()
        mine = {
            lease.shard: lease.epoch
            for lease in state.leases
            if lease.owner == self.identity and lease.shard not in self.owned
        }
        if mine:  # claimed, but the answer never came back (the connection dropped)
            await self._gain({s: e for s, e in mine.items() if s in self.eligible})
        if self._alone:
            missing = sorted(self.eligible - set(self.owned))
            if missing:
                await self._gain(
                    await self.store.claim_shards(self.identity, missing, self.ttl, force=True)
                )
            return
        live = max(sum(1 for m in state.members if state.alive(m)), 1)
        target = math.ceil(len(self.eligible) / live)
        free, orphaned = self._claimable(state)
        wanted = (
            orphaned + [s for s in free if s not in orphaned][: max(target - len(self.owned), 0)]
        )
        if wanted:
            await self._gain(await self.store.claim_shards(self.identity, wanted, self.ttl))
        excess = len(self.owned) - target
        if excess > 0 and live > 1 and not free:
            await self._release(random.sample(sorted(self.owned), excess))

    def _claimable(self, state: ClusterState) -> tuple[list[int], list[int]]:
        """Eligible shards not ours whose lease is free or expired, shuffled; and orphans."""
        free: list[int] = []
        orphaned: list[int] = []
        long_ago = state.now - timedelta(seconds=self.ttl)
        for lease in state.leases:
            if lease.shard not in self.eligible or lease.shard in self.owned:
                continue
            if not state.held(lease):
                free.append(lease.shard)
                if lease.expires_at <= long_ago:
                    orphaned.append(lease.shard)
        random.shuffle(free)
        return free, orphaned

    async def _reap(self, state: ClusterState) -> bool:
        """Release the leases of coordinators of this node whose process is gone."""
        dead = [m for m in state.members if m.member.node == self.member.node and self._gone(m)]
        for m in dead:
            log.info(
                "coordinator %s (pid %d) is gone; releasing its shards",
                m.member.identity,
                m.member.pid,
                extra={"coordinator": self.identity},
            )
            await self.store.leave(m.member.identity)
        return bool(dead)

    def _gone(self, m: MemberState) -> bool:
        return m.member.identity != self.identity and _process_gone(m.member.pid)

    async def _gain(self, won: dict[int, int]) -> None:
        if not won:
            return
        self.owned.update(won)
        shards = sorted(won)
        log.info(
            "claimed shard(s) %s",
            _ranges(shards),
            extra={"coordinator": self.identity, "shards": shards, "owned": len(self.owned)},
        )
        await self._on_gained(shards)

    async def _release(self, shards: list[int]) -> None:
        shards.sort()
        await self._on_releasing(shards)
        for s in shards:
            self.owned.pop(s, None)
        await self.store.release_shards(self.identity, shards)
        log.info(
            "released shard(s) %s to spread the load",
            _ranges(shards),
            extra={"coordinator": self.identity, "shards": shards, "owned": len(self.owned)},
        )


def _ranges(shards: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"``, for log lines."""
    runs: list[list[int]] = []
    for s in sorted(shards):
        if runs and runs[-1][1] == s - 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)
