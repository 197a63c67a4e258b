"""The simulated traders trade through the desk like anyone else, in whole steps."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from domain.markets import MarketCatalog
from domain.perps_margin import account_movement
from domain.perps_simulator import (
    DEMO_POSITIONS,
    DEMO_USER,
    SIMULATED_BALANCE,
    TRADERS,
    PerpsSimulator,
)
from domain.perps_trades import Trade, TradeError, close_position, open_position
from domain.prices import OraclePrice
from tests.domain.factories import make_market
from tests.domain.fakes import FakePrices, ManualClock

if TYPE_CHECKING:
    from domain.perps import Position, Side

D = Decimal
MARKETS = MarketCatalog(
    [make_market("BTC-PERP", "0.1"), make_market("ETH-PERP", "0.01"), make_market("SOL-PERP")]
)
AT = datetime(2024, 1, 1, tzinfo=UTC)


class Accounts:
    """Free margin by owner; opening takes collateral and fee (``account_movement``)."""

    def __init__(self) -> None:
        self.balances: dict[str, Decimal] = {}
        self.deposits: list[tuple[str, Decimal]] = []

    async def top_up(self, owner: str, floor: Decimal) -> Decimal:
        balance = self.balances.get(owner, D(0))
        if balance < floor:
            self.deposits.append((owner, floor - balance))
            self.balances[owner] = floor
        return self.balances[owner]


class PaperDesk:
    """Opens and closes at the stored price, keeping positions by owner."""

    def __init__(self, prices: FakePrices, accounts: Accounts) -> None:
        self.prices = prices
        self.accounts = accounts
        self.held: dict[str, dict[str, Position]] = {}
        self.opened = 0

    async def open(
        self, owner: str, market_id: str, side: Side, size: Decimal, leverage: Decimal
    ) -> Trade:
        stored = await self.prices.latest(market_id)
        assert stored is not None
        self.opened += 1
        trade = open_position(
            id=f"p{self.opened}",
            owner=owner,
            market=MARKETS.get(market_id),
            side=side,
            size=size,
            leverage=leverage,
            price=stored[0].price,
            at=AT,
        )
        balance = self.accounts.balances.get(owner, D(0)) + account_movement(trade, D(0))
        if balance < 0:
            raise TradeError("INSUFFICIENT_MARGIN", "not enough free margin")
        self.accounts.balances[owner] = balance
        self.held.setdefault(owner, {})[trade.position.id] = trade.position
        return trade

    async def close(self, owner: str, position_id: str) -> Trade:
        position = self.held[owner].pop(position_id)
        return close_position(
            position, market=MARKETS.get(position.market), price=position.entry_price, at=AT
        )

    async def open_positions(self, owner: str | None = None) -> list[Position]:
        assert owner is not None
        return list(self.held.get(owner, {}).values())


async def simulator(prices: dict[str, str] | None = None) -> tuple[PerpsSimulator, PaperDesk]:
    fake_prices = FakePrices()
    for market, price in (prices or {}).items():
        await fake_prices.save(OraclePrice(market, D(price), D(1), AT), 1)
    desk = PaperDesk(fake_prices, Accounts())
    sim = PerpsSimulator(
        MARKETS,
        desk=desk,
        positions=desk,
        funding=desk.accounts,
        prices=fake_prices,
        clock=ManualClock(),
        seed=7,
    )
    return sim, desk


async def test_the_demo_user_keeps_one_position_per_market() -> None:
    sim, desk = await simulator({"BTC-PERP": "50000", "ETH-PERP": "3000", "SOL-PERP": "150"})
    await sim.step()
    await sim.step()
    demo = await desk.open_positions(DEMO_USER)
    assert sorted((p.market, p.side) for p in demo) == sorted(
        (market, side) for market, side, _ in DEMO_POSITIONS
    )
    [btc] = [p for p in demo if p.market == "BTC-PERP"]
    assert btc.size == D("0.2")  # 10,000 of notional at 50,000, in whole 0.001 steps
    assert btc.leverage == D(5)


async def test_simulated_traders_are_funded_before_each_open() -> None:
    # Without the top-ups the demo user's three positions (about 6,600 of collateral and fees)
    # would drain an account of SIMULATED_BALANCE after one round of reopening.
    sim, desk = await simulator({"BTC-PERP": "50000", "ETH-PERP": "3000", "SOL-PERP": "150"})
    await sim.step()
    demo = await desk.open_positions(DEMO_USER)
    assert len(demo) == 3
    assert desk.accounts.deposits[0] == (DEMO_USER, SIMULATED_BALANCE)
    spent = sum((p.collateral - p.realized_pnl for p in demo), D(0))  # collateral + fees
    assert desk.accounts.balances[DEMO_USER] == SIMULATED_BALANCE - spent + sum(
        (amount for owner, amount in desk.accounts.deposits[1:] if owner == DEMO_USER), D(0)
    )
    for position in demo:  # they go, and the next step reopens them from a topped-up account
        await desk.close(DEMO_USER, position.id)
    await sim.step()
    assert len(await desk.open_positions(DEMO_USER)) == 3


async def test_nothing_is_opened_without_a_price() -> None:
    sim, desk = await simulator()
    await sim.step()
    assert desk.opened == 0


async def test_traders_hold_at_most_two_positions_in_whole_steps() -> None:
    sim, desk = await simulator({"BTC-PERP": "50000", "ETH-PERP": "3000", "SOL-PERP": "150"})
    for _ in range(50):
        await sim.step()
    traded = [p for t in TRADERS for p in await desk.open_positions(t)]
    assert traded  # with this seed, some traders hold positions
    for trader in TRADERS:
        assert len(await desk.open_positions(trader)) <= 2
    for position in traded:
        market = MARKETS.get(position.market)
        assert position.size % market.step_size == 0
        assert D(10) <= (position.leverage or D(0)) <= market.max_leverage


async def test_size_is_at_least_the_minimum() -> None:
    sim, _ = await simulator()
    assert sim.size_for("BTC-PERP", D(1), D(50000)) == D("0.001")
