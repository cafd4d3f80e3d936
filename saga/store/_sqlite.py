"""SQLite: one connection, used from the event loop itself, a whole body per call.

A statement costs sqlite3 a few microseconds; handing it to a thread costs more, and
the thread pays again for the GIL after every statement (sqlite3 releases it while
SQLite works, and a busy event loop holds it for up to the 5 ms switch interval before
the thread gets it back). So bodies run right here, synchronously, and since they
never suspend, each one is atomic with respect to every other coroutine: one
connection, no lock. What could block the loop is kept off it:

- waiting for another process's write lock: ``busy_timeout`` is 0, and a body that
  meets SQLITE_BUSY is rolled back and run again after an ``asyncio.sleep``;
- WAL checkpoints, which wait for the disk: :class:`_Checkpointer` runs them in a
  thread of its own, on a connection of its own;
- migrations on a file (Alembic is slow to import and may wait for locks): they run in
  a thread, on a connection of their own.

Files use WAL with ``synchronous=NORMAL``: a commit does not wait for the disk (a power
cut may lose the last commits, never corrupt the file). An in-memory database is the one
connection, so every caller of the store sees the same data.

URLs keep their ``sqlite+aiosqlite://`` spelling; only the driver underneath changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from sqlalchemy import URL, Connection, create_engine, event
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.pool import StaticPool

from saga.store._engine import Body, Database, T, upgrade
from saga.store._query import ParameterError, Query

_NO_PARAMS: Mapping[str, Any] = {}
_BUSY_TIMEOUT = 10.0  # seconds a body keeps retrying while another process writes
_CHECKPOINT_INTERVAL = 0.2  # seconds between checkpoints while writes go on
_WAL_RESTART_PAGES = 1000  # a WAL this long is reset, writers waiting (SQLite's own size)
_RESTART_PATIENCE = 0.1  # seconds that reset waits for other connections before giving up


class SQLiteDatabase(Database):
    """A SQLite file, or an in-memory database, on one connection."""

    backend = "sqlite"
    errors = (sqlite3.Error,)

    def __init__(self, url: URL, *, connect_timeout: float) -> None:
        super().__init__(url, connect_timeout=connect_timeout)
        self.dialect = SQLiteDialect_pysqlite()
        args, kwargs = self.dialect.create_connect_args(url.set(drivername="sqlite"))
        self._connect_args: tuple[Any, ...] = tuple(args)
        self._connect_kwargs: dict[str, Any] = {
            **kwargs,
            "check_same_thread": False,  # opened in a thread, then used from the loop
            "isolation_level": None,  # we say BEGIN ourselves; sqlite3 must not
        }
        self._memory = args[0] == ":memory:" or "mode=memory" in str(args[0])
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None

    async def connect(self) -> None:
        """Open the connection (in a thread: setting WAL may wait for other processes)."""
        if self._conn is not None:
            return

        async def attempt() -> None:
            self._conn = await asyncio.to_thread(self._open, loop_side=True)

        await self.retry_connect(attempt)
        if not self._memory:
            self._checkpointer = _Checkpointer(functools.partial(self._open, loop_side=False))

    def _open(self, *, loop_side: bool) -> sqlite3.Connection:
        conn: sqlite3.Connection = sqlite3.connect(*self._connect_args, **self._connect_kwargs)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")
            if not self._memory:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            if loop_side:
                # The loop never waits inside SQLite: not for locks, not for checkpoints.
                conn.execute("PRAGMA busy_timeout=0")
                conn.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        """Stop the checkpointer and close the connection; idempotent."""
        conn, checkpointer = self._conn, self._checkpointer
        self._conn = self._checkpointer = None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        if conn is not None:
            # Closing the last connection checkpoints the whole WAL: not on the loop.
            await asyncio.to_thread(conn.close)

    async def migrate(self) -> None:
        """Run Alembic: for a file in a thread on a connection of its own."""
        conn = self._conn
        if conn is None:
            raise self.not_connected()
        if self._memory:
            self._migrate(conn)  # the data lives in this connection alone
            return

        def in_thread() -> None:
            own = self._open(loop_side=False)
            try:
                self._migrate(own)
            finally:
                own.close()

        await asyncio.to_thread(in_thread)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Alembic needs a SQLAlchemy connection: lend it ours, which it must not close.
        engine = create_engine("sqlite://", creator=lambda: _Lent(conn), poolclass=StaticPool)

        @event.listens_for(engine, "begin")
        def _begin(sa_conn: Connection) -> None:
            sa_conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with self.wrap_errors("migrate"), engine.begin() as sa_conn:
                upgrade(sa_conn, self.safe_url)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    async def run(self, action: str, body: Body[T], *, transaction: bool = False) -> T:
        """Run ``body`` now, as one transaction; see :meth:`Database.run`.

        Every body gets a transaction here (it costs microseconds), so one that meets
        another process's lock can be rolled back and run again whole.
        """
        waited, delay = 0.0, 0.001
        while True:
            conn = self._conn
            if conn is None:
                raise self.not_connected()
            changes = conn.total_changes
            try:
                result = self._call(conn, body, transaction)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or waited >= _BUSY_TIMEOUT:
                    raise self.store_error(action, exc) from exc
            except (sqlite3.Error, ParameterError) as exc:
                raise self.store_error(action, exc) from exc
            else:
                if self._checkpointer is not None and conn.total_changes != changes:
                    self._checkpointer.written()
                return result
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    def _call(self, conn: sqlite3.Connection, body: Body[T], transaction: bool) -> T:
        # IMMEDIATE takes the write lock up front; a deferred transaction that writes later
        # must upgrade its lock, and fails (to be retried) if another writer came first.
        conn.execute("BEGIN IMMEDIATE" if transaction else "BEGIN")
        try:
            result = _drive(body(_SQLiteTx(conn, self.dialect)))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result


class _SQLiteTx:
    """Statements on the store's connection; every method completes without suspending."""

    __slots__ = ("_conn", "_dialect")

    def __init__(self, conn: sqlite3.Connection, dialect: SQLiteDialect_pysqlite) -> None:
        self._conn = conn
        self._dialect = dialect

    async def fetch(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> list[Any]:
        prepared = query.prepare(self._dialect)
        rows = self._conn.execute(prepared.sql, prepared.args(params)).fetchall()
        return [prepared.row(row) for row in rows]

    async def fetchrow(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> Any:
        prepared = query.prepare(self._dialect)
        # fetchall, not fetchone: an UPDATE ... RETURNING is only done once fully read.
        rows = self._conn.execute(prepared.sql, prepared.args(params)).fetchall()
        return prepared.row(rows[0]) if rows else None

    async def execute(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> int:
        prepared = query.prepare(self._dialect)
        return self._conn.execute(prepared.sql, prepared.args(params)).rowcount

    async def executemany(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            prepared = query.prepare(self._dialect)
            self._conn.executemany(prepared.sql, [prepared.args(row) for row in rows])


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a body to its end synchronously: its awaits are all on a ``_SQLiteTx``."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a store body awaited something other than its transaction")


class _Checkpointer:
    """Copies the WAL back into the database file from a thread, so the loop never waits.

    The loop's connection has automatic checkpoints off and reports each write here; at
    most every ``_CHECKPOINT_INTERVAL`` this thread checkpoints (see :meth:`_checkpoint`).
    """

    def __init__(self, open_connection: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_connection
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="saga-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def written(self) -> None:
        """A write was committed: a checkpoint is due."""
        if not self._wake.is_set():
            self._wake.set()

    def stop(self) -> None:
        """Finish the checkpoint under way and end the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._open()
        except sqlite3.Error:
            return  # no checkpoints until the last connection closes, which makes one
        with contextlib.closing(conn):
            # RESTART stops writers while it waits: never for long (a reader in another
            # process may take its time); the next round tries again.
            conn.execute(f"PRAGMA busy_timeout={int(_RESTART_PATIENCE * 1000)}")
            while not self._stop.is_set():
                self._wake.wait()
                self._stop.wait(_CHECKPOINT_INTERVAL)  # let writes gather meanwhile
                self._wake.clear()
                with contextlib.suppress(sqlite3.Error):  # e.g. busy: next time, then
                    self._checkpoint(conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        # PASSIVE copies what was written until now without stopping writers. But the WAL
        # only starts over when a write finds it copied whole, which steady writes never
        # let happen, so a long one is then reset by RESTART: it stops writers (they retry
        # without blocking the loop) only to copy what came meanwhile and sync.
        _, wal_pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if wal_pages >= _WAL_RESTART_PAGES:
            conn.execute("PRAGMA wal_checkpoint(RESTART)")


class _Lent:
    """The store's sqlite3 connection as SQLAlchemy sees it during a migration."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def close(self) -> None:
        """The store closes its connection itself."""
