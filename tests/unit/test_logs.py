"""saga.logs: the daemons' log lines, as text and as JSON."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest

from saga.logs import JsonFormatter, TextFormatter, configure_logging, extra_fields


def record(
    msg: str = "activity attempt failed: %s", *args: object, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("saga.worker", logging.INFO, __file__, 1, msg, args or ("boom",), None)
    rec.__dict__.update(extra)
    return rec


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("aiormq", "aio_pika", "alembic")}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def test_extra_fields_are_what_extra_added() -> None:
    rec = record(workflow_id="trip-7", activity="book_flight", attempt=2)
    assert extra_fields(rec) == {"workflow_id": "trip-7", "activity": "book_flight", "attempt": 2}
    assert extra_fields(record()) == {}


def test_json_line_has_the_standard_keys_and_the_extra_fields() -> None:
    line = JsonFormatter().format(record(workflow_id="trip-7", activity="book_flight", attempt=2))
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "INFO"
    assert data["logger"] == "saga.worker"
    assert data["message"] == "activity attempt failed: boom"
    assert data["time"].endswith("Z")
    assert (data["workflow_id"], data["activity"], data["attempt"]) == ("trip-7", "book_flight", 2)


def test_json_renders_any_value_and_keeps_the_exception_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = logging.LogRecord("saga", logging.ERROR, __file__, 1, "failed", None, None)
        rec.exc_info = sys.exc_info()
    rec.__dict__.update(queues=("a", "b"), delay=timedelta(seconds=1), nested={"k": {1, 2}})
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert data["queues"] == ["a", "b"]
    assert data["delay"] == "0:00:01"
    assert sorted(data["nested"]["k"]) == [1, 2]
    assert "ValueError: bad\nthing" in data["exception"]


def test_standard_keys_are_not_overwritten_by_extras() -> None:
    data = json.loads(JsonFormatter().format(record(level="custom")))
    assert data["level"] == "INFO"


def test_text_line_appends_the_extra_fields() -> None:
    line = TextFormatter().format(
        record(workflow_id="trip-7", activity="book_flight", attempt=2, reason="two words")
    )
    assert " INFO    saga.worker activity attempt failed: boom  " in line
    assert line.endswith('workflow_id=trip-7 activity=book_flight attempt=2 reason="two words"')


def test_configure_logging_json_to_a_stream(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out)
    logging.getLogger("saga.test").info("hello", extra={"workflow_id": "w"})
    logging.getLogger("saga.test").debug("not shown")
    logging.getLogger("aiormq.connection").error("chatty")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["message"], x["workflow_id"]) for x in lines] == [("hello", "w")]


def test_configure_logging_debug_lets_the_libraries_speak(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(level="debug", fmt="text", stream=out)
    logging.getLogger("aiormq.connection").debug("frames")
    assert "frames" in out.getvalue()


def test_configure_logging_refuses_an_unknown_level(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="loud")
