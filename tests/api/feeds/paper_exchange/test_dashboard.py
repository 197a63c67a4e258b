"""The live dashboard values an account tick after tick from what its revision worked out once
(``AccountValuer``): the same positions and balance as the account's own methods, and the same
digits on the wire as the payload round trip it replaced."""

from __future__ import annotations

from dataclasses import astuple, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from api.feeds.paper_exchange.types import PaperBalance, PaperPosition, account_views
from domain.markets import Market, MarketCatalog
from domain.paper_exchange import OrderError, OrderRequest, OrderSide, OrderType, PaperAccount

D = Decimal
AT = datetime(2026, 12, 6, tzinfo=UTC)


def market(id: str, tick: str, step: str, mmr: str) -> Market:
    return Market(id, id[:3], "USD", D(tick), D(step), D(step), D(20), D(mmr), D("0.015"))


MARKETS = MarketCatalog(
    [
        market("BTC-PERP", "0.1", "0.0001", "0.03"),
        market("ETH-PERP", "0.01", "0.001", "0.03"),
        market("SOL-PERP", "0.001", "0.01", "0.05"),
    ]
)
SYMBOLS = [m.id for m in MARKETS]

prices = st.builds(
    lambda digits, exponent: D(digits).scaleb(exponent),
    st.integers(1, 10**7),
    st.integers(-4, 1),
)


@st.composite
def accounts(draw: st.DrawFn) -> PaperAccount:
    """An account after a few market and limit orders, at a default leverage of its own."""
    account = PaperAccount(
        "alice",
        MARKETS,
        initial_balance=D(draw(st.sampled_from([10**4, 10**8]))),
        default_leverage=D(draw(st.integers(1, 20))),
    )
    for _ in range(draw(st.integers(0, 6))):
        symbol = draw(st.sampled_from(SYMBOLS))
        mark = draw(prices)
        try:
            limit = draw(st.booleans())
            request = OrderRequest(
                symbol,
                draw(st.sampled_from(OrderSide)),
                OrderType.LIMIT if limit else OrderType.MARKET,
                MARKETS.get(symbol).step_size * draw(st.integers(1, 10**5)),
                price=mark.quantize(MARKETS.get(symbol).tick_size) if limit else None,
            )
            account.place_order(request, {symbol: mark}, AT)
        except OrderError:
            pass
    return account


marks = st.dictionaries(
    st.sampled_from(SYMBOLS),
    st.one_of(prices, st.sampled_from([D(0), D(-1), D("1e16"), D("NaN")])),
)


def exact(value: Any) -> Any:
    """Digits, not just the number: ``Decimal('1.0')`` and ``Decimal('1')`` differ."""
    if isinstance(value, tuple):
        return tuple(exact(v) for v in value)
    return str(value) if isinstance(value, Decimal) else value


def wire(view: Any) -> dict[str, Any]:
    """What the Decimal scalar sends of each field (``format(value, "f")``)."""
    shown = {}
    for f in fields(view):
        value = getattr(view, f.name)
        shown[f.name] = format(value, "f") if isinstance(value, Decimal) else value
    return shown


@given(accounts(), st.lists(marks, min_size=1, max_size=3))
def test_an_account_is_valued_as_its_own_methods_value_it(
    account: PaperAccount, ticks: list[dict[str, Decimal]]
) -> None:
    valuer = account.valuer()
    assert valuer.symbols == {v.position.symbol for v in account.positions({})}
    for prices_now in ticks:
        positions = valuer.positions(prices_now)
        assert [exact(astuple(v)) for v in positions] == [
            exact(astuple(v)) for v in account.positions(prices_now)
        ]
        assert exact(astuple(valuer.balance(positions))) == exact(
            astuple(account.balance(prices_now))
        )
        balance, shown = account_views(valuer, prices_now)
        before = PaperBalance.of(account.balance(prices_now).to_payload())
        assert wire(balance) == wire(before)
        assert [wire(p) for p in shown] == [
            wire(PaperPosition.of(v.to_payload())) for v in account.positions(prices_now)
        ]
