"""The marathon feed's wire format: one account snapshot per message, as a collector publishes it.

One JSON object per message (``docs/marathon-ingest.md`` is the reference for collector teams)::

    {"login": 5012345, "balance": "10000.00", "equity": "10123.45", "profit": "123.45",
     "margin": "215.60", "free_margin": "9907.85", "credit": "0.00",
     "positions": [{"ticket": 1, "symbol": "EURUSD", "type": "buy", "volume": "0.10",
                    "price_open": "1.08502", "profit": "85.30"}],
     "orders": [{"ticket": 2, "symbol": "GBPUSD", "type": "buy_limit", "volume": "0.05",
                 "price_open": "1.25000"}],
     "server_time": "2024-05-06T07:08:09+00:00"}

Decimals may be JSON strings or JSON numbers; both are read exactly (a number is never turned into
a float: ``0.1`` is ``Decimal("0.1")``). pydantic's own JSON parser reads a number meant for a
``Decimal`` field through a float (``123456789012345678901234567890.1`` loses its last digits), so
the body is parsed with ``json.loads(parse_float=Decimal)`` and then validated. Nothing is coerced
from a wrong type: ``"login": "123"`` or ``"volume": true`` is refused. Unknown keys are ignored,
so collectors may add fields before we read them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from domain.marathons import AccountSnapshot, OpenTrade, OrderType, PendingOrder, TradeSide

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

MAX_MESSAGE_BYTES = 256 * 1024
"""Larger bodies are refused unread (an account with thousands of positions is not a snapshot)."""

MAX_ERROR_CHARS = 500
"""An :class:`InvalidSnapshotError` message is one line of at most this many characters."""

MAX_ABS_DECIMAL = Decimal(10) ** 15
"""Every amount, price and volume is below this in absolute value."""

MAX_DECIMAL_PLACES = 100
"""And has at most this many digits after the point. Together the two bounds keep every figure
far from the limits of ``Decimal`` arithmetic, so no snapshot can make a later computation
overflow (a poison message would otherwise fail the handler on every redelivery)."""

MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z: a larger Unix timestamp is not in seconds (milliseconds, most likely)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class InvalidSnapshotError(ValueError):
    """A message that is not a valid account snapshot. ``str()`` is one line naming every problem
    (field path and reason); :attr:`problems` lists them one by one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(_summary(self.problems))


def _summary(problems: tuple[str, ...]) -> str:
    text = _PREFIX + "; ".join(problems)
    if len(text) <= MAX_ERROR_CHARS:
        return text
    room = MAX_ERROR_CHARS - len("; ... (9999 more)")
    text, shown = _PREFIX, 0
    for problem in problems:
        part = problem if shown == 0 else "; " + problem
        if len(text) + len(part) > room:
            break
        text, shown = text + part, shown + 1
    if shown == 0:  # the first problem alone is too long: cut it
        text, shown = (_PREFIX + problems[0])[: room - 3] + "...", 1
    if shown == len(problems):
        return text
    return text + f"; ... ({len(problems) - shown} more)"


_PREFIX = "invalid account snapshot: "


def _decimal(value: object) -> object:
    """A JSON number (already a Decimal or an int) or a numeric string, as an exact Decimal."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        if _NUMERIC.fullmatch(value) is None:
            raise ValueError("must be a decimal number (a JSON number or a numeric string)")
        return Decimal(value)
    raise ValueError("must be a decimal number (a JSON number or a numeric string)")


def _bounded(value: Decimal) -> Decimal:
    if abs(value) >= MAX_ABS_DECIMAL:
        raise ValueError("must be less than 1e15 in absolute value")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        raise ValueError(f"must have at most {MAX_DECIMAL_PLACES} decimal places")
    return value


def _server_time(value: object) -> object:
    """An ISO-8601 string with a time zone, or a Unix timestamp in seconds; as a UTC datetime."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO-8601 date-time string or a Unix timestamp in seconds")
    if isinstance(value, int | Decimal):
        seconds = Decimal(value)
        if not seconds.is_finite() or not 0 <= seconds <= MAX_TIMESTAMP:
            raise ValueError(
                "Unix timestamp out of range: seconds since 1970 expected (not milliseconds)"
            )
        microseconds = int(seconds.quantize(Decimal("0.000001")) * 1_000_000)
        return _EPOCH + timedelta(microseconds=microseconds)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO-8601 date-time") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise ValueError("must carry a time zone (e.g. 'Z' or '+00:00')")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+14:00 is before the first UTC year
            raise ValueError("out of range: not a time within the years 1 to 9999 in UTC") from None
    raise ValueError("must be an ISO-8601 date-time string or a Unix timestamp in seconds")


WireDecimal = Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_bounded)]
Positive = Annotated[WireDecimal, Field(gt=0)]
Ticket = Annotated[int, Field(gt=0)]


def _no_nul(value: str) -> str:
    # Stored in jsonb, which cannot hold it: a snapshot with one would fail on every redelivery.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000)")
    return value


Symbol = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class PositionMessage(_Wire):
    """An open position; ``profit`` is its floating profit in the account currency."""

    ticket: Ticket
    symbol: Symbol
    type: Literal["buy", "sell"]
    volume: Positive
    price_open: Positive
    profit: WireDecimal

    def to_domain(self) -> OpenTrade:
        return OpenTrade(
            ticket=self.ticket,
            symbol=self.symbol,
            side=TradeSide(self.type),
            volume=self.volume,
            open_price=self.price_open,
            profit=self.profit,
        )


class OrderMessage(_Wire):
    """A pending order."""

    ticket: Ticket
    symbol: Symbol
    type: Literal[
        "buy_limit", "sell_limit", "buy_stop", "sell_stop", "buy_stop_limit", "sell_stop_limit"
    ]
    volume: Positive
    price_open: Positive

    def to_domain(self) -> PendingOrder:
        return PendingOrder(
            ticket=self.ticket,
            symbol=self.symbol,
            type=OrderType(self.type),
            volume=self.volume,
            price=self.price_open,
        )


class SnapshotMessage(_Wire):
    """One account's state as the collector read it at ``server_time``."""

    login: Annotated[int, Field(gt=0)]
    balance: WireDecimal
    equity: WireDecimal
    profit: WireDecimal
    """The floating profit of the open positions."""
    margin: Annotated[WireDecimal, Field(ge=0)]
    free_margin: WireDecimal
    credit: WireDecimal = Decimal(0)
    positions: list[PositionMessage] = Field(default_factory=list)
    orders: list[OrderMessage] = Field(default_factory=list)
    server_time: Annotated[datetime, BeforeValidator(_server_time)]


def parse_snapshot(body: bytes) -> AccountSnapshot:
    """The account snapshot in one message body; :class:`InvalidSnapshotError` naming every problem
    for a body that is too large, not JSON, not an object, or not a valid snapshot."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidSnapshotError(
            [f"message: {len(body)} bytes is over the limit of {MAX_MESSAGE_BYTES} bytes"]
        )
    try:
        raw = json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise InvalidSnapshotError([f"not JSON: {_one_line(str(exc), 120)}"]) from None
    if not isinstance(raw, dict):
        raise InvalidSnapshotError([f"message: must be a JSON object, not {_describe(raw)}"])
    try:
        message = SnapshotMessage.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSnapshotError([_problem(error) for error in exc.errors()]) from None
    return _to_domain(message)


def _to_domain(message: SnapshotMessage) -> AccountSnapshot:
    """The domain objects; their own checks (a ValueError) become problems at the same paths."""
    problems: list[str] = []
    positions: list[OpenTrade] = []
    orders: list[PendingOrder] = []
    for i, position in enumerate(message.positions):
        try:
            positions.append(position.to_domain())
        except ValueError as exc:
            problems.append(f"positions.{i}: {exc}")
    for i, order in enumerate(message.orders):
        try:
            orders.append(order.to_domain())
        except ValueError as exc:
            problems.append(f"orders.{i}: {exc}")
    if problems:
        raise InvalidSnapshotError(problems)
    try:
        return AccountSnapshot(
            login=message.login,
            balance=message.balance,
            equity=message.equity,
            profit=message.profit,
            margin=message.margin,
            free_margin=message.free_margin,
            server_time=message.server_time,
            credit=message.credit,
            open_positions=tuple(positions),
            pending_orders=tuple(orders),
        )
    except ValueError as exc:
        raise InvalidSnapshotError([f"snapshot: {exc}"]) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _problem(error: ErrorDetails) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "message"
    reason = error["msg"].removeprefix("Value error, ")
    if error["type"] != "missing":
        reason += f" (got {_describe(error['input'])})"
    return f"{path}: {_one_line(reason, 160)}"


def _describe(value: object) -> str:
    """A short, one-line rendering of an offending input (never a whole object)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return _one_line(str(value), 40)
    if isinstance(value, str):
        return _one_line(json.dumps(value), 40)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


EXAMPLE_MESSAGE: dict[str, Any] = {
    "login": 5012345,
    "balance": "10000.00",
    "equity": "10123.45",
    "profit": "123.45",
    "margin": "215.60",
    "free_margin": "9907.85",
    "credit": "0.00",
    "positions": [
        {
            "ticket": 880123451,
            "symbol": "EURUSD",
            "type": "buy",
            "volume": "0.10",
            "price_open": "1.08502",
            "profit": "85.30",
        },
        {
            "ticket": 880123467,
            "symbol": "XAUUSD",
            "type": "sell",
            "volume": "0.02",
            "price_open": "2351.20",
            "profit": "38.15",
        },
    ],
    "orders": [
        {
            "ticket": 880123502,
            "symbol": "GBPUSD",
            "type": "buy_limit",
            "volume": "0.05",
            "price_open": "1.25000",
        }
    ],
    "server_time": "2024-05-06T07:08:09+00:00",
}
"""A realistic message (two positions, one pending order) whose figures agree with each other:
equity = balance + credit + profit, free margin = equity - margin, profit = the positions' sum."""
