"""JSON payloads shaped by type hints.

Arguments and results cross processes and live in the database as JSON. A value is
dumped with the pydantic adapter of its declared type and validated back into that
type, so pydantic models, dataclasses, datetimes and builtins round-trip exactly.
Nothing is pickled.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from saga.errors import InvalidArgumentsError, PayloadError

JSON = Any
"""A value made only of dict, list, str, int, float, bool and None."""


@functools.lru_cache(maxsize=1024)
def _adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


def _adapter_for(hint: Any) -> TypeAdapter[Any]:
    try:
        return _adapter(hint)
    except TypeError:  # unhashable hint (rare): build one each time
        return TypeAdapter(hint)


def to_json_value(value: Any, hint: Any = Any) -> JSON:
    """Dump ``value`` as JSON-shaped data according to ``hint``."""
    try:
        if hint is Any or hint is inspect.Parameter.empty:
            data = to_jsonable_python(value)
        else:
            # No serializer warnings: whether a value fits its hint is decided by
            # validation on the reading side, whatever the process's warning filters say.
            data = _adapter_for(hint).dump_python(value, mode="json", warnings=False)
        # Refuse here what the stores and transports cannot write (integers beyond
        # 64 bits, lone surrogates): later it would fail a commit, again and again.
        orjson.dumps(data)
    except Exception as exc:  # pydantic and orjson raise several unrelated types here
        raise PayloadError(f"cannot convert {type(value).__name__} to JSON: {exc}") from exc
    return data


def from_json_value(data: JSON, hint: Any = Any) -> Any:
    """Validate JSON-shaped ``data`` into ``hint``."""
    if hint is Any or hint is inspect.Parameter.empty:
        return data
    try:
        return _adapter_for(hint).validate_python(data)
    except ValidationError as exc:
        raise PayloadError(f"JSON does not fit {hint!r}: {exc}") from exc


def dumps(data: JSON) -> bytes:
    """Serialise JSON-shaped data to bytes (fast path used by stores and transports)."""
    return orjson.dumps(data)


def loads(raw: bytes | str) -> JSON:
    """Parse JSON bytes."""
    return orjson.loads(raw)


class Signature:
    """Parameter and return hints of a workflow or activity function, resolved once."""

    def __init__(self, fn: Callable[..., Any], *, skip_self: bool = False) -> None:
        self.name = getattr(fn, "__qualname__", repr(fn))
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # forward references that cannot be resolved: fall back to Any
            hints = {}
        params = list(inspect.signature(fn).parameters.values())
        if skip_self and params:
            params = params[1:]
        self.params = params
        self.param_hints = [hints.get(p.name, Any) for p in params]
        self.return_hint: Any = hints.get("return", Any)
        if self.return_hint is type(None):
            self.return_hint = Any

    def _hint_at(self, index: int) -> Any:
        if index < len(self.params):
            param = self.params[index]
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                return self.param_hints[index]
            return self.param_hints[index]
        if self.params and self.params[-1].kind is inspect.Parameter.VAR_POSITIONAL:
            return self.param_hints[-1]
        return Any

    def check_arity(self, count: int) -> None:
        """Fail early, naming the function, when ``count`` positional args cannot fit."""
        positional = [
            p
            for p in self.params
            if p.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        has_var = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in self.params)
        required = [p for p in positional if p.default is inspect.Parameter.empty]
        if count < len(required):
            missing = ", ".join(p.name for p in required[count:])
            raise InvalidArgumentsError(self.name, f"missing argument(s): {missing}")
        if not has_var and count > len(positional):
            raise InvalidArgumentsError(
                self.name, f"takes {len(positional)} argument(s) but {count} were given"
            )

    def encode_args(self, args: Sequence[Any]) -> list[JSON]:
        """Dump positional arguments by their declared hints."""
        self.check_arity(len(args))
        out = []
        for i, arg in enumerate(args):
            try:
                out.append(to_json_value(arg, self._hint_at(i)))
            except PayloadError as exc:
                raise InvalidArgumentsError(
                    self.name, f"argument {self._param_name(i)!r}: {exc}"
                ) from exc
        return out

    def _param_name(self, index: int) -> str:
        if index < len(self.params):
            return self.params[index].name
        if self.params and self.params[-1].kind is inspect.Parameter.VAR_POSITIONAL:
            return self.params[-1].name
        return f"#{index}"

    def decode_args(self, data: Sequence[JSON]) -> list[Any]:
        """Validate positional JSON arguments into their declared types."""
        self.check_arity(len(data))
        out = []
        for i, item in enumerate(data):
            try:
                out.append(from_json_value(item, self._hint_at(i)))
            except PayloadError as exc:
                raise InvalidArgumentsError(
                    self.name, f"argument {self._param_name(i)!r}: {exc}"
                ) from exc
        return out

    def encode_result(self, value: Any) -> JSON:
        """Dump a return value by the declared return hint."""
        return to_json_value(value, self.return_hint)

    def decode_result(self, data: JSON) -> Any:
        """Validate a JSON return value into the declared return type."""
        return from_json_value(data, self.return_hint)
