"""What the positions stream shows at every mark, digit for digit.

The stream re-values a position from what its revision worked out once (``_Valuer``); a property
test holds every field of what it shows to the definitions as ``Position.build`` applied them
before (``domain.perps.mark_to_market`` as it was written, the liquidation price on the tick,
six-place ratios).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from api.schema.perps import Position, _Valuer
from domain import perps
from domain.markets import Market, MarketCatalog

D = Decimal


def market(id: str = "BTC-PERP", tick: str = "0.1", mmr: str = "0.03") -> Market:
    return Market(id, id[:3], "USD", D(tick), D("0.001"), D("0.001"), D(20), D(mmr), D("0.015"))


# --- every field, digit for digit ------------------------------------------------------------


def shown_before(position: perps.Position, market: Market, mark: Decimal | None) -> dict[str, Any]:
    """What ``Position.build`` showed before a tick was shared: every field, from the
    definitions as ``mark_to_market`` applied them (same operations, same order)."""
    mmr = market.maintenance_margin_rate
    places = D("0.000001")
    shown: dict[str, Any] = {
        "id": position.id,
        "owner": position.owner,
        "market": position.market,
        "side": position.side.value,
        "size": position.size,
        "entry_price": position.entry_price,
        "collateral": position.collateral,
        "leverage": None if position.leverage is None else position.leverage.quantize(D("0.01")),
        "realized_pnl": position.realized_pnl,
        "opened_at": position.opened_at,
        "revision": position.revision,
        "mark_price": mark,
    }
    liquidation = perps.liquidation_price(position, mmr)
    if liquidation is None:
        shown["liquidation_price"] = None
    else:
        rounding = ROUND_CEILING if position.side is perps.Side.LONG else ROUND_FLOOR
        steps = (liquidation / market.tick_size).to_integral_value(rounding)
        shown["liquidation_price"] = steps * market.tick_size
    if mark is None:
        valued = ("notional", "unrealized_pnl", "equity", "maintenance_margin", "health_factor")
        return shown | dict.fromkeys((*valued, "margin_ratio"))
    notional = position.size * mark
    upnl = position.signed_size * (mark - position.entry_price)
    equity = position.collateral + upnl
    requirement = notional * mmr
    health = equity / requirement if requirement > 0 else None
    ratio = requirement / equity if equity > 0 else None
    return shown | {
        "notional": notional,
        "unrealized_pnl": upnl,
        "equity": equity,
        "maintenance_margin": requirement,
        "health_factor": None if health is None else health.quantize(places),
        "margin_ratio": None if ratio is None else ratio.quantize(places),
    }


def digits(value: Any) -> Any:
    """A value as it is shown: ``Decimal('1.0')`` and ``Decimal('1')`` differ."""
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    return getattr(value, "value", value)  # an enum by its value


def shown(view: Position) -> dict[str, Any]:
    return {f.name: digits(getattr(view, f.name)) for f in fields(view)}


def amounts(low: int, high: int) -> st.SearchStrategy[Decimal]:
    """Positive decimals from ``10**low`` to ``10**high`` with varied digits and exponents."""
    return st.builds(
        lambda digits, exponent: D(digits).scaleb(exponent),
        st.integers(1, 10**9),
        st.integers(low - 9, high - 9),
    ).filter(lambda d: D(10) ** low <= d <= D(10) ** high)


markets = st.builds(
    market,
    st.just("BTC-PERP"),
    st.sampled_from(["0.1", "0.01", "0.001", "1", "0.5", "0.00001"]),
    st.sampled_from(["0.005", "0.025", "0.03", "0.05", "0.1", "0.0001", "0.3333"]),
)


@st.composite
def positions(draw: st.DrawFn) -> perps.Position:
    size = draw(amounts(-8, 7))
    entry = draw(amounts(-6, 7))
    leverage = draw(st.one_of(st.none(), amounts(0, 2)))  # None: no collateral
    collateral = D(0) if leverage is None else size * entry / leverage
    return perps.Position(
        id=draw(st.sampled_from(["p1", "pos_0123456789abcdef"])),
        owner="alice",
        market="BTC-PERP",
        side=draw(st.sampled_from(perps.Side)),
        size=size,
        entry_price=entry,
        collateral=draw(st.sampled_from([collateral, collateral.quantize(D("0.000001"))])),
        opened_at=draw(st.one_of(st.none(), st.just(datetime(2026, 12, 6, tzinfo=UTC)))),
        realized_pnl=draw(st.sampled_from([D(0), D("-12.345678"), D("1e6")])),
        revision=draw(st.integers(0, 2**40)),
    )


@st.composite
def marks(draw: st.DrawFn, position: perps.Position, market: Market) -> Decimal | None:
    """No mark, any mark, or one at, beside or near the liquidation price (health about 1)."""
    liquidation = perps.liquidation_price(position, market.maintenance_margin_rate)
    near = [] if liquidation is None else [liquidation, liquidation + market.tick_size]
    near += [v for v in near if v - 2 * market.tick_size > 0]
    choice = draw(
        st.one_of(
            st.none(),
            amounts(-6, 8),
            st.sampled_from([position.entry_price, *near]),
            st.just(position.entry_price * D("1.19")),
        )
    )
    if choice is not None and draw(st.booleans()):
        choice = choice.quantize(market.tick_size) if choice >= market.tick_size else choice
    return choice


@given(st.data())
def test_a_position_shows_the_same_digits_at_every_mark(data: st.DataObject) -> None:
    position = data.draw(positions())
    btc = data.draw(markets)
    valuer = _Valuer(position, btc)
    for _ in range(data.draw(st.integers(1, 4))):  # one valuer re-valued tick after tick
        mark = data.draw(marks(position, btc))
        expected = {k: digits(v) for k, v in shown_before(position, btc, mark).items()}
        assert shown(valuer.at(mark)) == expected
        assert shown(Position.build(position, MarketCatalog([btc]), mark)) == expected
        if mark is not None:
            # The domain's valuation agrees: the engine's health is the stream's.
            valuation = perps.mark_to_market(position, mark, btc)
            assert digits(valuation.notional) == expected["notional"]
            assert digits(valuation.equity) == expected["equity"]


def test_an_equal_mark_with_other_digits_is_shown_with_its_own() -> None:
    position = perps.Position("p1", "alice", "BTC-PERP", perps.Side.LONG, D(1), D(100), D(10))
    valuer = _Valuer(position, market())
    first = valuer.at(D("105"))
    assert valuer.at(first.mark_price) is first  # the same mark: nothing is built again
    again = valuer.at(D("105.0"))
    assert str(again.mark_price) == "105.0"
    assert str(again.notional) == "105.0"
