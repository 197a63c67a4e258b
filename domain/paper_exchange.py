"""A paper-trading exchange: one margin account per user, trading the perpetual markets against the
simulated (mark) prices with market, limit, take-profit and stop-loss orders.

Everything here is pure: a :class:`PaperAccount` is an in-memory aggregate that a store persists
(``to_payload``) and reloads (``from_payload``); every operation that changes it returns what
changed (:class:`Changes`: orders, fills, positions), so the caller can store exactly that and
publish events. Times are given, never read. Order and fill ids ("1", "2", ...) come from one
sequence the account persists: unique within the account, so a store keys them by owner and id.

Account. A cross-margin account in USD (every market's quote). It starts with a paper balance
(DEFAULT_PAPER_BALANCE unless given) and holds one net position per symbol (a market id such as
``BTC-PERP``): a signed size (+ long, - short), an average entry price and the PnL it realized.
At a map of mark prices (``../shared/DOMAIN.md``):

    unrealized PnL    = size * (mark - entry)               per position, rounded DOWN; no mark: 0
    net balance       = wallet balance + sum of unrealized PnL
    margin used       = sum of |size| * entry / leverage    per position, rounded UP
    order margin      = sum of what open limit orders reserve (below)
    available balance = net balance - margin used - order margin          (may be negative)
    wallet balance    = initial balance + realized PnL
    realized PnL      = sum over fills of (PnL - fee)       (fees go to realized, DOMAIN.md)
    total fees paid   = sum over fills of fee

A symbol's leverage is the account's default (DEFAULT_LEVERAGE) capped at the market's maximum,
unless the account's payload chose one for it (``leverage``, 1 to the market's maximum). A
position's liquidation price is the isolated view of ``domain.perps`` (collateral
``|size| * entry / leverage``: long ``entry * (1 - 1/L) / (1 - MMR)``, short
``entry * (1 + 1/L) / (1 + MMR)``), kept to PRICE_PLACES and rounded against the trader (a long's
up, a short's down). The account itself is never liquidated: a paper balance may go negative, and
a liquidation worker, if one is wanted, is a separate step.

Fills (average cost, DOMAIN.md "Portfolio"). A fill of ``q`` at ``price``:

    fee       = q * price * taker fee rate, rounded UP to MONEY_PLACES (every fill pays the taker
                rate, limit fills too: the markets define no maker rate)
    same side as the position (or flat): size grows, entry = size-weighted average of the old entry
                and the price, kept to PRICE_PLACES rounded against the trader (a long's up, a
                short's down); PnL 0
    opposite side, up to the size: PnL = q * (price - entry) for a long, q * (entry - price) for a
                short, rounded DOWN (a gain down, a loss up); the entry stays; size 0 closes it
    opposite side, past the size (a flip): closes the position (PnL as above on its size), then
                opens the rest at the fill price. The fee is split: the closing part's share
                ``fee * closed / q`` (rounded UP) goes to the closed position, the rest to the new
                one
    wallet balance += PnL - fee; realized PnL += PnL - fee; total fees += fee

A position's ``realized_pnl`` is what it settled since it opened (its fees included); one that
closes is reported once with size 0 and then forgotten; a flip starts a new position.
:class:`Fill` carries ``pnl`` (gross) and ``fee``; its ``realized_pnl`` is ``pnl - fee``.

Orders. :meth:`PaperAccount.place_order` takes MARKET and LIMIT orders (TAKE_PROFIT and STOP_LOSS
orders only exist as children of an entry):

- MARKET fills at once, whole, at the symbol's mark.
- LIMIT that is marketable now (a BUY at or above the mark, a SELL at or below) fills at once at
  the mark, like a market order. Otherwise it rests and reserves ``q * limit / leverage`` (UP) plus
  the fee ``q * limit * rate`` (UP) of its whole quantity, whatever the position (a conservative
  reservation: it may turn into a position of its full size by the time it fills). A resting BUY
  fills, whole and at its limit price, on the first :meth:`PaperAccount.on_price` at or below the
  limit (a SELL at or above); its reservation is released then or when it is canceled. Leverage
  changes do not re-price existing reservations.
- Take-profit and stop-loss are given with the entry and become two reduce-only child orders on the
  other side (``parent_id`` = the entry, which is also their OCO group). They are pending
  (``active`` false) until the entry fills; then they arm with quantity ``min(entry quantity,
  |position|)``. An armed child triggers on a price at or past its level (touch, no previous price
  needed; a jump past it counts): protecting a long, TP at ``price >= level`` and SL at
  ``price <= level``; protecting a short, TP at ``price <= level`` and SL at ``price >= level``.
  A triggered child fills at that price (a market order, so a gap fills a stop beyond its level),
  reduce-only: at most the current position; ``filled`` may be less than ``quantity`` and its
  status is still FILLED. Its sibling is canceled (one cancels the other). Whenever a fill leaves
  the symbol flat or on the other side, every armed child protecting the old side is canceled (the
  position was closed some other way); an entry that leaves no position on its own side (it
  reduced an opposite position) cancels its children when it fills.
- :meth:`PaperAccount.on_price` first fills the symbol's crossed resting limit orders (oldest
  first), then triggers its armed children (oldest first), including children armed in the same
  call: a tick that fills a limit entry beyond its stop-loss stops it out at once.
- Canceling an entry that has not filled cancels its pending children; canceling one armed child
  leaves its sibling. Only open (NEW) orders can be canceled.
- Statuses: NEW (open: resting, pending or armed), FILLED, CANCELED. PARTIALLY_FILLED and REJECTED
  exist for clients and stores but this engine never produces them: fills are whole, and a refused
  request raises OrderError and leaves nothing behind.

Validation (:class:`OrderError`, a ``TradeError``; ``code`` stable, message fit for a user), in
this order:

    CLIENT_ORDER_ID_REUSED  the client order id was used for a request with different fields
    INVALID_CLIENT_ORDER_ID not 1 to 64 of letters, digits and ``- _ . : /``
    UNKNOWN_SYMBOL          not in the catalog
    INVALID_ORDER_TYPE      TAKE_PROFIT or STOP_LOSS placed on their own
    INVALID_QUANTITY        not finite, not positive, >= MAX_AMOUNT, below the market's minimum,
                            not a multiple of its step
    INVALID_PRICE           a limit order without a positive, finite price below MAX_AMOUNT on
                            the market's tick; a market order with a price
    PRICE_UNAVAILABLE       a market order for a symbol without a (positive, finite) mark
    INVALID_TAKE_PROFIT     not a positive price below MAX_AMOUNT on the tick, or not beyond the
                            entry price in the profitable direction (a BUY's above, a SELL's below)
    INVALID_STOP_LOSS       the same in the losing direction (a BUY's below, a SELL's above)
    INSUFFICIENT_BALANCE    initial margin + fee exceeds the available balance (below)

TP/SL are checked against the price the entry fills at: the mark when it fills at once, the limit
price when it rests. The margin check for an order that fills at once counts only the part that
opens exposure: ``opening = q - (the part that reduces an opposite position)``; an order that only
reduces (opening 0) is always accepted, so a trader can always get out; otherwise
``opening * price / leverage`` (UP) + the fee on all of ``q`` must not exceed the available
balance (the margin a flip releases is not counted). A resting limit order must be able to reserve
its reservation. A position whose symbol has no mark in the given prices counts no unrealized
PnL.

Idempotency. A client order id is unique within the account. Placing again with one already used
returns the original order as it stands now (it may have filled since) with ``duplicate=True``
and changes nothing, provided the request is the same (symbol, side, type, quantity, price,
take-profit and stop-loss, compared as numbers: 1.0 equals 1); with any field different it raises
CLIENT_ORDER_ID_REUSED, since that is a different order, not a retry. The check comes before any
other validation, so a retry is recognised even if the original could not be placed today (a
balance since spent). A request that was refused used up nothing: the same id may be retried.

Cancel: ORDER_NOT_FOUND for an id the account does not have, ORDER_NOT_OPEN for a final order.

Payloads. ``to_payload`` gives JSON-friendly dicts: decimals as fixed-point strings, camelCase keys
with the live dashboard's names (``../shared/DESIGN.md``): balance ``walletBalance``,
``unrealizedPnl``, ``realizedPnl``, ``totalFeesPaid``, ``netBalance``; position ``symbol``,
``side``, ``entryPrice``, ``size``, ``unrealizedPnl``, ``leverage``, ``liquidationPrice``; order
``id``, ``symbol``, ``type``, ``side``, ``status``, ``filled``; and more fields beside them. A
position's ``size`` there is unsigned, with ``side`` LONG or SHORT (None once flat), as in
``domain.perps`` (:meth:`PaperAccount.view` shows a closed position from :class:`Changes` too);
the stored position (``PaperPosition.to_payload``) keeps the signed size.

Arithmetic. Quantities and prices stay below MAX_AMOUNT; money is quantized with a wide context so
that no amount, however large, makes a quantize fail.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import TYPE_CHECKING, Any

from domain.markets import UnknownMarketError
from domain.payloads import PayloadCodec
from domain.perps import Position, Side, liquidation_price
from domain.perps_trades import MAX_AMOUNT, MONEY_PLACES, PRICE_PLACES, TradeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from domain.markets import Market, MarketCatalog

CURRENCY = "USD"
"""The account's currency: the quote of every market."""
DEFAULT_PAPER_BALANCE = Decimal(10_000)
"""What a new paper account starts with, in USD."""
DEFAULT_LEVERAGE = Decimal(10)
"""A symbol's leverage until its owner sets one (capped at the market's maximum)."""
MAX_CLIENT_ORDER_ID_LENGTH = 64
_CLIENT_ORDER_ID = re.compile(rf"[A-Za-z0-9_.:/-]{{1,{MAX_CLIENT_ORDER_ID_LENGTH}}}")

_ZERO = Decimal(0)
_ONE = Decimal(1)
_WIDE = Context(prec=100)
"""Quantizing needs room for every digit of the result; this context never runs out of it."""


def _up(amount: Decimal, places: Decimal = MONEY_PLACES) -> Decimal:
    return amount.quantize(places, ROUND_CEILING, context=_WIDE)


def _down(amount: Decimal, places: Decimal = MONEY_PLACES) -> Decimal:
    return amount.quantize(places, ROUND_FLOOR, context=_WIDE)


def _text(value: Decimal) -> str:
    return f"{value:f}"


def _optional_text(value: Decimal | None) -> str | None:
    return None if value is None else _text(value)


class OrderError(TradeError):
    """An order request or operation the exchange refuses; ``code`` is stable for clients, the
    message says why."""


class OrderSide(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is OrderSide.BUY else -1

    @property
    def opposite(self) -> OrderSide:
        return OrderSide.SELL if self is OrderSide.BUY else OrderSide.BUY


class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    STOP_LOSS = "STOP_LOSS"


class OrderStatus(enum.Enum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    """Never produced: fills are whole."""
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    """Never produced: a refused request raises OrderError and stores nothing."""

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a trader asks for (``placeOrder``)."""

    symbol: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    """The limit price (LIMIT only)."""
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None
    client_order_id: str | None = None
    """Makes the request idempotent: a retry with the same id never places a second order."""


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    price: Decimal | None = None
    """The limit price (LIMIT), the trigger price (TAKE_PROFIT, STOP_LOSS); None for MARKET."""
    client_order_id: str | None = None
    filled: Decimal = _ZERO
    """The quantity filled."""
    average_price: Decimal | None = None
    """The average fill price; None until it fills."""
    reduce_only: bool = False
    parent_id: str | None = None
    """A TP/SL child's entry order: also the OCO group of the two children."""
    active: bool = True
    """False for a TP/SL child whose entry has not filled yet."""
    reserved_margin: Decimal = _ZERO
    """What a resting limit order set aside (margin and fee); released when it ends."""
    take_profit: Decimal | None = None
    """An entry's requested take-profit level (its child carries it as ``price``)."""
    stop_loss: Decimal | None = None
    """An entry's requested stop-loss level (its child carries it as ``price``)."""

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    def to_payload(self) -> dict[str, Any]:
        return ORDER.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Order:
        return ORDER.decode(payload)


ORDER = PayloadCodec(
    Order,
    decimals="fixed",
    fields=(
        *("id", "client_order_id", "symbol", "type", "side", "status", "quantity", "price"),
        *("filled", "average_price", "reduce_only", "parent_id", "active", "reserved_margin"),
        *("take_profit", "stop_loss", "created_at", "updated_at"),
    ),
)


@dataclass(frozen=True, slots=True)
class Fill:
    id: str
    order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    pnl: Decimal
    """The PnL of the part that reduced the position, before the fee (0 for an opening fill)."""
    at: datetime

    @property
    def realized_pnl(self) -> Decimal:
        """What the fill settled into the wallet: its PnL minus its fee."""
        return self.pnl - self.fee

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.price

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity * self.side.sign

    def to_payload(self) -> dict[str, Any]:
        return FILL.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Fill:
        return FILL.decode(payload)


FILL = PayloadCodec(
    Fill,
    decimals="fixed",
    fields=(
        *("id", "order_id", "symbol", "side", "quantity", "price", "fee", "pnl"),
        *("realized_pnl", "at"),
    ),
)
"""A fill's payload also carries what it settled, ``realizedPnl`` (a property: never read back)."""


@dataclass(frozen=True, slots=True)
class PaperPosition:
    """The net position in one symbol. ``size`` is signed (+ long, - short); 0 only in the state
    reported when it closes."""

    symbol: str
    size: Decimal
    entry_price: Decimal
    realized_pnl: Decimal
    """What it settled since it opened: PnL of reductions minus fees."""
    opened_at: datetime
    updated_at: datetime

    @property
    def side(self) -> Side | None:
        if self.size > 0:
            return Side.LONG
        if self.size < 0:
            return Side.SHORT
        return None

    @property
    def is_open(self) -> bool:
        return self.size != 0

    def unrealized_pnl(self, mark: Decimal) -> Decimal:
        return _down(self.size * (mark - self.entry_price))

    def to_payload(self) -> dict[str, Any]:
        return PAPER_POSITION.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PaperPosition:
        return PAPER_POSITION.decode(payload)


PAPER_POSITION = PayloadCodec(PaperPosition, decimals="fixed")
"""A stored position, its size signed (the dashboard's :class:`PositionView` shows it unsigned)."""


@dataclass(frozen=True, slots=True)
class PositionView:
    """A position as the dashboard shows it, at one mark (None: no price yet)."""

    position: PaperPosition
    leverage: Decimal
    mark: Decimal | None
    unrealized_pnl: Decimal
    margin: Decimal
    """``|size| * entry / leverage``, rounded up."""
    liquidation_price: Decimal | None

    def to_payload(self) -> dict[str, Any]:
        p = self.position
        return {
            "symbol": p.symbol,
            "side": None if p.side is None else p.side.name,
            "size": _text(abs(p.size)),
            "entryPrice": _text(p.entry_price),
            "markPrice": _optional_text(self.mark),
            "unrealizedPnl": _text(self.unrealized_pnl),
            "realizedPnl": _text(p.realized_pnl),
            "leverage": _text(self.leverage),
            "margin": _text(self.margin),
            "liquidationPrice": _optional_text(self.liquidation_price),
            "openedAt": p.opened_at.isoformat(),
            "updatedAt": p.updated_at.isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PositionView:
        """The view :meth:`to_payload` shows (the dashboard's own shape: the position's fields
        beside the view's, its size unsigned beside its side's name)."""
        size = Decimal(payload["size"])
        position = PaperPosition(
            payload["symbol"],
            -size if payload["side"] == Side.SHORT.name else size,
            Decimal(payload["entryPrice"]),
            Decimal(payload["realizedPnl"]),
            datetime.fromisoformat(payload["openedAt"]),
            datetime.fromisoformat(payload["updatedAt"]),
        )
        mark, liquidation = payload["markPrice"], payload["liquidationPrice"]
        return cls(
            position,
            Decimal(payload["leverage"]),
            None if mark is None else Decimal(mark),
            Decimal(payload["unrealizedPnl"]),
            Decimal(payload["margin"]),
            None if liquidation is None else Decimal(liquidation),
        )


@dataclass(frozen=True, slots=True)
class Balance:
    wallet_balance: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    total_fees_paid: Decimal
    net_balance: Decimal
    margin_used: Decimal
    order_margin: Decimal
    available_balance: Decimal
    currency: str = CURRENCY

    def to_payload(self) -> dict[str, Any]:
        return BALANCE.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Balance:
        return BALANCE.decode(payload)


BALANCE = PayloadCodec(
    Balance,
    decimals="fixed",
    fields=(
        *("currency", "wallet_balance", "unrealized_pnl", "realized_pnl", "total_fees_paid"),
        *("net_balance", "margin_used", "order_margin", "available_balance"),
    ),
)


@dataclass(frozen=True, slots=True)
class Changes:
    """What one operation changed, for the caller to store and publish.

    ``orders``: each order created or changed, in its final state, in the order first touched.
    ``fills``: every fill, in order. ``positions``: each symbol whose position changed, in its
    final state (size 0: closed, to be forgotten). When there are fills the account's totals
    (wallet balance, realized PnL, fees) changed too.
    """

    orders: tuple[Order, ...] = ()
    fills: tuple[Fill, ...] = ()
    positions: tuple[PaperPosition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.orders or self.fills or self.positions)


CHANGES = PayloadCodec(Changes, decimals="fixed")
"""An account.changed event's payload: the orders, fills and positions an operation changed."""


@dataclass(frozen=True, slots=True)
class PlaceResult:
    order: Order
    """The entry order as it stands after the call (for a duplicate: as it stands now)."""
    duplicate: bool
    """True when the client order id was already used: nothing was placed or changed."""
    changes: Changes


class _Recorder:
    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.fills: list[Fill] = []
        self.positions: dict[str, PaperPosition] = {}

    def changes(self) -> Changes:
        return Changes(
            tuple(self.orders.values()), tuple(self.fills), tuple(self.positions.values())
        )


class AccountValuer:
    """One revision of an account, valued at price after price (a live dashboard re-values it on
    every tick of a market it holds). What depends on the account alone is worked out once: each
    position's leverage, margin and liquidation price (its view with no mark), the wallet and the
    margin orders reserve. A price then costs each position its unrealized PnL, and the sums.
    :meth:`positions` and :meth:`balance` give exactly what :meth:`PaperAccount.positions` and
    :meth:`PaperAccount.balance` give (a property test holds them to it)."""

    __slots__ = ("_fees", "_order_margin", "_realized", "_unmarked", "_wallet", "symbols")

    def __init__(
        self,
        unmarked: list[PositionView],
        wallet: Decimal,
        realized: Decimal,
        fees: Decimal,
        order_margin: Decimal,
    ) -> None:
        self._unmarked = unmarked
        self._wallet = wallet
        self._realized = realized
        self._fees = fees
        self._order_margin = order_margin
        self.symbols = frozenset(v.position.symbol for v in unmarked)
        """The symbols of the open positions: the only prices the valuation depends on."""

    def positions(self, prices: Mapping[str, Decimal]) -> list[PositionView]:
        return [_at(view, _mark(prices, view.position.symbol)) for view in self._unmarked]

    def balance(self, positions: list[PositionView]) -> Balance:
        """The balance with ``positions`` (what :meth:`positions` gave at the same prices)."""
        unrealized = margin = _ZERO
        for view in positions:
            unrealized += view.unrealized_pnl
            margin += view.margin
        net = self._wallet + unrealized
        return Balance(
            wallet_balance=self._wallet,
            unrealized_pnl=unrealized,
            realized_pnl=self._realized,
            total_fees_paid=self._fees,
            net_balance=net,
            margin_used=margin,
            order_margin=self._order_margin,
            available_balance=net - margin - self._order_margin,
        )


def _at(unmarked: PositionView, mark: Decimal | None) -> PositionView:
    """An open position's view without a mark, at ``mark``: only the unrealized PnL moves."""
    if mark is None:
        return unmarked
    return PositionView(
        unmarked.position,
        unmarked.leverage,
        mark,
        unmarked.position.unrealized_pnl(mark),
        unmarked.margin,
        unmarked.liquidation_price,
    )


class PaperAccount:
    """One user's paper margin account. Not thread-safe: one writer at a time, the store's
    ``revision`` (bumped by every change) tells a writer it still holds the latest state."""

    def __init__(
        self,
        owner: str,
        markets: MarketCatalog,
        *,
        initial_balance: Decimal = DEFAULT_PAPER_BALANCE,
        default_leverage: Decimal = DEFAULT_LEVERAGE,
    ) -> None:
        if not initial_balance.is_finite() or not _ZERO <= initial_balance < MAX_AMOUNT:
            raise ValueError(f"the initial balance must be between 0 and {MAX_AMOUNT:f}")
        if _down(initial_balance) != initial_balance:
            raise ValueError("the initial balance has at most 6 decimal places")
        if not default_leverage.is_finite() or default_leverage < 1:
            raise ValueError("the default leverage must be at least 1")
        self.owner = owner
        self.markets = markets
        self.initial_balance = initial_balance
        self.default_leverage = default_leverage
        self._wallet_balance = initial_balance
        self._realized_pnl = _ZERO
        self._total_fees_paid = _ZERO
        self._revision = 0
        self._sequence = 0
        self._leverage: dict[str, Decimal] = {}
        self._positions: dict[str, PaperPosition] = {}
        self._orders: dict[str, Order] = {}
        """Every order, open and final, in the order placed."""
        self._by_client_id: dict[str, str] = {}

    # --- state ----------------------------------------------------------------------------------

    @property
    def wallet_balance(self) -> Decimal:
        return self._wallet_balance

    @property
    def realized_pnl(self) -> Decimal:
        return self._realized_pnl

    @property
    def total_fees_paid(self) -> Decimal:
        return self._total_fees_paid

    @property
    def revision(self) -> int:
        return self._revision

    def leverage(self, symbol: str) -> Decimal:
        """The symbol's leverage: as its payload chose, else the default capped at the maximum."""
        chosen = self._leverage.get(symbol)
        if chosen is not None:
            return chosen
        return min(self.default_leverage, self._market(symbol).max_leverage)

    def order(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    def order_by_client_id(self, client_order_id: str) -> Order | None:
        order_id = self._by_client_id.get(client_order_id)
        return None if order_id is None else self._orders[order_id]

    def children(self, order_id: str) -> list[Order]:
        """The take-profit and stop-loss placed with an entry order."""
        return [o for o in self._orders.values() if o.parent_id == order_id]

    # --- queries --------------------------------------------------------------------------------

    def balance(self, prices: Mapping[str, Decimal]) -> Balance:
        unrealized = margin = _ZERO
        for view in self.positions(prices):
            unrealized += view.unrealized_pnl
            margin += view.margin
        order_margin = self._order_margin()
        net = self._wallet_balance + unrealized
        return Balance(
            wallet_balance=self._wallet_balance,
            unrealized_pnl=unrealized,
            realized_pnl=self._realized_pnl,
            total_fees_paid=self._total_fees_paid,
            net_balance=net,
            margin_used=margin,
            order_margin=order_margin,
            available_balance=net - margin - order_margin,
        )

    def positions(self, prices: Mapping[str, Decimal]) -> list[PositionView]:
        """Open positions by symbol, each at its mark in ``prices``."""
        return [self.view(self._positions[s], prices) for s in sorted(self._positions)]

    def position(self, symbol: str, prices: Mapping[str, Decimal]) -> PositionView | None:
        position = self._positions.get(symbol)
        return None if position is None else self.view(position, prices)

    def view(self, position: PaperPosition, prices: Mapping[str, Decimal]) -> PositionView:
        """``position`` as the dashboard shows it: open, or closed as :class:`Changes` reports it
        (no unrealized PnL, margin or liquidation price)."""
        market = self._market(position.symbol)
        leverage = self.leverage(position.symbol)
        mark = _mark(prices, position.symbol)
        side = position.side
        if side is None:
            return PositionView(position, leverage, mark, _ZERO, _ZERO, None)
        size, entry = abs(position.size), position.entry_price
        isolated = Position(
            id=position.symbol,
            owner=self.owner,
            market=position.symbol,
            side=side,
            size=size,
            entry_price=entry,
            collateral=size * entry / leverage,
        )
        liquidation = liquidation_price(isolated, market.maintenance_margin_rate)
        if liquidation is not None:
            rounded = _up if side is Side.LONG else _down
            liquidation = rounded(liquidation, PRICE_PLACES)
        return PositionView(
            position=position,
            leverage=leverage,
            mark=mark,
            unrealized_pnl=_ZERO if mark is None else position.unrealized_pnl(mark),
            margin=self._margin(position, leverage),
            liquidation_price=liquidation,
        )

    def valuer(self) -> AccountValuer:
        """This revision of the account, ready to be valued at price after price."""
        views = [self.view(self._positions[s], {}) for s in sorted(self._positions)]
        return AccountValuer(
            views,
            self._wallet_balance,
            self._realized_pnl,
            self._total_fees_paid,
            self._order_margin(),
        )

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (resting limits, pending and armed TP/SL), oldest first."""
        return [o for o in self._orders.values() if o.is_open and symbol in (None, o.symbol)]

    def order_history(self, symbol: str | None = None, limit: int | None = None) -> list[Order]:
        """Final orders (filled, canceled), newest first."""
        history = [
            o
            for o in reversed(self._orders.values())
            if not o.is_open and symbol in (None, o.symbol)
        ]
        return history if limit is None else history[: max(limit, 0)]

    # --- operations -----------------------------------------------------------------------------

    def place_order(
        self, request: OrderRequest, prices: Mapping[str, Decimal], now: datetime
    ) -> PlaceResult:
        """Place an order (with its take-profit and stop-loss), filling it at once if it can."""
        client_id = request.client_order_id
        if client_id is not None:
            original = self.order_by_client_id(client_id)
            if original is not None:
                if not _same_request(original, request):
                    raise OrderError(
                        "CLIENT_ORDER_ID_REUSED",
                        f"client order id {client_id!r} was already used for order "
                        f"{original.id}, with different fields",
                    )
                return PlaceResult(original, duplicate=True, changes=Changes())
            if not _CLIENT_ORDER_ID.fullmatch(client_id):
                raise OrderError(
                    "INVALID_CLIENT_ORDER_ID",
                    f"a client order id is 1 to {MAX_CLIENT_ORDER_ID_LENGTH} letters, digits "
                    "or - _ . : /",
                )
        market = self._order_market(request.symbol)
        if request.type not in (OrderType.MARKET, OrderType.LIMIT):
            raise OrderError(
                "INVALID_ORDER_TYPE",
                "take-profit and stop-loss are placed with a MARKET or LIMIT entry order",
            )
        quantity = request.quantity
        _check_quantity(quantity, market)
        mark = _mark(prices, market.id)
        limit: Decimal | None = None
        fill_price: Decimal | None
        if request.type is OrderType.MARKET:
            if request.price is not None:
                raise OrderError("INVALID_PRICE", "a market order takes no price; leave it out")
            if mark is None:
                raise OrderError("PRICE_UNAVAILABLE", f"{market.id} has no price yet")
            fill_price = mark
        else:
            if request.price is None:
                raise OrderError("INVALID_PRICE", "a limit order needs a price")
            limit = _check_price("INVALID_PRICE", "the limit price", request.price, market)
            marketable = mark is not None and _crosses(request.side, mark, limit)
            fill_price = mark if marketable else None
        reference = fill_price if fill_price is not None else limit
        assert reference is not None
        self._check_exits(request, reference, market)

        leverage = self.leverage(market.id)
        reserved = _ZERO
        if fill_price is not None:
            opening = quantity - min(quantity, self._reducible(market.id, request.side))
            if opening > 0:
                required = _up(opening * fill_price / leverage) + _fee(quantity, fill_price, market)
                self._check_affordable(required, prices)
        else:
            assert limit is not None
            reserved = _up(quantity * limit / leverage) + _fee(quantity, limit, market)
            self._check_affordable(reserved, prices)

        # Valid: from here on nothing can fail.
        tx = _Recorder()
        entry = Order(
            id=self._next_id(),
            client_order_id=client_id,
            symbol=market.id,
            side=request.side,
            type=request.type,
            quantity=quantity,
            price=limit,
            status=OrderStatus.NEW,
            reserved_margin=reserved,
            take_profit=request.take_profit,
            stop_loss=request.stop_loss,
            created_at=now,
            updated_at=now,
        )
        self._put(entry, tx)
        if client_id is not None:
            self._by_client_id[client_id] = entry.id
        for kind, level in (
            (OrderType.TAKE_PROFIT, request.take_profit),
            (OrderType.STOP_LOSS, request.stop_loss),
        ):
            if level is not None:
                child = Order(
                    id=self._next_id(),
                    symbol=market.id,
                    side=request.side.opposite,
                    type=kind,
                    quantity=quantity,
                    price=level,
                    status=OrderStatus.NEW,
                    reduce_only=True,
                    parent_id=entry.id,
                    active=False,
                    created_at=now,
                    updated_at=now,
                )
                self._put(child, tx)
        if fill_price is not None:
            self._fill(entry, quantity, fill_price, now, tx)
        self._revision += 1
        return PlaceResult(self._orders[entry.id], duplicate=False, changes=tx.changes())

    def cancel_order(self, order_id: str, now: datetime) -> Changes:
        """Cancel an open order (an unfilled entry takes its pending TP/SL with it)."""
        order = self._orders.get(order_id)
        if order is None:
            raise OrderError("ORDER_NOT_FOUND", f"you have no order {order_id!r}")
        if not order.is_open:
            raise OrderError(
                "ORDER_NOT_OPEN",
                f"order {order_id} is {order.status.value.lower()}; only open orders can be "
                "canceled",
            )
        tx = _Recorder()
        self._cancel(order, now, tx)
        for child in self.children(order_id):
            if child.is_open:
                self._cancel(child, now, tx)
        self._revision += 1
        return tx.changes()

    def on_price(self, symbol: str, price: Decimal, now: datetime) -> Changes:
        """A new mark for ``symbol``: fill the resting limit orders it crosses, then trigger the
        take-profits and stop-losses it reaches. A symbol the catalog does not have changes
        nothing."""
        if not price.is_finite() or not _ZERO < price < MAX_AMOUNT:
            raise ValueError(f"a price must be positive and below {MAX_AMOUNT:f}")
        try:
            self.markets.get(symbol)
        except UnknownMarketError:
            return Changes()
        tx = _Recorder()
        for order in self.open_orders(symbol):
            if order.type is OrderType.LIMIT:
                assert order.price is not None
                if _crosses(order.side, price, order.price):
                    self._fill(order, order.quantity, order.price, now, tx)
        for order in self.open_orders(symbol):
            current = self._orders[order.id]
            if not (current.is_open and current.active and current.reduce_only):
                continue  # ended by an earlier trigger in this loop, or not armed
            if self._triggered(current, price):
                held = self._protected_size(current)
                if held == 0:  # cannot happen: orphans are canceled after every fill
                    self._cancel(current, now, tx)
                    continue
                self._fill(current, min(current.quantity, held), price, now, tx)
                for sibling in self.children(current.parent_id or ""):
                    if sibling.is_open:
                        self._cancel(sibling, now, tx)
        changes = tx.changes()
        if changes:
            self._revision += 1
        return changes

    # --- persistence ----------------------------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "currency": CURRENCY,
            "initialBalance": _text(self.initial_balance),
            "defaultLeverage": _text(self.default_leverage),
            "walletBalance": _text(self._wallet_balance),
            "realizedPnl": _text(self._realized_pnl),
            "totalFeesPaid": _text(self._total_fees_paid),
            "revision": self._revision,
            "sequence": self._sequence,
            "leverage": {s: _text(v) for s, v in self._leverage.items()},
            "positions": [p.to_payload() for p in self._positions.values()],
            "orders": [o.to_payload() for o in self._orders.values()],
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], markets: MarketCatalog) -> PaperAccount:
        account = cls(
            payload["owner"],
            markets,
            initial_balance=Decimal(payload["initialBalance"]),
            default_leverage=Decimal(payload["defaultLeverage"]),
        )
        account._wallet_balance = Decimal(payload["walletBalance"])
        account._realized_pnl = Decimal(payload["realizedPnl"])
        account._total_fees_paid = Decimal(payload["totalFeesPaid"])
        account._revision = int(payload["revision"])
        account._sequence = int(payload["sequence"])
        account._leverage = {s: Decimal(v) for s, v in payload.get("leverage", {}).items()}
        for item in payload.get("positions", []):
            position = PaperPosition.from_payload(item)
            account._positions[position.symbol] = position
        orders = [Order.from_payload(item) for item in payload.get("orders", [])]
        for order in sorted(orders, key=lambda o: int(o.id)):
            account._orders[order.id] = order
            if order.client_order_id is not None:
                account._by_client_id[order.client_order_id] = order.id
        return account

    # --- internals ------------------------------------------------------------------------------

    def _market(self, symbol: str) -> Market:
        return self.markets.get(symbol)

    def _order_market(self, symbol: str) -> Market:
        try:
            return self.markets.get(symbol)
        except UnknownMarketError:
            raise OrderError("UNKNOWN_SYMBOL", f"unknown symbol {symbol!r}") from None

    def _next_id(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _put(self, order: Order, tx: _Recorder) -> None:
        self._orders[order.id] = order
        tx.orders[order.id] = order

    def _cancel(self, order: Order, now: datetime, tx: _Recorder) -> None:
        self._put(replace(order, status=OrderStatus.CANCELED, updated_at=now), tx)

    def _order_margin(self) -> Decimal:
        return sum((o.reserved_margin for o in self._orders.values() if o.is_open), _ZERO)

    def _margin(self, position: PaperPosition, leverage: Decimal) -> Decimal:
        return _up(abs(position.size) * position.entry_price / leverage)

    def _reducible(self, symbol: str, side: OrderSide) -> Decimal:
        """How much an order on ``side`` would reduce the current position."""
        position = self._positions.get(symbol)
        if position is None or position.size * side.sign >= 0:
            return _ZERO
        return abs(position.size)

    def _check_affordable(self, required: Decimal, prices: Mapping[str, Decimal]) -> None:
        available = self.balance(prices).available_balance
        if required > available:
            raise OrderError(
                "INSUFFICIENT_BALANCE",
                f"the order needs {_text(required)} USD of margin and fees; "
                f"{_text(available)} USD is available",
            )

    def _check_exits(self, request: OrderRequest, reference: Decimal, market: Market) -> None:
        buy = request.side is OrderSide.BUY
        if request.take_profit is not None:
            tp = _check_price("INVALID_TAKE_PROFIT", "the take-profit", request.take_profit, market)
            if (tp <= reference) if buy else (tp >= reference):
                where = "above" if buy else "below"
                raise OrderError(
                    "INVALID_TAKE_PROFIT",
                    f"a {request.side.value} order's take-profit must be {where} its price "
                    f"{_text(reference)}",
                )
        if request.stop_loss is not None:
            sl = _check_price("INVALID_STOP_LOSS", "the stop-loss", request.stop_loss, market)
            if (sl >= reference) if buy else (sl <= reference):
                where = "below" if buy else "above"
                raise OrderError(
                    "INVALID_STOP_LOSS",
                    f"a {request.side.value} order's stop-loss must be {where} its price "
                    f"{_text(reference)}",
                )

    def _triggered(self, child: Order, price: Decimal) -> bool:
        assert child.price is not None
        protects_long = child.side is OrderSide.SELL
        if child.type is OrderType.TAKE_PROFIT:
            return price >= child.price if protects_long else price <= child.price
        return price <= child.price if protects_long else price >= child.price

    def _fill(
        self, order: Order, quantity: Decimal, price: Decimal, now: datetime, tx: _Recorder
    ) -> None:
        market = self._market(order.symbol)
        fee = _fee(quantity, price, market)
        pnl = self._trade(order.symbol, order.side.sign * quantity, price, fee, now, tx)
        fill = Fill(
            id=self._next_id(),
            order_id=order.id,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            fee=fee,
            pnl=pnl,
            at=now,
        )
        tx.fills.append(fill)
        self._wallet_balance += pnl - fee
        self._realized_pnl += pnl - fee
        self._total_fees_paid += fee
        filled = replace(
            order,
            status=OrderStatus.FILLED,
            filled=quantity,
            average_price=price,
            updated_at=now,
        )
        self._put(filled, tx)
        for child in self.children(order.id):
            if child.is_open and not child.active:
                held = self._protected_size(child)
                quantity = min(child.quantity, held) if held > 0 else child.quantity
                self._put(replace(child, active=True, quantity=quantity, updated_at=now), tx)
        self._cancel_orphans(order.symbol, now, tx)

    def _protected_size(self, child: Order) -> Decimal:
        """The size of the position a TP/SL child protects (0 if the symbol is flat or on the
        other side)."""
        position = self._positions.get(child.symbol)
        if position is None or position.size * child.side.sign >= 0:
            return _ZERO
        return abs(position.size)

    def _cancel_orphans(self, symbol: str, now: datetime, tx: _Recorder) -> None:
        """Cancel the armed children that protect a side the symbol no longer holds."""
        for order in self.open_orders(symbol):
            if order.reduce_only and order.active and self._protected_size(order) == 0:
                self._cancel(order, now, tx)

    def _trade(
        self,
        symbol: str,
        delta: Decimal,
        price: Decimal,
        fee: Decimal,
        now: datetime,
        tx: _Recorder,
    ) -> Decimal:
        """Move the symbol's position by ``delta`` (signed) at ``price``; returns the PnL realized
        (before the fee)."""
        position = self._positions.get(symbol)
        size = _ZERO if position is None else position.size
        if position is None or size * delta > 0:
            if position is None:
                after = PaperPosition(symbol, delta, price, -fee, now, now)
            else:
                entry = (abs(size) * position.entry_price + abs(delta) * price) / abs(size + delta)
                rounded = _up if size > 0 else _down
                after = replace(
                    position,
                    size=size + delta,
                    entry_price=rounded(entry, PRICE_PLACES),
                    realized_pnl=position.realized_pnl - fee,
                    updated_at=now,
                )
            self._set_position(after, tx)
            return _ZERO
        closed = min(abs(delta), abs(size))
        direction = 1 if size > 0 else -1
        pnl = _down(direction * closed * (price - position.entry_price))
        if abs(delta) <= abs(size):
            after = replace(
                position,
                size=size + delta,
                realized_pnl=position.realized_pnl + pnl - fee,
                updated_at=now,
            )
            self._set_position(after, tx)
            return pnl
        closing_fee = min(fee, _up(fee * closed / abs(delta)))
        ended = replace(
            position,
            size=_ZERO,
            realized_pnl=position.realized_pnl + pnl - closing_fee,
            updated_at=now,
        )
        self._set_position(ended, tx)
        opened = PaperPosition(symbol, size + delta, price, closing_fee - fee, now, now)
        self._set_position(opened, tx)
        return pnl

    def _set_position(self, position: PaperPosition, tx: _Recorder) -> None:
        if position.is_open:
            self._positions[position.symbol] = position
        else:
            self._positions.pop(position.symbol, None)
        tx.positions[position.symbol] = position


def _check_quantity(quantity: Decimal, market: Market) -> None:
    if not quantity.is_finite() or quantity <= 0:
        raise OrderError("INVALID_QUANTITY", "quantity must be a positive number")
    if quantity >= MAX_AMOUNT:
        raise OrderError("INVALID_QUANTITY", f"quantity must be below {MAX_AMOUNT:f}")
    if quantity < market.min_order_size:
        raise OrderError(
            "INVALID_QUANTITY",
            f"quantity {quantity} is below the minimum {market.min_order_size} of {market.id}",
        )
    if quantity % market.step_size != 0:
        raise OrderError(
            "INVALID_QUANTITY",
            f"quantity {quantity} is not a multiple of {market.id}'s step {market.step_size}",
        )


def _check_price(code: str, label: str, price: Decimal, market: Market) -> Decimal:
    if not price.is_finite() or price <= 0:
        raise OrderError(code, f"{label} must be a positive number")
    if price >= MAX_AMOUNT:
        raise OrderError(code, f"{label} must be below {MAX_AMOUNT:f}")
    if price % market.tick_size != 0:
        raise OrderError(
            code, f"{label} {price} is not a multiple of {market.id}'s tick {market.tick_size}"
        )
    return price


def _mark(prices: Mapping[str, Decimal], symbol: str) -> Decimal | None:
    """The symbol's mark, or None if it has none that can be traded at."""
    mark = prices.get(symbol)
    if mark is None or not mark.is_finite() or not _ZERO < mark < MAX_AMOUNT:
        return None
    return mark


def _crosses(side: OrderSide, price: Decimal, limit: Decimal) -> bool:
    """Whether a limit order on ``side`` at ``limit`` fills at ``price``."""
    return price <= limit if side is OrderSide.BUY else price >= limit


def _fee(quantity: Decimal, price: Decimal, market: Market) -> Decimal:
    return _up(quantity * price * market.taker_fee_rate)


def _same_number(a: Decimal | None, b: Decimal | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.is_finite() and b.is_finite() and a == b


def _same_request(order: Order, request: OrderRequest) -> bool:
    return (
        order.symbol == request.symbol
        and order.side is request.side
        and order.type is request.type
        and _same_number(order.quantity, request.quantity)
        and _same_number(order.price, request.price)
        and _same_number(order.take_profit, request.take_profit)
        and _same_number(order.stop_loss, request.stop_loss)
    )
