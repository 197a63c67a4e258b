"""The schema's scalars (api/graphql/scalars.py): what ``Decimal`` and ``Long`` read, and that every
refusal is short, coded and quick."""

from __future__ import annotations

from decimal import Decimal

import pytest
from graphql import GraphQLError
from hypothesis import given
from hypothesis import strategies as st

from api.graphql.scalars import (
    FRACTION_DIGITS,
    INTEGER_DIGITS,
    MAX_SAFE_INTEGER,
    parse_decimal,
    parse_long,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", Decimal(0)),
        ("-0.5", Decimal("-0.5")),
        ("64914.9", Decimal("64914.9")),
        ("0.000000000000000001", Decimal("1E-18")),
        ("9" * INTEGER_DIGITS + "." + "9" * FRACTION_DIGITS, Decimal("9" * 20 + "." + "9" * 18)),
        (1000, Decimal(1000)),
        (-3, Decimal(-3)),
        (0.1, Decimal("0.1")),  # the float's shortest decimal, not its binary expansion
        (1e-7, Decimal("1E-7")),  # what a JavaScript client sends for 0.0000001
    ],
)
def test_plain_decimals_and_numbers_in_bounds_are_read_exactly(
    value: object, expected: Decimal
) -> None:
    parsed = parse_decimal(value)
    assert parsed == expected
    assert str(parsed) == str(expected)


@pytest.mark.parametrize(
    "value",
    [
        "1e3",
        "1E-7",
        "1_000",
        "\u0661\u0660\u0660\u0660",
        "\uff11",  # fullwidth 1
        " 1",
        "1\n",
        "+1",
        ".5",
        "1.",
        "",
        "-",
        "NaN",
        "-Infinity",
        "0x10",
        "1" * (INTEGER_DIGITS + 1),
        "0." + "0" * FRACTION_DIGITS + "1",
        10**INTEGER_DIGITS,
        1e20,
        1e-19,
        float("nan"),
        float("inf"),
        True,
        None,
        [1],
        {"a": 1},
    ],
)
def test_anything_else_is_invalid_decimal(value: object) -> None:
    with pytest.raises(GraphQLError) as refused:
        parse_decimal(value)
    assert refused.value.extensions == {"code": "INVALID_DECIMAL"}


@given(st.text(max_size=200) | st.integers() | st.floats())
def test_every_refusal_is_short_and_every_value_is_in_bounds(value: object) -> None:
    refusal: GraphQLError | None = None
    try:
        parsed = parse_decimal(value)
    except GraphQLError as error:
        refusal = error
    if refusal is not None:
        assert refusal.extensions == {"code": "INVALID_DECIMAL"}
        assert len(refusal.message) < 200
        return
    exponent = parsed.as_tuple().exponent
    assert isinstance(exponent, int)
    assert exponent >= -FRACTION_DIGITS
    assert abs(parsed) < Decimal(10) ** INTEGER_DIGITS


@given(
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{1,18})?", fullmatch=True),
)
def test_every_plain_decimal_in_bounds_reads_back_as_written(text: str) -> None:
    assert parse_decimal(text) == Decimal(text)
    assert format(parse_decimal(text), "f") == format(Decimal(text), "f")


def test_a_huge_value_is_refused_without_being_quoted_whole() -> None:
    for value in ("1e-" + "2" * 1_000_000, "9" * 1_000_000, 10**4000):
        with pytest.raises(GraphQLError) as refused:
            parse_decimal(value)
        assert len(refused.value.message) < 200


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (MAX_SAFE_INTEGER + 1, f"Long takes an integer from 0 to {MAX_SAFE_INTEGER}, not 2**53"),
        (-1, f"Long takes an integer from 0 to {MAX_SAFE_INTEGER}, not -1"),
        ("7", "Long takes an integer, not '7'"),
        (7.0, "Long takes an integer, not 7.0"),
        (True, "Long takes an integer, not True"),
        (
            10**100,
            f"Long takes an integer from 0 to {MAX_SAFE_INTEGER}, not an integer of more "
            "than 24 digits",
        ),
    ],
)
def test_a_long_out_of_range_or_not_an_integer_is_invalid_long(value: object, message: str) -> None:
    with pytest.raises(GraphQLError) as refused:
        parse_long(value)
    assert refused.value.extensions == {"code": "INVALID_LONG"}
    assert refused.value.message == message.replace("2**53", str(2**53))


def test_a_long_in_range_is_itself() -> None:
    assert parse_long(0) == 0
    assert parse_long(MAX_SAFE_INTEGER) == MAX_SAFE_INTEGER
