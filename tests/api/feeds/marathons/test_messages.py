"""The marathon feed's wire format: what parses, exactly, and what is refused, with which reason."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from api.feeds.marathons.messages import (
    EXAMPLE_MESSAGE,
    MAX_ERROR_CHARS,
    MAX_MESSAGE_BYTES,
    InvalidSnapshotError,
    SnapshotMessage,
    _to_domain,
    parse_snapshot,
)
from domain.marathons import AccountSnapshot, OpenTrade, OrderType, PendingOrder, TradeSide

if TYPE_CHECKING:
    from collections.abc import Callable

DOCS = Path(__file__).resolve().parents[4] / "docs" / "marathon-ingest.md"


def body(**changes: Any) -> bytes:
    message = copy.deepcopy(EXAMPLE_MESSAGE)
    message.update(changes)
    return json.dumps(message).encode()


def refused(raw: bytes) -> InvalidSnapshotError:
    with pytest.raises(InvalidSnapshotError) as caught:
        parse_snapshot(raw)
    return caught.value


def test_the_example_parses_into_the_domain_objects() -> None:
    assert parse_snapshot(json.dumps(EXAMPLE_MESSAGE).encode()) == AccountSnapshot(
        login=5012345,
        balance=Decimal("10000.00"),
        equity=Decimal("10123.45"),
        profit=Decimal("123.45"),
        margin=Decimal("215.60"),
        free_margin=Decimal("9907.85"),
        server_time=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        credit=Decimal("0.00"),
        open_positions=(
            OpenTrade(
                ticket=880123451,
                symbol="EURUSD",
                side=TradeSide.BUY,
                volume=Decimal("0.10"),
                open_price=Decimal("1.08502"),
                profit=Decimal("85.30"),
            ),
            OpenTrade(
                ticket=880123467,
                symbol="XAUUSD",
                side=TradeSide.SELL,
                volume=Decimal("0.02"),
                open_price=Decimal("2351.20"),
                profit=Decimal("38.15"),
            ),
        ),
        pending_orders=(
            PendingOrder(
                ticket=880123502,
                symbol="GBPUSD",
                type=OrderType.BUY_LIMIT,
                volume=Decimal("0.05"),
                price=Decimal("1.25000"),
            ),
        ),
    )


def test_the_example_figures_agree() -> None:
    snapshot = parse_snapshot(body())
    assert snapshot.equity == snapshot.balance + snapshot.credit + snapshot.profit
    assert snapshot.free_margin == snapshot.equity - snapshot.margin
    assert snapshot.profit == sum(p.profit for p in snapshot.open_positions)


def test_the_docs_show_the_example() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert json.loads(blocks[0]) == EXAMPLE_MESSAGE


def test_json_numbers_are_read_as_exact_decimals_never_floats() -> None:
    raw = body().replace(b'"balance": "10000.00"', b'"balance": 0.1')
    raw = raw.replace(b'"credit": "0.00"', b'"credit": 123456789012.123456789012345678')
    raw = raw.replace(b'"margin": "215.60"', b'"margin": 2.5e2')
    raw = raw.replace(b'"equity": "10123.45"', b'"equity": 10123')
    snapshot = parse_snapshot(raw)
    assert str(snapshot.balance) == "0.1"
    assert snapshot.balance == Decimal("0.1")
    assert snapshot.credit == Decimal("123456789012.123456789012345678")
    assert snapshot.margin == Decimal(250)
    assert snapshot.equity == Decimal(10123)
    assert isinstance(snapshot.equity, Decimal)


def test_numeric_strings_keep_their_digits() -> None:
    snapshot = parse_snapshot(body(profit="0.30000000000000004", margin="1E+2"))
    assert snapshot.profit == Decimal("0.30000000000000004")
    assert snapshot.margin == Decimal(100)


@pytest.mark.parametrize(
    ("server_time", "expected"),
    [
        (1715000000, datetime(2024, 5, 6, 12, 53, 20, tzinfo=UTC)),
        (1715000000.25, datetime(2024, 5, 6, 12, 53, 20, 250000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T10:08:09.5+03:00", datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC)),
    ],
)
def test_server_time_is_an_aware_iso_string_or_unix_seconds(
    server_time: object, expected: datetime
) -> None:
    parsed = parse_snapshot(body(server_time=server_time)).server_time
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_an_offset_is_kept_as_the_same_instant_in_utc() -> None:
    parsed = parse_snapshot(body(server_time="2024-05-06T10:08:09+03:00")).server_time
    assert parsed == datetime(2024, 5, 6, 10, 8, 9, tzinfo=timezone(timedelta(hours=3)))
    assert parsed.tzinfo is UTC


def test_optional_fields_default_and_unknown_keys_are_ignored() -> None:
    message = {
        k: v for k, v in EXAMPLE_MESSAGE.items() if k not in ("credit", "positions", "orders")
    }
    message["collector_version"] = "2.3.1"
    message["leverage"] = 500
    snapshot = parse_snapshot(json.dumps(message).encode())
    assert snapshot.credit == Decimal(0)
    assert snapshot.open_positions == ()
    assert snapshot.pending_orders == ()


def _position(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(message: dict[str, Any]) -> None:
        message["positions"][0].update(changes)

    return change


def _order(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(message: dict[str, Any]) -> None:
        message["orders"][0].update(changes)

    return change


def _set(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda message: message.update(changes)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda message: message.pop(key)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_drop("login"), "login: Field required"),
        (_set(login="abc"), 'login: Input should be a valid integer (got "abc")'),
        (_set(login="5012345"), "login: Input should be a valid integer"),
        (_set(login=5012345.0), "login: Input should be a valid integer"),
        (_set(login=True), "login: Input should be a valid integer (got true)"),
        (_set(login=-1), "login: Input should be greater than 0 (got -1)"),
        (_drop("server_time"), "server_time: Field required"),
        (_set(balance="abc"), "balance: must be a decimal number"),
        (_set(balance="NaN"), "balance: must be a decimal number"),
        (_set(balance=" 1"), "balance: must be a decimal number"),
        (_set(balance="\u0661\u0660\u0660\u0660"), "balance: must be a decimal number"),
        (_set(balance="1_000"), "balance: must be a decimal number"),
        (_set(balance=True), "balance: must be a decimal number"),
        (_set(balance=None), "balance: must be a decimal number (a JSON number or a numeric"),
        (_set(equity=[1]), "equity: must be a decimal number"),
        (_set(equity="1e400"), "equity: must be less than 1e15 in absolute value"),
        (_set(profit="1e-200"), "profit: must have at most 100 decimal places"),
        (_set(margin="-1"), "margin: Input should be greater than or equal to 0"),
        (_set(credit=None), "credit: must be a decimal number"),
        (_set(positions=None), "positions: Input should be a valid list"),
        (_set(positions={"ticket": 1}), "positions: Input should be a valid list"),
        (_set(orders=[1]), "orders.0: Input should be a valid dictionary"),
        (
            _position(volume="-0.10"),
            'positions.0.volume: Input should be greater than 0 (got "-0.10")',
        ),
        (_position(volume=0), "positions.0.volume: Input should be greater than 0"),
        (_position(price_open="0"), "positions.0.price_open: Input should be greater than 0"),
        (_position(type="long"), "positions.0.type: Input should be 'buy' or 'sell'"),
        (_position(ticket=0), "positions.0.ticket: Input should be greater than 0"),
        (_position(ticket="880123451"), "positions.0.ticket: Input should be a valid integer"),
        (_position(symbol=""), "positions.0.symbol: String should have at least 1 character"),
        (_position(symbol=42), "positions.0.symbol: Input should be a valid string"),
        (_order(type="market"), "orders.0.type: Input should be 'buy_limit', 'sell_limit'"),
        (_order(type="BUY_LIMIT"), "orders.0.type"),
        (_order(volume="-1"), "orders.0.volume: Input should be greater than 0"),
        (_order(price_open=None), "orders.0.price_open: must be a decimal number"),
        (_set(server_time="2024-05-06T07:08:09"), "server_time: must carry a time zone"),
        (_set(server_time="2024-05-06"), "server_time: must carry a time zone"),
        (_set(server_time="yesterday"), "server_time: not an ISO-8601 date-time"),
        (_set(server_time="1715000000"), "server_time: not an ISO-8601 date-time"),
        (_set(server_time=1715000000000), "server_time: Unix timestamp out of range"),
        (_set(server_time=-1), "server_time: Unix timestamp out of range"),
        (_set(server_time=True), "server_time: must be an ISO-8601 date-time string or a Unix"),
        (_set(server_time=None), "server_time: must be an ISO-8601 date-time string or a Unix"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    message = copy.deepcopy(EXAMPLE_MESSAGE)
    change(message)
    error = refused(json.dumps(message).encode())
    assert str(error).startswith("invalid account snapshot: ")
    assert expected in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "not JSON: Expecting value: line 1 column 1"),
        (b"login=1", "not JSON: Expecting value"),
        (b'{"login": 1', "not JSON: Expecting ',' delimiter"),
        (b"\xff\xfe\xfd", "not JSON"),
        (b'{"login": NaN}', "not JSON: NaN is not a JSON value"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON: maximum recursion depth exceeded"),
        (b"[]", "message: must be a JSON object, not an array"),
        (b"[" + json.dumps(EXAMPLE_MESSAGE).encode() + b"]", "must be a JSON object, not an array"),
        (b'"hello"', 'message: must be a JSON object, not "hello"'),
        (b"42", "message: must be a JSON object, not 42"),
        (b"null", "message: must be a JSON object, not null"),
    ],
)
def test_what_is_not_a_json_object_is_refused(raw: bytes, expected: str) -> None:
    assert expected in str(refused(raw))


def test_an_oversized_body_is_refused_unread() -> None:
    padding = "x" * MAX_MESSAGE_BYTES
    error = refused(body(padding=padding))
    assert f"over the limit of {MAX_MESSAGE_BYTES} bytes" in str(error)
    assert len(str(error)) < 100
    parse_snapshot(body(padding="x" * (MAX_MESSAGE_BYTES - len(body()) - 20)))  # just under


def test_every_problem_is_named() -> None:
    error = refused(
        json.dumps({"login": "abc", "balance": "1", "positions": [{"type": "buy"}]}).encode()
    )
    for problem in (
        "login: Input should be a valid integer",
        "equity: Field required",
        "positions.0.ticket: Field required",
        "positions.0.volume: Field required",
        "server_time: Field required",
    ):
        assert problem in str(error)
    assert len(error.problems) == 11


def test_the_message_is_one_bounded_line_however_many_problems() -> None:
    positions = [{"ticket": -i, "symbol": "EURUSD\nGBPUSD" * 20, "type": "x"} for i in range(300)]
    error = refused(body(positions=positions, login="a" * 10_000))
    text = str(error)
    assert len(text) <= MAX_ERROR_CHARS
    assert "\n" not in text
    assert text.startswith(
        'invalid account snapshot: login: Input should be a valid integer (got "a'
    )
    assert re.search(r"; \.\.\. \(\d+ more\)$", text)
    assert len(error.problems) > 900


def test_inputs_are_quoted_short_never_whole() -> None:
    error = refused(body(login={"nested": "x" * 1000}, balance="9" * 500))
    assert "login: Input should be a valid integer (got an object)" in str(error)
    assert "x" * 50 not in str(error)
    assert "9" * 50 not in str(error)


def test_what_the_domain_refuses_is_named_at_its_path() -> None:
    """The wire constraints refuse everything the domain does first; the domain's own checks are
    still reported by path if the two ever disagree."""
    message = SnapshotMessage.model_validate(json.loads(body()))
    bad_position = message.positions[1].model_copy(update={"volume": Decimal(-1)})
    bad_order = message.orders[0].model_copy(update={"price_open": Decimal(0)})
    broken = message.model_copy(update={"positions": [message.positions[0], bad_position]})
    with pytest.raises(InvalidSnapshotError, match=r"positions\.1: volume must be positive"):
        _to_domain(broken)
    with pytest.raises(InvalidSnapshotError, match=r"orders\.0: price must be positive"):
        _to_domain(message.model_copy(update={"orders": [bad_order]}))
    with pytest.raises(InvalidSnapshotError, match="snapshot: margin must not be negative"):
        _to_domain(message.model_copy(update={"margin": Decimal(-1)}))


def test_the_error_is_a_value_error() -> None:
    assert issubclass(InvalidSnapshotError, ValueError)
