"""What SQLStore asks of a database, and the rules both databases share.

A store operation is a *body*: an async function of a :class:`Tx` that runs
:class:`~saga.store._query.Query` statements and returns a value. The database decides
how it runs. SQLite runs the whole body at once, synchronously, on the event loop
(:mod:`saga.store._sqlite`); PostgreSQL awaits it on a pooled asyncpg connection
(:mod:`saga.store._postgres`). So a body must await nothing but its ``Tx``, and must
not act outside the database: SQLite may roll it back and run it again.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from saga.errors import ConfigurationError, StoreError
from saga.store._query import ParameterError, Query

T = TypeVar("T")
Body = Callable[["Tx"], Coroutine[Any, Any, T]]

_MIGRATIONS = Path(__file__).with_name("migrations")
_NO_PARAMS: Mapping[str, Any] = {}


class Tx(Protocol):
    """The statements of one body, on one connection."""

    async def fetch(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> list[Any]:
        """Every row (named tuples)."""

    async def fetchrow(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> Any:
        """The first row, or None."""

    async def execute(self, query: Query, params: Mapping[str, Any] = _NO_PARAMS) -> int:
        """Run once; the number of rows changed."""

    async def executemany(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per parameter set, atomically; nothing at all when ``rows`` is empty."""


class Database(abc.ABC):
    """One database URL: connected with retries, used through bodies."""

    backend: str
    errors: tuple[type[BaseException], ...]  # what the driver raises, wrapped as StoreError

    def __init__(self, url: URL, *, connect_timeout: float) -> None:
        self.url = url
        self.safe_url = url.render_as_string(hide_password=True)
        self._connect_timeout = connect_timeout

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection(s), retrying until ``connect_timeout`` has passed."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close everything; idempotent."""

    @abc.abstractmethod
    async def migrate(self) -> None:
        """Upgrade to the newest Alembic revision, in one transaction."""

    @abc.abstractmethod
    async def run(self, action: str, body: Body[T], *, transaction: bool = False) -> T:
        """Run ``body`` and return its result.

        With ``transaction`` its statements commit together or not at all. Without it
        they may commit one by one (PostgreSQL runs them in autocommit; each, even an
        executemany, is still atomic), so such a body writes in one statement at most.
        Driver errors become StoreError naming ``action``; anything else the body raises
        comes through unchanged, after a rollback.
        """

    def not_connected(self) -> StoreError:
        """The error for use before connect() or after aclose()."""
        return StoreError(f"store {self.safe_url} is not connected: call connect() first")

    def store_error(self, action: str, exc: BaseException) -> StoreError:
        """A driver error as StoreError, with the driver's message on one line."""
        return StoreError(f"{action} failed on {self.safe_url}: {one_line(exc)}")

    @contextlib.contextmanager
    def wrap_errors(self, action: str) -> Iterator[None]:
        """Driver errors (and unstorable values) raised inside become StoreError."""
        wrapped: tuple[type[BaseException], ...] = (*self.errors, ParameterError, SQLAlchemyError)
        try:
            yield
        except wrapped as exc:
            raise self.store_error(action, exc) from exc

    async def retry_connect(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Call ``attempt`` with backoff until it succeeds or ``connect_timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        delay, attempts = 0.05, 0
        retried: tuple[type[BaseException], ...] = (*self.errors, TimeoutError)
        while True:
            attempts += 1
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                    await attempt()
                return
            except retried as exc:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise StoreError(
                        f"cannot connect to {self.safe_url} after {attempts} attempt(s): "
                        f"{one_line(exc)}"
                    ) from exc
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)


def open_database(url: str, *, connect_timeout: float, pool_size: int) -> Database:
    """The database for a SQLAlchemy URL (not yet connected)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        from saga.store._sqlite import SQLiteDatabase

        return SQLiteDatabase(parsed, connect_timeout=connect_timeout)
    if backend == "postgresql":
        from saga.store._postgres import PostgresDatabase

        return PostgresDatabase(parsed, connect_timeout=connect_timeout, pool_size=pool_size)
    raise ConfigurationError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)}: "
        "use sqlite+aiosqlite:// or postgresql+asyncpg://"
    )


def upgrade(conn: Connection, safe_url: str) -> None:
    """Alembic's upgrade to head, on a connection already in a transaction."""
    # Imported here: Alembic (with Mako) takes a third of a second to import, and most
    # uses of the store never migrate.
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    # ConfigParser interpolates "%"; a path may contain one.
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    try:
        command.upgrade(config, "head")
    except CommandError as exc:  # e.g. a database newer than this code
        raise StoreError(f"cannot migrate {safe_url}: {exc}") from exc


def one_line(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's SQL echo and links."""
    cause: BaseException = exc
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError, from migrations
    if isinstance(orig, BaseException):
        cause = orig
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
