"""The connection rules of SQLStore: engines, SQLite locking, retries, errors, migrations.

Kept apart from the queries because each database needs its own care here and nowhere
else: SQLite wants WAL, ``BEGIN IMMEDIATE`` for writers and (in memory) a single shared
connection; PostgreSQL wants a pool and an advisory lock around migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, Table, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from saga.errors import ConfigurationError, StoreError

_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x5A6A_0001  # pg_advisory_xact_lock key: one migrator at a time
_WRITE = "saga_write"  # execution option of the engine whose transactions write
_SQLITE_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=10000")
# SQLAlchemy wraps what the driver raises on a connection it holds, but not what asyncpg
# raises while opening one (a missing database, a bad password, too many clients).
_DRIVER_ERRORS = (
    SQLAlchemyError,
    OSError,  # refused, unreachable, timed out (TimeoutError is an OSError)
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


class Database:
    """An async engine for one URL: opened with retries, used through short transactions."""

    def __init__(self, url: str, *, connect_timeout: float, pool_size: int) -> None:
        try:
            self._url = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(f"invalid database URL {url!r}") from exc
        self.safe_url = self._url.render_as_string(hide_password=True)
        self.backend = self._url.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported database URL {self.safe_url}: use sqlite+aiosqlite:// "
                "or postgresql+asyncpg://"
            )
        self._memory = self.backend == "sqlite" and self._url.database in (None, "", ":memory:")
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._reader: AsyncEngine | None = None
        self._writer: AsyncEngine | None = None
        # SQLite has one writer at a time: queue writers here rather than in busy_timeout.
        # An in-memory database is a single shared connection, so readers queue too.
        no_lock: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
        self._write_lock = asyncio.Lock() if self.backend == "sqlite" else no_lock
        self._read_lock = self._write_lock if self._memory else no_lock

    async def connect(self) -> None:
        """Open the engine, retrying with backoff until ``connect_timeout`` has passed."""
        if self._reader is not None:
            return
        engine = self._create_engine()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        delay, attempts = 0.05, 0
        while True:
            attempts += 1
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                    async with engine.connect():
                        break
            except _DRIVER_ERRORS as exc:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    await engine.dispose()
                    raise StoreError(
                        f"cannot connect to {self.safe_url} after {attempts} attempt(s): "
                        f"{_one_line(exc)}"
                    ) from exc
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)
        self._reader = engine
        self._writer = engine.execution_options(**{_WRITE: True})

    async def aclose(self) -> None:
        """Dispose of the engine (the writer shares its pool); idempotent."""
        engine, self._reader, self._writer = self._reader, None, None
        if engine is not None:
            await engine.dispose()

    async def migrate(self) -> None:
        """Upgrade to the newest Alembic revision, in one transaction."""
        async with self.transaction("migrate", write=True) as conn:
            if self.backend == "postgresql":
                # Coordinators starting together: one migrates, the others then find head.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                )
            try:
                await conn.run_sync(_upgrade)
            except CommandError as exc:  # e.g. a database newer than this code
                raise StoreError(f"cannot migrate {self.safe_url}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def transaction(
        self, action: str, *, write: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on success; driver errors become StoreError."""
        engine = self._writer if write else self._reader
        if engine is None:
            raise StoreError(f"store {self.safe_url} is not connected: call connect() first")
        lock = self._write_lock if write else self._read_lock
        with self._wrap_errors(action):
            async with lock, engine.begin() as conn:
                yield conn

    def insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """INSERT with the dialect's ON CONFLICT clauses (spelled the same on both)."""
        return postgresql.insert(table) if self.backend == "postgresql" else sqlite.insert(table)

    @contextlib.contextmanager
    def _wrap_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"{action} failed on {self.safe_url}: {_one_line(exc)}") from exc

    def _create_engine(self) -> AsyncEngine:
        if self.backend == "postgresql":
            return create_async_engine(
                self._url, pool_size=self._pool_size, max_overflow=self._pool_size
            )
        pragmas: tuple[str, ...]
        if self._memory:
            engine = create_async_engine(self._url, poolclass=StaticPool)
            pragmas = _SQLITE_PRAGMAS
        else:
            engine = create_async_engine(self._url)
            pragmas = ("PRAGMA journal_mode=WAL", *_SQLITE_PRAGMAS)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # The driver's own implicit BEGIN is always deferred; _on_begin emits ours.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            for pragma in pragmas:
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A deferred transaction that later writes must upgrade its lock and may then
            # fail with "database is locked"; writers take the lock up front instead.
            write = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine


def _upgrade(conn: Connection) -> None:
    config = Config()
    # ConfigParser interpolates "%"; a path may contain one.
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def _one_line(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's SQL echo and links."""
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
