"""Pyth Hermes' wire format: the price update messages of ``GET /v2/updates/price/stream``.

Each server-sent event's data is one JSON object::

    {"binary": {"encoding": "hex", "data": ["504e4155..."]},
     "parsed": [{"id": "e62df6c8...",
                 "price": {"price": "2920679499999", "conf": "509500001", "expo": -8,
                           "publish_time": 1717632000},
                 "ema_price": {...}, "metadata": {"slot": 85480034, ...}}]}

``price`` and ``conf`` are integers (sent as strings, as they are 64-bit) scaled by ``10**expo``;
``publish_time`` is Unix seconds. Only ``parsed`` is read: ``binary`` is the signed update for
on-chain contracts, which the server does not verify (it trusts the Hermes it is pointed at).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import orjson

STREAM_PATH = "/v2/updates/price/stream"

MAX_EXPO = 32
"""Exponents Pyth uses are between -12 and 0; one past this is a corrupt message, and its power
of ten would be costly to compute."""

T = TypeVar("T")

_KIND_NAMES = {int: "an integer", str: "a string", dict: "an object"}

_INTEGER = re.compile(r"-?[0-9]{1,40}")
_FEED_ID = re.compile(r"(?:0x)?([0-9a-f]{64})")


class MalformedUpdateError(ValueError):
    """A price update that does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class HermesPrice:
    """One feed's price from a price update, converted exactly."""

    feed_id: str
    """Lower-case hex without ``0x``, as :func:`feed_id` normalizes it."""
    price: Decimal
    confidence: Decimal
    published_at: datetime


def feed_id(text: str) -> str:
    """A price feed id as compared here: 64 hex digits, lower-case, no ``0x`` (Hermes sends ids
    without it; Pyth's lists print them with it). ValueError when it is not one."""
    match = _FEED_ID.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a Pyth price feed id (64 hex digits, 0x optional)")
    return match.group(1)


def scaled(mantissa: int, expo: int) -> Decimal:
    """``mantissa * 10**expo`` as an exact Decimal: no float, and no rounding to the decimal
    context's precision (Decimal arithmetic would round past 28 digits)."""
    if expo >= 0:
        return Decimal(mantissa * 10**expo)
    sign, digits, _ = Decimal(mantissa).as_tuple()
    return Decimal((sign, digits, expo))


def parse_price_update(data: str) -> tuple[list[HermesPrice], list[str]]:
    """The prices of one event, and what was wrong with each entry that had to be skipped.
    MalformedUpdateError when the event as a whole is unreadable."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedUpdateError(f"not JSON ({exc})") from None
    parsed = body.get("parsed") if isinstance(body, dict) else None
    if not isinstance(parsed, list):
        raise MalformedUpdateError("no 'parsed' list of price updates")
    prices: list[HermesPrice] = []
    problems: list[str] = []
    for index, entry in enumerate(parsed):
        try:
            prices.append(_entry(entry))
        except MalformedUpdateError as exc:
            problems.append(f"parsed[{index}]: {exc}")
    return prices, problems


def _entry(entry: Any) -> HermesPrice:
    if not isinstance(entry, dict):
        raise MalformedUpdateError("not an object")
    try:
        id_ = feed_id(_field(entry, "id", str))
    except ValueError as exc:
        raise MalformedUpdateError(str(exc)) from None
    price = _field(entry, "price", dict)
    expo = _field(price, "expo", int)
    if not -MAX_EXPO <= expo <= MAX_EXPO:
        raise MalformedUpdateError(f"expo {expo} is out of range")
    value = scaled(_integer(price, "price"), expo)
    confidence = scaled(_integer(price, "conf"), expo)
    if value <= 0:
        raise MalformedUpdateError(f"price {value} is not positive")
    if confidence < 0:
        raise MalformedUpdateError(f"conf {confidence} is negative")
    publish_time = _field(price, "publish_time", int)
    try:
        published_at = datetime.fromtimestamp(publish_time, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedUpdateError(f"publish_time {publish_time} is not a time") from None
    return HermesPrice(id_, value, confidence, published_at)


def _field(obj: dict[str, Any], name: str, kind: type[T]) -> T:
    value = obj.get(name)
    # bool is an int to isinstance, never to Hermes.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedUpdateError(f"{name!r} is missing or not {_KIND_NAMES[kind]}")
    return value


def _integer(obj: dict[str, Any], name: str) -> int:
    """An integer Hermes sends as a string (64-bit values do not fit a JSON number everywhere);
    a plain JSON integer is taken too."""
    value = obj.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise MalformedUpdateError(f"{name!r} is missing or not an integer")
