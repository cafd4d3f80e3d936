"""Payloads: JSON builtins and typed values survive the trip through saga.converter."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from saga import InvalidArgumentsError, PayloadError
from saga.converter import Signature, dumps, from_json_value, loads, to_json_value

# --- strategies shared with the integration round-trip test -----------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def assert_identical(got: Any, want: Any) -> None:
    """Equal, and of the same type all the way down (True is not 1, 1.0 is not 1)."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_identical(got[key], want[key])
    elif isinstance(want, list | tuple):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_identical(g, w)
    else:
        assert got == want


def through_storage(value: Any, hint: Any = Any) -> Any:
    """What a reader gets back: dumped by hint, written as bytes, read, validated."""
    return from_json_value(loads(dumps(to_json_value(value, hint))), hint)


# --- JSON builtins ----------------------------------------------------------------------------
@given(json_values)
def test_json_builtins_round_trip_exactly(value: Any) -> None:
    assert_identical(through_storage(value), value)


@given(json_values)
def test_json_builtins_are_their_own_json_form(value: Any) -> None:
    assert_identical(to_json_value(value), value)


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1)))
def test_integer_lists_round_trip_with_a_hint(value: list[int]) -> None:
    assert_identical(through_storage(value, list[int]), value)


@given(st.dictionaries(st.text(), st.floats(allow_nan=False, allow_infinity=False)))
def test_float_dicts_round_trip_with_a_hint(value: dict[str, float]) -> None:
    assert_identical(through_storage(value, dict[str, float]), value)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, [1, {"deep": 2**70}]])
def test_integers_beyond_64_bits_are_refused_at_the_boundary(value: Any) -> None:
    # Stores and transports cannot write them; refusing here keeps them out of history.
    with pytest.raises(PayloadError, match="64-bit"):
        to_json_value(value)


def test_lone_surrogates_are_refused_at_the_boundary() -> None:
    with pytest.raises(PayloadError):
        to_json_value("\ud800")


def test_unserialisable_objects_are_refused() -> None:
    with pytest.raises(PayloadError, match="object"):
        to_json_value(object())


# --- typed values -----------------------------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip_code: str


class Customer(BaseModel):
    name: str
    born: date
    addresses: list[Address]
    tags: tuple[str, ...] = ()
    balance: Decimal = Decimal("0")
    favourite: Color | None = None


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price: float


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed_at: datetime
    lines: list[Line]
    customer: Customer
    window: tuple[datetime, datetime] | None = None
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)


def _order() -> Order:
    customer = Customer(
        name="Ada",
        born=date(1815, 12, 10),
        addresses=[Address(street="1 Analytical Way", zip_code="N1")],
        tags=("vip", "early"),
        balance=Decimal("12.50"),
        favourite=Color.BLUE,
    )
    placed = datetime(
        2024, 2, 29, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    return Order(
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        placed_at=placed,
        lines=[Line("a", 1, 9.99), Line("b", 3, 0.1)],
        customer=customer,
        window=(placed, placed + timedelta(days=2)),
        notes={"gift": True, "wrap": None},
    )


TYPED_CASES: list[tuple[Any, Any]] = [
    (Customer, _order().customer),
    (Order, _order()),
    (Line, Line("x", 2, 1.5)),
    (datetime, datetime(2024, 1, 1, 12, 0, tzinfo=UTC)),
    (datetime, datetime(1999, 12, 31, 23, 59, 59, 999999)),  # naive stays naive
    (datetime, datetime(2024, 6, 1, 8, 0, tzinfo=timezone(timedelta(hours=-7)))),
    (date, date(2000, 2, 29)),
    (timedelta, timedelta(days=3, seconds=7, microseconds=11)),
    (tuple[int, str, float], (1, "two", 3.0)),
    (tuple[int, ...], (1, 2, 3)),
    (tuple[Line, datetime], (Line("y", 1, 2.0), datetime(2020, 5, 5, tzinfo=UTC))),
    (list[tuple[str, int]], [("a", 1), ("b", 2)]),
    (dict[str, list[Customer]], {"k": [_order().customer]}),
    (uuid.UUID, uuid.uuid4()),
    (Color, Color.RED),
    (Decimal, Decimal("3.14159")),
    (int | None, None),
    (set[int], {1, 2, 3}),
    (frozenset[str], frozenset({"a"})),
    (bytes, b"utf-8 text as bytes"),
]


@pytest.mark.parametrize(("hint", "value"), TYPED_CASES, ids=lambda x: repr(x)[:40])
def test_typed_values_round_trip_exactly(hint: Any, value: Any) -> None:
    back = through_storage(value, hint)
    assert back == value
    assert type(back) is type(value)


def test_bytes_that_are_not_utf8_are_a_clear_payload_error() -> None:
    # JSON carries text; arbitrary bytes need base64 by the caller.
    with pytest.raises(PayloadError, match="bytes"):
        to_json_value(b"\x00\xff", bytes)


def test_datetimes_keep_their_offset_and_microseconds() -> None:
    value = datetime(2024, 3, 10, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    back = through_storage(value, datetime)
    assert back == value
    assert back.utcoffset() == value.utcoffset()
    assert back.microsecond == 4


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.none()
        | st.just(UTC)
        | st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
            lambda m: timezone(timedelta(minutes=m))
        ),
    )
)
def test_any_datetime_round_trips(value: datetime) -> None:
    back = through_storage(value, datetime)
    assert back == value
    assert back.utcoffset() == value.utcoffset()


@given(st.tuples(st.integers(min_value=0, max_value=2**63 - 1), st.text(), st.booleans()))
def test_tuples_round_trip_with_their_hint(value: tuple[int, str, bool]) -> None:
    assert_identical(through_storage(value, tuple[int, str, bool]), value)


def test_without_a_hint_tuples_become_lists() -> None:
    # JSON has no tuple; only the declared type brings it back.
    assert through_storage((1, 2)) == [1, 2]


def test_json_that_does_not_fit_the_hint_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="int"):
        from_json_value("not a number", int)


# --- signatures -------------------------------------------------------------------------------
async def book(customer: Customer, nights: int, *extras: str) -> Order:
    raise NotImplementedError


class Host:
    async def run(self, when: datetime, lines: list[Line] | None = None) -> tuple[int, str]:
        raise NotImplementedError


def test_signature_encodes_and_decodes_by_parameter_hints() -> None:
    sig = Signature(book)
    customer = _order().customer
    encoded = sig.encode_args([customer, 2, "breakfast", "late checkout"])
    assert encoded[0]["born"] == "1815-12-10"
    assert loads(dumps(encoded)) == encoded
    assert sig.decode_args(encoded) == [customer, 2, "breakfast", "late checkout"]


def test_signature_skips_self_and_honours_defaults() -> None:
    sig = Signature(Host.run, skip_self=True)
    when = datetime(2024, 1, 1, tzinfo=UTC)
    assert sig.decode_args(sig.encode_args([when])) == [when]
    assert sig.decode_result(sig.encode_result((1, "x"))) == (1, "x")


def test_missing_argument_is_named() -> None:
    with pytest.raises(InvalidArgumentsError, match="missing argument.*nights"):
        Signature(book).encode_args([_order().customer])


def test_too_many_arguments_are_counted() -> None:
    with pytest.raises(InvalidArgumentsError, match="takes 2 argument"):
        Signature(Host.run, skip_self=True).encode_args([1, 2, 3])


def test_wrong_type_names_the_parameter_when_decoding() -> None:
    with pytest.raises(InvalidArgumentsError, match="'nights'") as info:
        Signature(book).decode_args([_order().customer.model_dump(mode="json"), "many"])
    assert info.value.target.endswith("book")


def test_wrong_type_names_the_parameter_when_encoding_something_unserialisable() -> None:
    with pytest.raises(InvalidArgumentsError, match="'extras'"):
        Signature(book).encode_args([_order().customer, 1, object()])


def test_a_mismatched_value_is_encoded_quietly_and_refused_by_validation() -> None:
    # Whatever the warning filters (pytest turns warnings into errors here), encoding
    # never warns; validation on the reading side is what refuses the value.
    sig = Signature(book)
    encoded = sig.encode_args([_order().customer, "three"])
    with pytest.raises(InvalidArgumentsError, match="'nights'"):
        sig.decode_args(encoded)
