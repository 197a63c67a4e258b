"""Hermes' price update messages, read from the documented bodies: exact prices, UTC times,
ids in every spelling, and every malformed entry refused with what is wrong with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from api.sources.hermes import (
    HermesPrice,
    MalformedUpdateError,
    feed_id,
    parse_price_update,
    scaled,
)
from tests.standins.hermes import BTC, ETH, MESSAGES, update


@pytest.mark.parametrize(
    ("mantissa", "expo", "expected"),
    [
        (2920679499999, -8, "29206.79499999"),
        (509500001, -8, "5.09500001"),
        (123, 0, "123"),
        (0, -8, "0E-8"),
        (12, 3, "12000"),
        (-5, -2, "-0.05"),
        (1, -32, "1E-32"),
        # 40 digits: past the decimal context's 28, which Decimal arithmetic would round.
        (
            1234567890123456789012345678901234567890,
            -20,
            "12345678901234567890.12345678901234567890",
        ),
        (2**63 - 1, 32, str((2**63 - 1) * 10**32)),
    ],
)
def test_scaled_is_exact(mantissa: int, expo: int, expected: str) -> None:
    value = scaled(mantissa, expo)
    assert value == Decimal(expected)
    assert str(value) == expected


def test_the_documented_message_is_read_exactly() -> None:
    prices, problems = parse_price_update(json.dumps(MESSAGES["btc_eth"]))
    assert problems == []
    assert prices == [
        HermesPrice(
            BTC,
            Decimal("29206.79499999"),
            Decimal("5.09500001"),
            datetime(2024, 6, 6, 0, 0, tzinfo=UTC),
        ),
        HermesPrice(
            ETH,
            Decimal("1841.36023127"),
            Decimal("1.77166324"),
            datetime.fromtimestamp(1692110601, UTC),
        ),
    ]
    assert all(p.published_at.tzinfo is UTC for p in prices)


def test_an_integer_sent_as_a_json_number_is_read_too() -> None:
    body = update("btc")
    body["parsed"][0]["price"]["price"] = 2920679499999
    [price], _ = parse_price_update(json.dumps(body))
    assert price.price == Decimal("29206.79499999")


@pytest.mark.parametrize("text", [BTC, "0x" + BTC, BTC.upper(), "0X" + BTC.upper(), f"  0x{BTC} "])
def test_feed_ids_compare_whatever_their_case_and_prefix(text: str) -> None:
    assert feed_id(text) == BTC


@pytest.mark.parametrize("text", ["", "0x", BTC[:-1], BTC + "0", "g" * 64, "0x0x" + BTC[4:]])
def test_a_feed_id_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Pyth price feed id"):
        feed_id(text)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("{not json", "not JSON"),
        ("[]", "no 'parsed' list"),
        ('{"binary": {"encoding": "hex", "data": []}}', "no 'parsed' list"),
        ('{"parsed": {"id": "x"}}', "no 'parsed' list"),
    ],
)
def test_an_unreadable_event_is_refused(data: str, reason: str) -> None:
    with pytest.raises(MalformedUpdateError, match=reason):
        parse_price_update(data)


def _with(path: tuple[str, ...], value: object) -> str:
    body = update("btc_eth")
    entry = body["parsed"][0]
    for key in path[:-1]:
        entry = entry[key]
    if value is _DELETE:
        del entry[path[-1]]
    else:
        entry[path[-1]] = value
    return json.dumps(body)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("id",), "nope", "not a Pyth price feed id"),
        (("id",), _DELETE, "'id' is missing"),
        (("price",), _DELETE, "'price' is missing"),
        (("price", "price"), "12.5", "'price' is missing or not an integer"),
        (("price", "price"), "abc", "'price' is missing or not an integer"),
        (("price", "price"), 1.5, "'price' is missing or not an integer"),
        (("price", "price"), True, "'price' is missing or not an integer"),
        (("price", "price"), "0", "price 0E-8 is not positive"),
        (("price", "price"), "-100", "is not positive"),
        (("price", "conf"), "-1", "conf -1E-8 is negative"),
        (("price", "conf"), _DELETE, "'conf' is missing"),
        (("price", "expo"), "-8", "'expo' is missing or not an integer"),
        (("price", "expo"), 10**9, "expo 1000000000 is out of range"),
        (("price", "publish_time"), "1717632000", "'publish_time' is missing"),
        (("price", "publish_time"), 10**15, "is not a time"),
    ],
)
def test_a_malformed_entry_is_skipped_and_the_others_kept(
    path: tuple[str, ...], value: object, reason: str
) -> None:
    prices, problems = parse_price_update(_with(path, value))
    assert [p.feed_id for p in prices] == [ETH]
    [problem] = problems
    assert problem.startswith("parsed[0]: ")
    assert reason in problem
