"""The schema's own scalars, ``Decimal`` and ``Long``, and Strawberry's ``DateTime``, strict about
what they read.

Each refuses a value it does not take with a GraphQL error carrying its code (``INVALID_DECIMAL``,
``INVALID_LONG``, ``INVALID_DATETIME``) and quoting at most :data:`QUOTED_CHARS` characters of it.
graphql-core names the variable (``Variable '$amount' has invalid value: ...``) or locates the
literal in the document.

``Decimal`` reads plain decimal notation only, within fixed bounds: no exponent, so no value can
make a later computation expand it (``1e-200000000`` was a 200-million-digit order price), and none
of the rest Python's ``Decimal()`` reads (``1_000``, Arabic-Indic digits, surrounding spaces,
``NaN``, ``Infinity``). JSON numbers are taken too, within the same bounds: a JavaScript client
sends ``0.0000001`` as ``1e-7``.

``DateTime`` is Strawberry's (ISO 8601), refusing too a time that does not exist in UTC.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NewType, cast

import strawberry
from graphql import FloatValueNode, GraphQLError, IntValueNode, StringValueNode, print_ast
from strawberry.schema.types.base_scalars import DateTimeDefinition, DecimalDefinition

if TYPE_CHECKING:
    from collections.abc import Callable

    from graphql import ValueNode

INTEGER_DIGITS = 20
"""At most this many digits before the point: far above any amount, price or size a market has."""
FRACTION_DIGITS = 18
"""At most this many after it: an ether amount in wei has 18."""
QUOTED_CHARS = 24
"""A refused value is quoted up to this many characters."""

INVALID_DECIMAL = "INVALID_DECIMAL"
INVALID_LONG = "INVALID_LONG"
INVALID_DATETIME = "INVALID_DATETIME"

_PLAIN = re.compile(rf"-?[0-9]{{1,{INTEGER_DIGITS}}}(?:\.[0-9]{{1,{FRACTION_DIGITS}}})?")
_PLAIN_MAX_CHARS = 1 + INTEGER_DIGITS + 1 + FRACTION_DIGITS
_INTEGER_BOUND = 10**INTEGER_DIGITS


def quoted(value: object) -> str:
    """``value`` as an error shows it: at most :data:`QUOTED_CHARS` characters of it, and twice
    that once escaped (a huge integer is not even printed: that alone costs time)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**QUOTED_CHARS:
        return f"an integer of more than {QUOTED_CHARS} digits"
    if isinstance(value, str):
        shown, whole = repr(value[:QUOTED_CHARS]), len(value) <= QUOTED_CHARS
    else:
        text = repr(value)  # a number, or a list or object at most a request body long
        shown, whole = text[:QUOTED_CHARS], len(text) <= QUOTED_CHARS
    if len(shown) > 2 * QUOTED_CHARS:
        shown, whole = shown[: 2 * QUOTED_CHARS], False
    return shown if whole else shown + "..."


def _invalid_decimal(value: object) -> GraphQLError:
    return GraphQLError(
        f"Decimal takes plain decimal notation (an optional minus, at most {INTEGER_DIGITS} "
        f"digits, then optionally a point and at most {FRACTION_DIGITS} digits), not "
        f"{quoted(value)}",
        extensions={"code": INVALID_DECIMAL},
    )


def parse_decimal(value: object) -> Decimal:
    """A ``Decimal`` input: a string in plain notation, or a JSON/GraphQL number, in bounds."""
    if isinstance(value, str):
        if len(value) <= _PLAIN_MAX_CHARS and _PLAIN.fullmatch(value):
            return Decimal(value)
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if abs(value) < _INTEGER_BOUND:
            return Decimal(value)
    elif isinstance(value, float) and math.isfinite(value) and abs(value) < _INTEGER_BOUND:
        number = Decimal(repr(value))  # the shortest decimal that reads back as this float
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= -FRACTION_DIGITS:
            return number
    raise _invalid_decimal(value)


def _located(parse: Callable[[ValueNode], Any]) -> Callable[..., Any]:
    """A scalar's ``parse_literal``: its error located at the value in the document."""

    def parse_literal(node: ValueNode, _variables: object = None) -> Any:
        try:
            return parse(node)
        except GraphQLError as error:
            raise GraphQLError(error.message, node, extensions=error.extensions) from None

    return parse_literal


def _text(node: ValueNode) -> str:
    """A literal as written: a string's or a number's own text, anything else printed."""
    if isinstance(node, StringValueNode | IntValueNode | FloatValueNode):
        return node.value
    return print_ast(node)


def _decimal_literal(node: ValueNode) -> Decimal:
    """Numbers in a document are written plainly too (``1000``, ``0.5``; not ``1e3``): their
    text is read as a string is, never through a float."""
    return parse_decimal(_text(node))


DECIMAL_SCALAR = dataclasses.replace(
    DecimalDefinition,
    description="A decimal number as a string, every digit kept, in fixed-point notation "
    f"(0.000000007, never 7E-9). Input may be a string in plain decimal notation (an optional "
    f"minus, at most {INTEGER_DIGITS} digits, then optionally a point and at most "
    f"{FRACTION_DIGITS} digits) or a number within the same bounds.",
    serialize=lambda value: format(value, "f"),
    parse_value=parse_decimal,
    parse_literal=_located(_decimal_literal),
)
"""Registered with the schema's ``scalar_map`` (:func:`api.schema.build_schema`)."""


MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JavaScript client reads exactly."""

Long = NewType("Long", int)


def _invalid_long(what: str, shown: str) -> GraphQLError:
    return GraphQLError(f"Long takes {what}, not {shown}", extensions={"code": INVALID_LONG})


_LONG_RANGE = f"an integer from 0 to {MAX_SAFE_INTEGER}"


def parse_long(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_long("an integer", quoted(value))
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise _invalid_long(_LONG_RANGE, quoted(value))
    return value


def _long_literal(node: ValueNode) -> int:
    if not isinstance(node, IntValueNode):
        raise _invalid_long("an integer", quoted(_text(node)))
    if len(node.value) > len(str(MAX_SAFE_INTEGER)):  # not read: it is out of range
        raise _invalid_long(_LONG_RANGE, quoted(node.value))
    return parse_long(int(node.value))


LONG_SCALAR = strawberry.scalar(
    name="Long",
    serialize=int,
    parse_value=parse_long,
    parse_literal=_located(_long_literal),
    description="An integer from 0 to 2^53 - 1, the largest a JavaScript client reads "
    "exactly (MetaTrader logins and tickets exceed GraphQL's 32-bit Int).",
)
"""Registered with the schema's ``scalar_map`` (:func:`api.schema.build_schema`)."""


def parse_datetime(value: object) -> datetime:
    """Strawberry's ``DateTime`` (ISO 8601), and a time that exists in UTC: one at the edge of
    the calendar with an offset (``0001-01-01T00:00:00+14:00``) is none, and failed in
    PostgreSQL as a fault."""
    parsed = _parse_iso_datetime(value)
    assert isinstance(parsed, datetime)
    if parsed.utcoffset() is not None:
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            raise GraphQLError(
                f"DateTime takes a time within the years 1 to 9999 in UTC, not {quoted(value)}",
                extensions={"code": INVALID_DATETIME},
            ) from None
    return parsed


_parse_iso_datetime = cast("Callable[[object], object]", DateTimeDefinition.parse_value)
DATETIME_SCALAR = dataclasses.replace(DateTimeDefinition, parse_value=parse_datetime)
"""Registered with the schema's ``scalar_map`` (:func:`api.schema.build_schema`)."""
