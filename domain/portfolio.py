"""The portfolio dashboard: holdings under average-cost accounting, the portfolio's value and its
24 h change, when a new value is worth publishing, price alerts ("benchmarks"), take-profit trims,
conversions between assets, and the payloads of the dashboard's six events.

Amounts are in the asset's own units; prices, values and PnL in USD. Every definition follows
``../shared/DOMAIN.md`` ("Portfolio"):

    holding value    = amount * price
    portfolio value  = sum of holding values + cash + perp equity
                       (a perpetual position counts its equity, collateral + unrealized PnL, never
                       its notional: pass the sum of ``domain.perps.Valuation.equity``)
    24 h change      = value now - value 24 h ago
    24 h change %    = 24 h change / |value 24 h ago| * 100          (24 h ago = 0 -> None)

The percent divides by the magnitude so that a rise is positive even from a negative value (a
portfolio whose perp equity is under water); for the usual positive values it is DOMAIN.md's
formula. The same change serves a price's ``change24h``.

Average cost. A holding keeps its amount, its average cost and the PnL it has realized:

    buy q at p    amount' = amount + q
                  average' = (amount * average + q * p) / amount'   (to 10 places, half even)
    sell q at p   realized' = realized + q * (p - average);  amount' = amount - q;  average stays
    a fee f       realized' = realized - f                   (never added to the cost)

Selling more than is held is refused (a spot holding cannot go short, so DOMAIN.md's "a fill that
flips the side" does not arise); selling all of it resets the average to 0, the average of nothing.

Publishing the value (PortfolioUpdateGate). The first value is published; after it, a value is
published when it moved at least the threshold from the LAST PUBLISHED value (not the last value
seen, so a slow drift is still published once it adds up):

    |value - last published| * 100 >= threshold % * |last published|
    last published 0: any value other than 0 is published (an infinite move); 0 again only when
    the threshold is 0. A threshold of 0 publishes every value, unchanged ones included.

Price alerts (AlertWatch). An alert watches one asset for its price crossing a level:

    crosses UP     fires when previous < level <= current
    crosses DOWN   fires when previous > level >= current

``previous`` is the asset's price at the tick before, seen by this alert: the first tick after an
alert is armed (added to a watch) has no previous and never fires, even when the watch has seen the
asset before, so an alert created on the far side of its level does not fire at once. A jump past
the level in one tick counts. A ``once`` alert (the default) is disarmed when it fires and never
fires again; re-arming it is adding it again, armed, and its first tick again never fires. A
repeating alert stays armed and fires on every crossing: it re-arms by the price going back across
the level, which the rule itself asks for (UP: a price strictly below the level; a price that only
touches the level from above does not re-arm it).

Restarts. A watch keeps the last price per asset (``last_prices``); a new watch built with the
stored alerts and those prices carries on as if it had never stopped: each alert's previous is the
stored price. A restart therefore never fires an alert twice, provided the worker stores, after a
tick that fired, the alerts' new state and that tick's price together (a once-alert is disarmed; a
repeating one needs the price back across the level first) and publishes only after storing. A
crossing that happens while the server is down (stored price on one side, first new tick on the
other) fires on the first tick after the restart; without a stored price the first tick has no
previous and fires nothing. An alert built into a new watch counts as having seen its asset's
stored price, even one armed after that price was stored: its first tick after the restart then
fires only on a crossing from the last price known when it was armed, a real crossing, never for
being on the far side of its level. Feed the watch fresh prices only (DOMAIN.md: never trigger an
alert on a stale price).

Trims (evaluate_trim). A rule "take N% when the position gains X%" fires at a price p when

    (p - average) * 100 >= X * average      i.e. p is at least X% above the average cost
    and, after a trim at price t, (p - t) * 100 >= X * t    (at least X% above the last trim)

and sells ``floor_to_lot(amount * N / 100)`` (no trim when that is 0), realizing
``sold * (p - average)``; the average stays. The last trim price is the rule's reference against
firing again on every tick: after a trim the price must rise another X% above it, so a price
that hovers near a threshold trims once, and a run-up trims in steps of X% (take 25% at +5%:
at 2,100, then at 2,205, ... for an average of 2,000). A holding with no amount or no average
cost (0: a gain has no percent) never trims. The worker clears ``last_trim_price`` when the user
changes the rule or the holding is closed, so the next position starts from its own average.

Conversions (convert). At the current prices, with a fee rate f in [0, 1):

    to amount = from amount * from price / to price * (1 - f), rounded DOWN to the target asset's
                places (exactly: the rounding never gives a unit more than the prices allow)
    fee (USD) = from amount * from price - to amount * to price   (f's share and the rounding)

The conversion is a sale of the source at its price, paying the fee (realized), and a purchase
of the target at its price; value is conserved up to the fee.

Errors: one type with a stable ``code`` for clients, and a message fit to show a user.

    ValueError
    └── PortfolioError, by code:
        INVALID_AMOUNT      an amount, fee or cash that is not a finite number in range; a
                            conversion too small to receive one unit of the target
        INVALID_PRICE       a price that is not positive and below MAX_AMOUNT
        INVALID_SETTING     a rule, alert or gate setting out of range, or a blank name
        INSUFFICIENT_FUNDS  selling or converting more than is held
        SAME_ASSET          converting an asset into itself
        PRICE_UNAVAILABLE   a price a value or a conversion needs is missing (or not positive)

Events. PriceUpdate, TradeExecuted, TrimExecuted, BenchmarkTriggered, PortfolioUpdate and
ConversionCompleted carry the fields the seed's clients read (``../shared/DESIGN.md``), and a
``to_payload()`` of JSON values: camelCase keys, decimals as fixed-point strings, the event's time
as ``timestamp`` in ISO-8601. ``change24h`` is a percent (null when there is none); a portfolio
update adds the absolute change as ``change24hUsd``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from domain.payloads import PayloadCodec
from domain.perps_trades import PRICE_PLACES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

MAX_AMOUNT = Decimal("1e15")
"""No amount or price given reaches this: larger input (a typo, or an attempt to overflow the
arithmetic) is refused before any arithmetic on it."""
MAX_NAME_LENGTH = 100
"""Ids, asset names and alert actions are at most this many characters."""
MAX_PLACES = 18
"""An asset has at most this many decimal places (ETH's wei)."""
DEFAULT_PLACES = 8
"""Places a converted amount is rounded down to unless the asset says otherwise (a satoshi)."""

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


class PortfolioError(ValueError):
    """Refused input; ``code`` is stable for clients, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_number(value: Decimal, code: str, label: str, *, positive: bool) -> Decimal:
    """``value`` finite, below MAX_AMOUNT in size, and positive (or not negative)."""
    if not value.is_finite():
        raise PortfolioError(code, f"{label} must be a finite number")
    if positive and value <= 0:
        raise PortfolioError(code, f"{label} must be positive")
    if value < 0:
        raise PortfolioError(code, f"{label} must not be negative")
    if value >= MAX_AMOUNT:
        raise PortfolioError(code, f"{label} must be below {MAX_AMOUNT:,f}")
    return value


def _check_price(price: Decimal, label: str = "price") -> Decimal:
    return _check_number(price, "INVALID_PRICE", label, positive=True)


def _check_name(value: str, label: str) -> None:
    if not value.strip():
        raise PortfolioError("INVALID_SETTING", f"{label} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise PortfolioError(
            "INVALID_SETTING", f"{label} must be at most {MAX_NAME_LENGTH} characters"
        )


# --- holdings and value ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holding:
    """An amount of one asset under average-cost accounting (see the module docstring)."""

    asset: str
    amount: Decimal = _ZERO
    average_cost: Decimal = _ZERO
    """USD per unit; 0 for an empty holding."""
    realized_pnl: Decimal = _ZERO
    """What sales have realized, net of fees."""

    def __post_init__(self) -> None:
        _check_name(self.asset, "asset")
        _check_number(self.amount, "INVALID_AMOUNT", "amount", positive=False)
        _check_number(self.average_cost, "INVALID_PRICE", "average cost", positive=False)
        if not self.realized_pnl.is_finite():
            raise PortfolioError("INVALID_AMOUNT", "realized PnL must be a finite number")

    def buy(self, quantity: Decimal, price: Decimal, fee: Decimal = _ZERO) -> Holding:
        _check_number(quantity, "INVALID_AMOUNT", "quantity", positive=True)
        _check_price(price)
        _check_number(fee, "INVALID_AMOUNT", "fee", positive=False)
        amount = self.amount + quantity
        if amount >= MAX_AMOUNT:
            raise PortfolioError("INVALID_AMOUNT", f"a holding must stay below {MAX_AMOUNT:,f}")
        average = (self.amount * self.average_cost + quantity * price) / amount
        return replace(
            self,
            amount=amount,
            average_cost=average.quantize(PRICE_PLACES),
            realized_pnl=self.realized_pnl - fee,
        )

    def sell(self, quantity: Decimal, price: Decimal, fee: Decimal = _ZERO) -> Holding:
        _check_number(quantity, "INVALID_AMOUNT", "quantity", positive=True)
        _check_price(price)
        _check_number(fee, "INVALID_AMOUNT", "fee", positive=False)
        if quantity > self.amount:
            raise PortfolioError(
                "INSUFFICIENT_FUNDS", f"cannot sell {quantity:f} {self.asset}: {self.amount:f} held"
            )
        amount = self.amount - quantity
        return replace(
            self,
            amount=amount,
            average_cost=self.average_cost if amount else _ZERO,
            realized_pnl=self.realized_pnl + quantity * (price - self.average_cost) - fee,
        )

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        return self.amount * (price - self.average_cost)


class ValueChange(NamedTuple):
    absolute: Decimal
    percent: Decimal | None
    """Against the magnitude of the earlier value; None when that was 0."""


def value_change(now_value: Decimal, value_24h_ago: Decimal) -> ValueChange:
    """The 24 h change of a value (or a price): now minus then, and that as a percent of then."""
    absolute = now_value - value_24h_ago
    if value_24h_ago == 0:
        return ValueChange(absolute, None)
    return ValueChange(absolute, absolute * _HUNDRED / abs(value_24h_ago))


@dataclass(frozen=True, slots=True)
class Portfolio:
    """What a user holds: spot holdings (one per asset), USD cash and the equity of their perps."""

    holdings: tuple[Holding, ...] = ()
    cash: Decimal = _ZERO
    perp_equity: Decimal = _ZERO
    """The sum of the user's perpetual positions' equity (may be negative)."""

    def __post_init__(self) -> None:
        assets = [holding.asset for holding in self.holdings]
        if len(set(assets)) != len(assets):
            raise ValueError("a portfolio holds each asset once")
        for label, value in (("cash", self.cash), ("perp equity", self.perp_equity)):
            if not value.is_finite() or abs(value) >= MAX_AMOUNT:
                raise PortfolioError(
                    "INVALID_AMOUNT", f"{label} must be a finite number below {MAX_AMOUNT:,f}"
                )

    def holding(self, asset: str) -> Holding:
        """The holding of ``asset``; an empty one when there is none."""
        for holding in self.holdings:
            if holding.asset == asset:
                return holding
        return Holding(asset)

    def with_holding(self, holding: Holding) -> Portfolio:
        """This portfolio with ``holding`` in place of its asset's holding (or added)."""
        others = tuple(h for h in self.holdings if h.asset != holding.asset)
        return replace(self, holdings=(*others, holding))

    def value(self, prices: Mapping[str, Decimal]) -> Decimal:
        """Sum of amount * price over the holdings, plus cash and perp equity. Every asset with an
        amount needs a positive price (PRICE_UNAVAILABLE otherwise); empty holdings need none."""
        total = self.cash + self.perp_equity
        for holding in self.holdings:
            if holding.amount:
                total += holding.amount * _available_price(prices.get(holding.asset), holding.asset)
        return total


def _available_price(price: Decimal | None, asset: str) -> Decimal:
    if price is None or not price.is_finite() or price <= 0 or price >= MAX_AMOUNT:
        raise PortfolioError("PRICE_UNAVAILABLE", f"no price is available for {asset}")
    return price


class PortfolioUpdateGate:
    """Decides which portfolio values to publish: the first, then each that moved at least
    ``threshold_percent`` from the last published one (rule in the module docstring)."""

    def __init__(self, threshold_percent: Decimal, last_published: Decimal | None = None) -> None:
        """``last_published`` restores the gate after a restart (None: nothing published yet)."""
        _check_number(threshold_percent, "INVALID_SETTING", "threshold", positive=False)
        self.threshold_percent = threshold_percent
        self.last_published = last_published

    def should_publish(self, value: Decimal) -> bool:
        last = self.last_published
        if last is None:
            return True
        if last == 0:
            return value != 0 or self.threshold_percent == 0
        return abs(value - last) * _HUNDRED >= self.threshold_percent * abs(last)

    def offer(self, value: Decimal) -> bool:
        """Whether to publish ``value``; a value to publish becomes the last published."""
        if not self.should_publish(value):
            return False
        self.last_published = value
        return True


# --- price alerts ---------------------------------------------------------------------------------


class Direction(enum.Enum):
    UP = "up"
    """Crosses up: previous < level <= current."""
    DOWN = "down"
    """Crosses down: previous > level >= current."""


@dataclass(frozen=True, slots=True)
class PriceAlert:
    """A benchmark: ``action`` is the user's label for what to do (BUY, SELL, NOTIFY, ...), kept as
    given and sent with the trigger."""

    id: str
    asset: str
    target_price: Decimal
    direction: Direction
    action: str = "NOTIFY"
    once: bool = True
    """Disarm after the first firing; a repeating alert fires on every crossing."""
    armed: bool = True

    def __post_init__(self) -> None:
        _check_name(self.id, "alert id")
        _check_name(self.asset, "asset")
        _check_name(self.action, "action")
        _check_price(self.target_price, "target price")

    def crosses(self, previous: Decimal, current: Decimal) -> bool:
        level = self.target_price
        if self.direction is Direction.UP:
            return previous < level <= current
        return previous > level >= current


@dataclass(frozen=True, slots=True)
class AlertTrigger:
    """An alert that fired: ``alert`` as it stands after firing (a once-alert disarmed), which is
    what the worker stores."""

    alert: PriceAlert
    previous_price: Decimal
    price: Decimal


class AlertWatch:
    """Turns successive prices per asset into the alerts they fire (rules in the module
    docstring)."""

    def __init__(
        self, alerts: Iterable[PriceAlert] = (), last_prices: Mapping[str, Decimal] | None = None
    ) -> None:
        """Restores a watch: ``alerts`` as stored, ``last_prices`` the last price seen per asset.
        The alerts given here count as having seen their asset's last price."""
        self._alerts: dict[str, PriceAlert] = {}
        self._ids_by_asset: dict[str, dict[str, None]] = {}
        self._unseen: set[str] = set()  # armed since their asset's last tick: no previous yet
        self._last_prices = {
            asset: _check_price(price) for asset, price in (last_prices or {}).items()
        }
        for alert in alerts:
            self._put(alert)

    @property
    def alerts(self) -> tuple[PriceAlert, ...]:
        return tuple(self._alerts.values())

    @property
    def last_prices(self) -> dict[str, Decimal]:
        """The last price seen per asset: what a restart needs (a copy)."""
        return dict(self._last_prices)

    def get(self, alert_id: str) -> PriceAlert | None:
        return self._alerts.get(alert_id)

    def add(self, alert: PriceAlert) -> None:
        """Arms ``alert`` (or stores it disarmed), replacing any alert with its id. Its first tick
        never fires."""
        self._put(alert)
        if alert.armed:
            self._unseen.add(alert.id)

    def remove(self, alert_id: str) -> PriceAlert | None:
        """Deletes the alert; returns it, or None if there was none."""
        alert = self._alerts.pop(alert_id, None)
        if alert is not None:
            del self._ids_by_asset[alert.asset][alert_id]
            self._unseen.discard(alert_id)
        return alert

    def observe(self, asset: str, price: Decimal) -> list[AlertTrigger]:
        """The next price of ``asset``: the alerts it fires, in the order they were added."""
        _check_price(price)
        previous = self._last_prices.get(asset)
        self._last_prices[asset] = price
        triggers: list[AlertTrigger] = []
        for alert_id in self._ids_by_asset.get(asset, {}):
            if alert_id in self._unseen:
                self._unseen.discard(alert_id)
                continue
            alert = self._alerts[alert_id]
            if not alert.armed or previous is None or not alert.crosses(previous, price):
                continue
            if alert.once:
                alert = replace(alert, armed=False)
                self._alerts[alert_id] = alert
            triggers.append(AlertTrigger(alert, previous, price))
        return triggers

    def _put(self, alert: PriceAlert) -> None:
        self.remove(alert.id)
        self._alerts[alert.id] = alert
        self._ids_by_asset.setdefault(alert.asset, {})[alert.id] = None


# --- trims ----------------------------------------------------------------------------------------


def floor_to_lot(amount: Decimal, lot_size: Decimal) -> Decimal:
    """The largest whole number of lots not above ``amount`` (both positive), exactly."""
    return amount - amount % lot_size


@dataclass(frozen=True, slots=True)
class TrimRule:
    """Take ``sell_percent`` of the holding when the price is ``gain_percent`` above its average
    cost (and above the last trim; see the module docstring)."""

    asset: str
    gain_percent: Decimal
    """X > 0."""
    sell_percent: Decimal
    """N in (0, 100]."""
    lot_size: Decimal
    """The amount sold is a whole number of these."""
    last_trim_price: Decimal | None = None
    """The price of this rule's last trim: the next needs X% more than it."""

    def __post_init__(self) -> None:
        _check_name(self.asset, "asset")
        _check_number(self.gain_percent, "INVALID_SETTING", "gain percent", positive=True)
        _check_number(self.sell_percent, "INVALID_SETTING", "sell percent", positive=True)
        if self.sell_percent > _HUNDRED:
            raise PortfolioError("INVALID_SETTING", "sell percent must be at most 100")
        _check_number(self.lot_size, "INVALID_SETTING", "lot size", positive=True)
        if self.last_trim_price is not None:
            _check_price(self.last_trim_price, "last trim price")


@dataclass(frozen=True, slots=True)
class TrimDecision:
    """A trim to execute: ``holding`` and ``rule`` are as they stand after it."""

    asset: str
    amount_sold: Decimal
    price: Decimal
    profit_realized: Decimal
    gain_percent: Decimal
    """How far the price is above the average cost, in percent."""
    reasoning: str
    holding: Holding
    rule: TrimRule


def evaluate_trim(holding: Holding, price: Decimal, rule: TrimRule) -> TrimDecision | None:
    """The trim ``rule`` makes of ``holding`` at ``price``, or None when it does not fire."""
    if holding.asset != rule.asset:
        raise ValueError(f"a rule for {rule.asset} cannot trim {holding.asset}")
    _check_price(price)
    average, last, percent = holding.average_cost, rule.last_trim_price, rule.gain_percent
    if holding.amount == 0 or average == 0 or not _gained(price, average, percent):
        return None
    if last is not None and not _gained(price, last, percent):
        return None
    sold = floor_to_lot(holding.amount * rule.sell_percent / _HUNDRED, rule.lot_size)
    if sold == 0:
        return None
    gain = (price - average) * _HUNDRED / average
    reasoning = f"price {_show(price)} is {gain:.2f}% above the average cost {_show(average)}"
    if last is not None:
        above_last = (price - last) * _HUNDRED / last
        reasoning += f" and {above_last:.2f}% above the last trim at {_show(last)}"
    reasoning += (
        f" (rule: take {rule.sell_percent.normalize():f}% at +{rule.gain_percent.normalize():f}%)"
    )
    return TrimDecision(
        asset=holding.asset,
        amount_sold=sold,
        price=price,
        profit_realized=sold * (price - average),
        gain_percent=gain,
        reasoning=reasoning,
        holding=holding.sell(sold, price),
        rule=replace(rule, last_trim_price=price),
    )


def _gained(price: Decimal, reference: Decimal, percent: Decimal) -> bool:
    """Whether ``price`` is at least ``percent`` above ``reference`` (> 0), without dividing."""
    return (price - reference) * _HUNDRED >= percent * reference


def _show(price: Decimal) -> str:
    """A price for people: 2,150.00; below 1 with up to 8 places (0.00001234)."""
    if abs(price) >= 1:
        return f"{price:,.2f}"
    text = f"{price:.8f}".rstrip("0")
    return text + "0" * max(0, 2 - len(text.partition(".")[2]))


# --- conversions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """Both holdings after the conversion, and what moved."""

    from_holding: Holding
    to_holding: Holding
    from_amount: Decimal
    to_amount: Decimal
    from_price: Decimal
    to_price: Decimal
    fee: Decimal
    """USD: the value given minus the value received (the fee rate's share and the rounding)."""

    @property
    def from_asset(self) -> str:
        return self.from_holding.asset

    @property
    def to_asset(self) -> str:
        return self.to_holding.asset


def convert(
    from_holding: Holding,
    to_holding: Holding,
    from_amount: Decimal,
    from_price: Decimal | None,
    to_price: Decimal | None,
    fee_rate: Decimal,
    places: int = DEFAULT_PLACES,
) -> ConversionResult:
    """Converts ``from_amount`` of one asset into another at the current prices (module docstring).
    Checks, in order: SAME_ASSET, INVALID_AMOUNT, PRICE_UNAVAILABLE, INVALID_SETTING (fee rate,
    places), INSUFFICIENT_FUNDS, then INVALID_AMOUNT for a result of nothing or too much."""
    source, target = from_holding.asset, to_holding.asset
    if source == target:
        raise PortfolioError("SAME_ASSET", f"cannot convert {source} into itself")
    _check_number(from_amount, "INVALID_AMOUNT", "amount", positive=True)
    from_price = _available_price(from_price, source)
    to_price = _available_price(to_price, target)
    if not fee_rate.is_finite() or not 0 <= fee_rate < 1:
        raise PortfolioError("INVALID_SETTING", "fee rate must be at least 0 and below 1")
    if not 0 <= places <= MAX_PLACES:
        raise PortfolioError("INVALID_SETTING", f"places must be between 0 and {MAX_PLACES}")
    if from_amount > from_holding.amount:
        raise PortfolioError(
            "INSUFFICIENT_FUNDS",
            f"cannot convert {from_amount:f} {source}: {from_holding.amount:f} held",
        )
    exact = Fraction(from_amount) * Fraction(from_price) / Fraction(to_price)
    units = math.floor(exact * (1 - Fraction(fee_rate)) * 10**places)
    to_amount = Decimal(units).scaleb(-places)
    if to_amount == 0:
        raise PortfolioError(
            "INVALID_AMOUNT", f"{from_amount:f} {source} is too little to receive any {target}"
        )
    bought = to_holding.buy(to_amount, to_price)
    fee = from_amount * from_price - to_amount * to_price
    return ConversionResult(
        from_holding=from_holding.sell(from_amount, from_price, fee),
        to_holding=bought,
        from_amount=from_amount,
        to_amount=to_amount,
        from_price=from_price,
        to_price=to_price,
        fee=fee,
    )


# --- events ---------------------------------------------------------------------------------------


_AT = {"at": "timestamp"}
"""Every event says when it happened as ``timestamp``."""


class TradeAction(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    event_type: ClassVar[str] = "PriceUpdate"
    asset: str
    blockchain: str
    price: Decimal
    change_24h: Decimal | None
    """Percent against the price 24 h ago; None when unknown or 0."""
    at: datetime

    @classmethod
    def of(
        cls,
        asset: str,
        blockchain: str,
        price: Decimal,
        price_24h_ago: Decimal | None,
        at: datetime,
    ) -> PriceUpdate:
        change = None if price_24h_ago is None else value_change(price, price_24h_ago).percent
        return cls(asset, blockchain, price, change, at)

    def to_payload(self) -> dict[str, Any]:
        return PRICE_UPDATE.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PriceUpdate:
        return PRICE_UPDATE.decode(payload)


PRICE_UPDATE = PayloadCodec(PriceUpdate, decimals="fixed", keys=_AT)


@dataclass(frozen=True, slots=True)
class TradeExecuted:
    event_type: ClassVar[str] = "TradeExecuted"
    trade_id: str
    asset: str
    action: TradeAction
    amount: Decimal
    price: Decimal
    at: datetime

    def to_payload(self) -> dict[str, Any]:
        return TRADE_EXECUTED.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TradeExecuted:
        return TRADE_EXECUTED.decode(payload)


TRADE_EXECUTED = PayloadCodec(TradeExecuted, decimals="fixed", keys=_AT)


@dataclass(frozen=True, slots=True)
class TrimExecuted:
    event_type: ClassVar[str] = "TrimExecuted"
    trim_id: str
    asset: str
    amount_sold: Decimal
    price: Decimal
    profit_realized: Decimal
    reasoning: str
    at: datetime

    @classmethod
    def of(cls, trim_id: str, decision: TrimDecision, at: datetime) -> TrimExecuted:
        return cls(
            trim_id,
            decision.asset,
            decision.amount_sold,
            decision.price,
            decision.profit_realized,
            decision.reasoning,
            at,
        )

    def to_payload(self) -> dict[str, Any]:
        return TRIM_EXECUTED.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TrimExecuted:
        return TRIM_EXECUTED.decode(payload)


TRIM_EXECUTED = PayloadCodec(TrimExecuted, decimals="fixed", keys=_AT)


@dataclass(frozen=True, slots=True)
class BenchmarkTriggered:
    event_type: ClassVar[str] = "BenchmarkTriggered"
    benchmark_id: str
    asset: str
    target_price: Decimal
    current_price: Decimal
    action: str
    direction: Direction
    at: datetime

    @classmethod
    def of(cls, trigger: AlertTrigger, at: datetime) -> BenchmarkTriggered:
        alert = trigger.alert
        return cls(
            alert.id,
            alert.asset,
            alert.target_price,
            trigger.price,
            alert.action,
            alert.direction,
            at,
        )

    def to_payload(self) -> dict[str, Any]:
        return BENCHMARK_TRIGGERED.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> BenchmarkTriggered:
        return BENCHMARK_TRIGGERED.decode(payload)


BENCHMARK_TRIGGERED = PayloadCodec(BenchmarkTriggered, decimals="fixed", keys=_AT)


@dataclass(frozen=True, slots=True)
class PortfolioUpdate:
    event_type: ClassVar[str] = "PortfolioUpdate"
    total_value_usd: Decimal
    change_24h: Decimal | None
    """Percent (see value_change); None when the value 24 h ago is unknown or 0."""
    change_24h_usd: Decimal | None
    """None when the value 24 h ago is unknown."""
    at: datetime

    @classmethod
    def of(cls, value: Decimal, value_24h_ago: Decimal | None, at: datetime) -> PortfolioUpdate:
        if value_24h_ago is None:
            return cls(value, None, None, at)
        change = value_change(value, value_24h_ago)
        return cls(value, change.percent, change.absolute, at)

    def to_payload(self) -> dict[str, Any]:
        return PORTFOLIO_UPDATE.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PortfolioUpdate:
        return PORTFOLIO_UPDATE.decode(payload)


PORTFOLIO_UPDATE = PayloadCodec(PortfolioUpdate, decimals="fixed", keys=_AT)


@dataclass(frozen=True, slots=True)
class ConversionCompleted:
    event_type: ClassVar[str] = "ConversionCompleted"
    conversion_id: str
    from_asset: str
    to_asset: str
    from_amount: Decimal
    to_amount: Decimal
    fee_usd: Decimal
    at: datetime

    @classmethod
    def of(cls, conversion_id: str, result: ConversionResult, at: datetime) -> ConversionCompleted:
        return cls(
            conversion_id,
            result.from_asset,
            result.to_asset,
            result.from_amount,
            result.to_amount,
            result.fee,
            at,
        )

    def to_payload(self) -> dict[str, Any]:
        return CONVERSION_COMPLETED.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ConversionCompleted:
        return CONVERSION_COMPLETED.decode(payload)


CONVERSION_COMPLETED = PayloadCodec(ConversionCompleted, decimals="fixed", keys=_AT)
