"""PostgreSQL: asyncpg connections, with no round trip that is not a statement.

Bodies that need no transaction run in autocommit, so a read is one round trip rather
than three (BEGIN, SELECT, COMMIT); asyncpg's ``executemany`` pipelines its rows and is
atomic on its own. Connections come from :class:`_Pool` rather than asyncpg's pool,
which resets each connection on release (a round trip) and goes three times round the
event loop per use; the store keeps no session state to reset (no LISTEN, no SET, only
transaction-scoped advisory locks).
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy import URL, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.pool import NullPool

from saga.store._engine import Body, Database, T, upgrade
from saga.store._query import Query

_MIGRATION_LOCK = 0x5A6A_0001  # pg_advisory_xact_lock key: one migrator at a time
_NO_PARAMS: Mapping[str, Any] = {}


class PostgresDatabase(Database):
    """A PostgreSQL database through a pool of ``pool_size`` asyncpg connections."""

    backend = "postgresql"
    errors = (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        OSError,  # refused, unreachable, timed out (TimeoutError is an OSError)
    )

    def __init__(self, url: URL, *, connect_timeout: float, pool_size: int) -> None:
        super().__init__(url, connect_timeout=connect_timeout)
        self.dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        _, kwargs = self.dialect.create_connect_args(url)  # type: ignore[no-untyped-call]
        # The query options SQLAlchemy's asyncpg dialect understands, for asyncpg itself.
        cache_size = kwargs.pop("prepared_statement_cache_size", None)
        if cache_size is not None:
            kwargs["statement_cache_size"] = int(cache_size)
        kwargs.pop("prepared_statement_name_func", None)
        kwargs.pop("async_fallback", None)
        self._connect_kwargs: dict[str, Any] = kwargs
        self._pool_size = pool_size
        self._pool: _Pool | None = None

    async def connect(self) -> None:
        """Open one connection now (to know the database answers), more on demand."""
        if self._pool is not None:
            return
        pool = _Pool(functools.partial(asyncpg.connect, **self._connect_kwargs), self._pool_size)
        await self.retry_connect(pool.warm)
        self._pool = pool

    async def aclose(self) -> None:
        """Close idle connections now, and those in use as they come back; idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate(self) -> None:
        """Upgrade under an advisory lock: of stores starting together, one migrates."""
        if self._pool is None:
            raise self.not_connected()
        from sqlalchemy.ext.asyncio import create_async_engine  # for migrations only

        engine = create_async_engine(self.url, poolclass=NullPool)
        try:
            with self.wrap_errors("migrate"):
                async with engine.begin() as conn:
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                    )
                    await conn.run_sync(upgrade, self.safe_url)
        finally:
            await engine.dispose()

    async def run(self, action: str, body: Body[T], *, transaction: bool = False) -> T:
        """Run ``body`` on a pooled connection; see :meth:`Database.run`."""
        pool = self._pool
        if pool is None:
            raise self.not_connected()
        with self.wrap_errors(action):
            conn = await pool.acquire()
            reusable = False
            try:
                tx = _PostgresTx(conn, self.dialect)
                if not transaction:
                    result = await body(tx)
                else:
                    async with conn.transaction():
                        result = await body(tx)
                reusable = True
                return result
            except Exception:
                reusable = True  # an error of the body or the server: the connection is fine
                raise
            finally:
                # Not after a cancellation: asyncpg may be mid-query on that connection.
                pool.give_back(conn, reusable=reusable)


class _PostgresTx:
    """Statements on one pooled connection."""

    __slots__ = ("_conn", "_dialect")

    def __init__(self, conn: asyncpg.Connection, dialect: PGDialect_asyncpg) -> None:
        self._conn = conn
        self._dialect = dialect

    async def fetch(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> list[Any]:
        prepared = query.prepare(self._dialect)
        rows = await self._conn.fetch(prepared.sql, *prepared.args(params))
        return [prepared.row(row) for row in rows]

    async def fetchrow(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> Any:
        prepared = query.prepare(self._dialect)
        row = await self._conn.fetchrow(prepared.sql, *prepared.args(params))
        return None if row is None else prepared.row(row)

    async def execute(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> int:
        prepared = query.prepare(self._dialect)
        status: str = await self._conn.execute(prepared.sql, *prepared.args(params))
        count = status.rpartition(" ")[2]  # "UPDATE 3", "INSERT 0 1", "DELETE 0"
        return int(count) if count.isdigit() else 0

    async def executemany(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        prepared = query.prepare(self._dialect)
        await self._conn.executemany(prepared.sql, [prepared.args(row) for row in rows])


class _Pool:
    """At most ``size`` connections, idle ones reused newest first, waiters served in order.

    A connection that comes back inside a transaction or from an interrupted body is
    closed, and its place goes to the next waiter (who opens a new one); one that comes
    back lost takes the idle ones with it. Every ``None`` handed to a waiter is such a
    place, already counted in ``_open``.
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._open = 0
        self._idle: list[asyncpg.Connection] = []
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = (
            collections.deque()
        )
        self._closed = False

    async def acquire(self) -> asyncpg.Connection:
        """An idle connection, a new one if there is room, or the next one given back."""
        if self._closed:
            raise asyncpg.InterfaceError("the store's connection pool is closed")
        if self._idle:
            return self._idle.pop()
        if self._open < self._size:
            self._open += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                # Given one just before the cancellation: pass it on. (A waiter cancelled
                # while queued stays in the queue, where _hand_on skips it.)
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._hand_on(waiter.result())
                raise
            if conn is not None:
                return conn
        try:
            return await self._connect()
        except BaseException:
            self._hand_on(None)
            raise

    async def warm(self) -> None:
        """Open a connection and keep it idle (to see that the database answers)."""
        self.give_back(await self.acquire(), reusable=True)

    def give_back(self, conn: asyncpg.Connection, *, reusable: bool) -> None:
        """Return ``conn``: to the next waiter or the idle list, or closed if unfit."""
        if conn.is_closed():
            # Lost (the server restarted, say): the idle ones are likely lost too, and
            # each would fail its next caller. Close them all; new ones open on demand.
            lost, self._idle = self._idle, []
            for idle in lost:
                idle.terminate()
                self._hand_on(None)
            self._hand_on(None)
        elif reusable and not self._closed and not conn.is_in_transaction():
            self._hand_on(conn)
        else:
            conn.terminate()
            self._hand_on(None)

    def _hand_on(self, conn: asyncpg.Connection | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._open -= 1
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        """Refuse new uses, close idle connections; those in use close when given back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the store is closing"))
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        await asyncio.gather(*(conn.close(timeout=2) for conn in idle), return_exceptions=True)
