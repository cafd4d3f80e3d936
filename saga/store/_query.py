"""Core statements compiled once per dialect, then run on the raw driver.

SQLAlchemy writes every statement, so the SQL is each dialect's own, and then steps
aside: executing through its engine costs about 100 µs of Python per statement (cache
key, result machinery, and for asyncio a greenlet hop), more than SQLite takes to run
one. So a :class:`Query` is compiled once per dialect into SQL text and the positional
order of its parameters, and sqlite3 or asyncpg run that text directly. Values cross
through this module's codecs, which keep what :mod:`saga.store.tables` promises: JSON
as TEXT written by orjson, aware UTC datetimes in Python (on SQLite, naive UTC text in
SQLAlchemy's own format, so databases written before stay readable and comparable).
"""

from __future__ import annotations

import collections
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.sql.type_api import TypeEngine

from saga.converter import dumps, loads
from saga.store.tables import JSONText, UTCDateTime

Convert = Callable[[Any], Any]


class ParameterError(ValueError):
    """A value the database cannot store (a naive datetime, say); wrapped as StoreError."""


class Query:
    """A statement, compiled for each dialect the first time it runs there.

    Args:
        statement: The Core statement, or a function of the dialect name building it
            (dialect upserts are spelled through dialect-specific constructs).
    """

    __slots__ = ("_build", "_prepared")

    def __init__(self, statement: ClauseElement | Callable[[str], ClauseElement]) -> None:
        self._build = statement
        self._prepared: dict[str, Prepared] = {}

    def prepare(self, dialect: Dialect) -> Prepared:
        """The SQL and converters of this statement for ``dialect``."""
        prepared = self._prepared.get(dialect.name)
        if prepared is None:
            build = self._build
            statement = build if isinstance(build, ClauseElement) else build(dialect.name)
            prepared = self._prepared[dialect.name] = Prepared(statement, dialect)
        return prepared


class Prepared:
    """One statement for one dialect: SQL text, parameter order, value converters."""

    __slots__ = (
        "_bind_converters",
        "_fixed",
        "_get",
        "_names",
        "_result_converters",
        "_row",
        "sql",
    )

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        if compiled.positiontup is None:
            raise TypeError(f"dialect {dialect.name} does not compile positional parameters")
        if "POSTCOMPILE" in compiled.string:
            raise TypeError("expanding IN parameters are not supported; use executemany")
        self.sql = compiled.string
        names = self._names = tuple(compiled.positiontup)
        binds = [compiled.binds[name] for name in names]
        # Values written into the statement itself (literals like 'RUNNING' or + 1).
        self._fixed = {
            n: b.effective_value for n, b in zip(names, binds, strict=True) if not b.required
        }
        self._get: Callable[[Mapping[str, Any]], Sequence[Any]] = _getter(names)
        self._bind_converters = [
            (i, convert)
            for i, b in enumerate(binds)
            if (convert := _bind_converter(b.type, dialect.name)) is not None
        ]
        columns = list(getattr(statement, "exported_columns", ()))
        self._result_converters = [
            (i, convert)
            for i, c in enumerate(columns)
            if (convert := _result_converter(c.type, dialect.name)) is not None
        ]
        fields = [str(c.key) for c in columns] or ["_unused"]
        self._row: Any = collections.namedtuple("Row", fields, rename=True)  # type: ignore[misc]

    def args(self, params: Mapping[str, Any]) -> Sequence[Any]:
        """Positional driver values for ``params`` (keyed by bind name)."""
        if self._fixed:
            params = {**self._fixed, **params}
        try:
            values = self._get(params)
        except KeyError as exc:
            raise KeyError(f"parameter {exc} missing for: {self.sql}") from None
        if not self._bind_converters:
            return values
        values = list(values)
        i = 0
        try:
            for i, convert in self._bind_converters:
                value = values[i]
                if value is not None:
                    values[i] = convert(value)
        except (ValueError, TypeError) as exc:
            raise ParameterError(f"parameter {self._names[i]!r}: {exc}") from exc
        return values

    def row(self, raw: Sequence[Any]) -> Any:
        """A named tuple of Python values from one driver row."""
        if not self._result_converters:
            return self._row._make(raw)
        values = list(raw)
        for i, convert in self._result_converters:
            value = values[i]
            if value is not None:
                values[i] = convert(value)
        return self._row._make(values)


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Sequence[Any]]:
    """The values of ``names`` from a mapping, as a sequence (itemgetter, in C)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    if names:
        name = names[0]
        return lambda params: (params[name],)
    return lambda params: ()


def _bind_converter(type_: TypeEngine[Any], dialect: str) -> Convert | None:
    if isinstance(type_, JSONText):
        return _dump_json
    if isinstance(type_, UTCDateTime):
        return _sqlite_time if dialect == "sqlite" else aware_utc
    return None


def _result_converter(type_: TypeEngine[Any], dialect: str) -> Convert | None:
    if isinstance(type_, JSONText):
        return loads
    if isinstance(type_, UTCDateTime):
        return _parse_sqlite_time if dialect == "sqlite" else _as_utc
    if isinstance(type_, Boolean) and dialect == "sqlite":
        return bool
    return None


def _dump_json(value: Any) -> str:
    return dumps(value).decode()


def aware_utc(value: datetime) -> datetime:
    """The same instant in UTC; naive datetimes are refused, their time zone is a guess."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} given; saga stores aware UTC")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _sqlite_time(value: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME text: sortable, so comparisons in SQL stay correct.
    # "+00:00" cut off the end rather than a naive copy made first: it is faster.
    return aware_utc(value).isoformat(" ", "microseconds")[:-6]


def _parse_sqlite_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is UTC else value.astimezone(UTC)
