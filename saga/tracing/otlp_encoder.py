"""OTLP/protobuf encoding of finished spans, written directly as bytes.

The SDK's exporters build a tree of protobuf message objects per batch (``encode_spans``):
~24 µs a span, more than saga spends making one, paid in the batch processor's thread on
the GIL the event loop needs. :func:`encode` writes the same ``ExportTraceServiceRequest``
bytes — byte for byte what ``encode_spans(spans).SerializePartialToString()`` gives, which
the tests check — straight from the spans, reusing the encoding of attributes that repeat
(queue, activity, workflow type, attempt): ~4 µs a span.

Field numbers are those of ``opentelemetry/proto/trace/v1/trace.proto`` and
``common/v1/common.proto``; absent and default values are left out as proto3 does, except
inside ``AnyValue``'s oneof, whose members are always written.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode

log = logging.getLogger(__name__)

_U64 = struct.Struct("<Q").pack
_U32 = struct.Struct("<I").pack
_F64 = struct.Struct("<d").pack
_SMALL = [bytes([n]) for n in range(0x80)]
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_INT64 = range(-(1 << 63), 1 << 63)
_CACHE_LIMIT = 8192  # distinct attributes kept encoded; cleared when full
# Keyed by the enum members' ids: an Enum's __hash__ runs in Python, an id's does not.
_KINDS = {id(kind): b"\x30" + bytes([kind.value + 1]) for kind in SpanKind}  # the proto's are +1
_CODES = {id(code): b"\x18" + bytes([code.value]) if code.value else b"" for code in StatusCode}
_STATUSES = {key: b"\x7a" + bytes([len(code)]) + code for key, code in _CODES.items()}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return tag + _varint(len(payload)) + payload


def _value(value: Any) -> bytes:
    """An ``AnyValue`` message, in the SDK's order of type tests."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"{value} is out of int64 range")
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _F64(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _kv(str(k), v)) for k, v in value.items()))
    raise TypeError(f"invalid type {type(value).__name__} of value {value!r}")


def _kv(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _value(value))


class _Attributes:
    """Encodes attribute maps, remembering the ``KeyValue`` of each (key, value) seen."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, type, Any], bytes] = {}

    def __call__(self, tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
        if not attributes:
            return []
        seen = self._seen
        out = []
        for key, value in attributes.items():
            cached = (key, value.__class__, value)
            try:
                field = seen.get(cached)
            except TypeError:  # an unhashable value (a list): not remembered
                cached, field = None, None  # type: ignore[assignment]
            if field is None:
                try:
                    field = _field(tag, _kv(key, value))
                except (TypeError, ValueError) as exc:
                    log.error("cannot encode span attribute %s: %s", key, exc)
                    continue
                if cached is not None:
                    if len(seen) >= _CACHE_LIMIT:
                        seen.clear()
                    seen[cached] = field
            out.append(field)
        return out


_LOCAL, _REMOTE = _U32(_HAS_IS_REMOTE), _U32(_HAS_IS_REMOTE | _IS_REMOTE)


def _flags(parent: SpanContext | None) -> bytes:
    return _REMOTE if parent is not None and parent.is_remote else _LOCAL


class Encoder:
    """Writes batches of finished spans as an OTLP ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self._attributes = _Attributes()
        self._resources: dict[Resource, bytes] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The request's bytes: spans grouped by resource, then by scope, in first-seen order."""
        # Grouped by identity first: hashing a Resource serialises its attributes to JSON.
        groups: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, list[bytes]]]
        groups = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope or None
            group = groups.get((id(resource), id(scope)))
            if group is None:
                group = groups[id(resource), id(scope)] = (resource, scope, [])
            group[2].append(_field(b"\x12", self._span(span)))
        merged: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        for resource, scope, encoded in groups.values():
            merged.setdefault(resource, {}).setdefault(scope, []).extend(encoded)
        out = []
        for resource, by_scope in merged.items():
            body = [self._resource(resource)]
            for scope, encoded in by_scope.items():
                if scope is not None and scope.schema_url:
                    encoded.append(_field(b"\x1a", scope.schema_url.encode()))
                body.append(_field(b"\x12", self._scope(scope) + b"".join(encoded)))
            if resource.schema_url:
                body.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)

    def _resource(self, resource: Resource) -> bytes:
        encoded = self._resources.get(resource)
        if encoded is None:
            attributes = b"".join(self._attributes(b"\x0a", resource.attributes))
            encoded = self._resources[resource] = _field(b"\x0a", attributes)
        return encoded

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        """The ``scope`` field of a ``ScopeSpans``."""
        encoded = self._scopes.get(scope)
        if encoded is None:
            body = []
            if scope is not None:
                if scope.name:
                    body.append(_field(b"\x0a", scope.name.encode()))
                if scope.version:
                    body.append(_field(b"\x12", scope.version.encode()))
                body += self._attributes(b"\x1a", scope.attributes)
            encoded = self._scopes[scope] = _field(b"\x0a", b"".join(body))
        return encoded

    def _span(self, span: ReadableSpan) -> bytes:
        sc = span.context
        assert sc is not None  # a finished span always has one
        parts = [b"\x0a\x10", sc.trace_id.to_bytes(16, "big"), b"\x12\x08"]
        parts.append(sc.span_id.to_bytes(8, "big"))
        if sc.trace_state:
            state = ",".join(f"{k}={v}" for k, v in sc.trace_state.items())
            parts.append(_field(b"\x1a", state.encode()))
        parent = span.parent
        if parent:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        if span.name:
            parts.append(_field(b"\x2a", span.name.encode()))
        parts.append(_KINDS[id(span.kind)])
        if span.start_time:
            parts += (b"\x39", _U64(span.start_time))
        if span.end_time:
            parts += (b"\x41", _U64(span.end_time))
        parts += self._attributes(b"\x4a", span.attributes)
        if span.dropped_attributes:
            parts += (b"\x50", _varint(span.dropped_attributes))
        for event in span.events:
            parts.append(_field(b"\x5a", self._event(event)))
        if span.dropped_events:
            parts += (b"\x60", _varint(span.dropped_events))
        for link in span.links:
            parts.append(_field(b"\x6a", self._link(link)))
        if span.dropped_links:
            parts += (b"\x70", _varint(span.dropped_links))
        status = span.status
        if status.description:
            message = _field(b"\x12", status.description.encode())
            parts.append(_field(b"\x7a", message + _CODES[id(status.status_code)]))
        else:
            parts.append(_STATUSES[id(status.status_code)])
        parts.append(b"\x85\x01" + _flags(parent))
        return b"".join(parts)

    def _event(self, event: Event) -> bytes:
        parts: list[bytes] = []
        if event.timestamp:
            parts += (b"\x09", _U64(event.timestamp))
        if event.name:
            parts.append(_field(b"\x12", event.name.encode()))
        parts += self._attributes(b"\x1a", event.attributes)
        if event.dropped_attributes:
            parts += (b"\x20", _varint(event.dropped_attributes))
        return b"".join(parts)

    def _link(self, link: Link) -> bytes:
        sc = link.context
        parts = [b"\x0a\x10", sc.trace_id.to_bytes(16, "big"), b"\x12\x08"]
        parts.append(sc.span_id.to_bytes(8, "big"))
        parts += self._attributes(b"\x22", link.attributes)
        if link.dropped_attributes:
            parts += (b"\x28", _varint(link.dropped_attributes))
        parts += (b"\x35", _flags(sc))
        return b"".join(parts)
