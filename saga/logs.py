"""Log output of the daemons: readable text or one JSON object per line.

saga logs through :mod:`logging` with structured ``extra=`` fields (``workflow_id``,
``activity``, ``attempt``, ``queue``…). Both formats keep them: text appends them as
``key=value``, JSON makes them keys of the line's object, next to ``time``, ``level``,
``logger`` and ``message`` (and ``exception`` when there is one)::

    {"time": "2024-05-01T12:30:15.123Z", "level": "INFO", "logger": "saga.worker",
     "message": "activity attempt failed: no seats", "workflow_id": "trip-7",
     "activity": "book_flight", "attempt": 2}

Example:
    >>> configure_logging(level="info", fmt="json")
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "extra_fields"]

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)

# Libraries held to a level unless we log at DEBUG: the AMQP client is chatty below
# CRITICAL (saga's transport reports lost and regained connections in its own words),
# and Alembic announces its plugins at INFO.
_QUIET = {"aiormq": logging.CRITICAL, "aio_pika": logging.CRITICAL, "alembic": logging.WARNING}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its extra fields as keys."""
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            line.setdefault(key, _jsonable(value))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value …`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` on one line (plus the traceback, if any)."""
        fields = " ".join(f"{key}={_text(value)}" for key, value in extra_fields(record).items())
        text = f"{_timestamp(record)} {record.levelname:<7} {record.name} {record.getMessage()}"
        if fields:
            text = f"{text}  {fields}"
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(_jsonable(value))
    return json.dumps(text) if not text or any(c.isspace() for c in text) else text


def configure_logging(
    *, level: str | int = "warning", fmt: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``fmt``.

    Replaces handlers installed before, so calling it twice is harmless. The AMQP
    client and Alembic are kept quieter unless ``level`` is DEBUG.
    """
    numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else quiet)
