"""The wire format of every domain event payload, pinned byte for byte.

Events are stored (topic_history, latest_events) and read by processes of other versions during a
rolling deploy, so the JSON a payload type makes must never change: each case builds a payload
from representative values (Decimal text in both of today's formats, datetimes, enum values,
nesting, nulls) and compares its JSON with a golden literal. Where the type can be read back, the
golden JSON is read back too and must give the same object.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from domain import marathons, paper_exchange, perps, perps_engine, perps_margin, portfolio, prices
from domain.markets import MarketCatalog
from domain.payloads import PayloadCodec, camel
from domain.perps_engine import liquidated_announcement, trade_announcement
from domain.perps_trades import Fill as PerpsFill
from domain.perps_trades import FillKind, Trade
from tests.domain.factories import make_market

if TYPE_CHECKING:
    from collections.abc import Callable

AT = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
LATER = AT + timedelta(minutes=5)
PLUS_TWO = datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
TINY = Decimal("0.00000001")
"""``str`` gives ``1E-8``, ``f"{:f}"`` gives ``0.00000001``."""
ROUND = Decimal("1E+3")
"""``str`` gives ``1E+3``, ``f"{:f}"`` gives ``1000``."""


@dataclass(frozen=True)
class Case:
    make: Callable[[], Any]
    """The object the payload is made of."""
    encode: Callable[[Any], dict[str, Any]]
    golden: str
    decode: Callable[[dict[str, Any]], Any] | None = None


def position(**changes: Any) -> perps.Position:
    values: dict[str, Any] = {
        "id": "p-1",
        "owner": "alice",
        "market": "BTC-PERP",
        "side": perps.Side.SHORT,
        "size": ROUND,
        "entry_price": Decimal("65000.50"),
        "collateral": TINY,
        "opened_at": AT,
        "realized_pnl": Decimal("-1.250"),
        "revision": 3,
    }
    return perps.Position(**(values | changes))


def order(**changes: Any) -> paper_exchange.Order:
    values: dict[str, Any] = {
        "id": "7",
        "symbol": "ETH-PERP",
        "side": paper_exchange.OrderSide.SELL,
        "type": paper_exchange.OrderType.TAKE_PROFIT,
        "quantity": ROUND,
        "status": paper_exchange.OrderStatus.NEW,
        "created_at": AT,
        "updated_at": PLUS_TWO,
        "price": TINY,
        "client_order_id": "c-1",
        "filled": Decimal("0.500"),
        "average_price": Decimal("3200.1"),
        "reduce_only": True,
        "parent_id": "6",
        "active": False,
        "reserved_margin": Decimal("12.000001"),
        "take_profit": Decimal("3300"),
        "stop_loss": Decimal("3100"),
    }
    return paper_exchange.Order(**(values | changes))


def paper_position(size: Decimal = Decimal("-0.50")) -> paper_exchange.PaperPosition:
    return paper_exchange.PaperPosition(
        symbol="BTC-PERP",
        size=size,
        entry_price=Decimal("65000.5"),
        realized_pnl=TINY,
        opened_at=AT,
        updated_at=LATER,
    )


def valuation(liquidation: Decimal | None) -> perps.Valuation:
    return perps.Valuation(
        position=position(),
        mark=Decimal("65100.25"),
        notional=ROUND,
        unrealized_pnl=Decimal("-100"),
        equity=Decimal("5"),
        maintenance_requirement=Decimal("3"),
        health=Decimal("1.6666"),
        margin_ratio=Decimal("0.6"),
        liquidation_price=liquidation,
        liquidation_reward=TINY,
    )


def trade(reward: Decimal = Decimal(0)) -> Trade:
    fill = PerpsFill(
        position_id="p-1",
        owner="alice",
        market="BTC-PERP",
        side=perps.Side.SHORT,
        kind=FillKind.LIQUIDATION,
        size=ROUND,
        price=Decimal("65000.0"),
        fee=TINY,
        realized_pnl=Decimal("-3"),
        at=LATER,
    )
    return Trade(position(), fill, returned=Decimal("2.50"), reward=reward)


def snapshot(**changes: Any) -> marathons.AccountSnapshot:
    values: dict[str, Any] = {
        "login": 1001,
        "balance": ROUND,
        "equity": Decimal("1010.50"),
        "profit": Decimal("10.5"),
        "margin": TINY,
        "free_margin": Decimal("900"),
        "server_time": PLUS_TWO,
        "credit": Decimal("0"),
        "open_positions": (
            marathons.OpenTrade(
                ticket=5,
                symbol="EURUSD",
                side=marathons.TradeSide.SELL,
                volume=Decimal("0.10"),
                open_price=Decimal("1.08500"),
                profit=Decimal("-2E+1"),
            ),
        ),
        "pending_orders": (
            marathons.PendingOrder(
                ticket=6,
                symbol="XAUUSD",
                type=marathons.OrderType.BUY_STOP_LIMIT,
                volume=Decimal("1"),
                price=Decimal("2000.00"),
            ),
        ),
    }
    return marathons.AccountSnapshot(**(values | changes))


def candidate_payload(valuation: perps.Valuation) -> dict[str, Any]:
    return perps_engine.CANDIDATE.encode(perps_engine.Candidate.of(valuation))


ACCOUNT = perps_margin.MarginAccount("alice", TINY, ROUND, 9)
"""The owner's account after a trade, as the store adds it to the trade's positions event."""


MARKETS = MarketCatalog([make_market("BTC-PERP"), make_market("ETH-PERP", "0.01")])

ORDER_GOLDEN = (
    '{"id":"7","clientOrderId":"c-1","symbol":"ETH-PERP","type":"TAKE_PROFIT","side":"SELL","'
    'status":"NEW","quantity":"1000","price":"0.00000001","filled":"0.500","averagePrice":"32'
    '00.1","reduceOnly":true,"parentId":"6","active":false,"reservedMargin":"12.000001","take'
    'Profit":"3300","stopLoss":"3100","createdAt":"2024-03-01T12:30:15.123456+00:00","updated'
    'At":"2024-03-01T14:00:00+02:00"}'
)
ORDER_NULLS_GOLDEN = (
    '{"id":"7","clientOrderId":null,"symbol":"ETH-PERP","type":"MARKET","side":"BUY","status"'
    ':"FILLED","quantity":"1000","price":null,"filled":"0","averagePrice":null,"reduceOnly":f'
    'alse,"parentId":null,"active":true,"reservedMargin":"0","takeProfit":null,"stopLoss":nul'
    'l,"createdAt":"2024-03-01T12:30:15.123456+00:00","updatedAt":"2024-03-01T14:00:00+02:00"'
    "}"
)

PAPER_POSITION_GOLDEN = (
    '{"symbol":"BTC-PERP","size":"-0.50","entryPrice":"65000.5","realizedPnl":"0.00000001","o'
    'penedAt":"2024-03-01T12:30:15.123456+00:00","updatedAt":"2024-03-01T12:35:15.123456+00:0'
    '0"}'
)

PAPER_ACCOUNT = (
    '{"owner":"alice","currency":"USD","initialBalance":"10000","defaultLeverage":"10",'
    '"walletBalance":"9990.5","realizedPnl":"-9.5","totalFeesPaid":"0.00000001","revision":4,'
    '"sequence":7,"leverage":{"BTC-PERP":"5"},'
    '"positions":[{"symbol":"BTC-PERP","size":"-0.50","entryPrice":"65000.5",'
    '"realizedPnl":"0.00000001","openedAt":"2024-03-01T12:30:15.123456+00:00",'
    '"updatedAt":"2024-03-01T12:35:15.123456+00:00"}],'
    '"orders":[' + ORDER_GOLDEN + "]}"
)

CASES: dict[str, Case] = {}


def case(
    name: str,
    make: Callable[[], Any],
    encode: Callable[[Any], dict[str, Any]],
    golden: str,
    decode: Callable[[dict[str, Any]], Any] | None = None,
) -> None:
    CASES[name] = Case(make, encode, golden, decode)


case(
    "OraclePrice",
    lambda: prices.OraclePrice("BTC-PERP", Decimal("65000.10"), TINY, AT),
    prices.OraclePrice.to_payload,
    (
        '{"market":"BTC-PERP","price":"65000.10","confidence":"1E-8","published_at":"2024-03-01T1'
        '2:30:15.123456+00:00"}'
    ),
    prices.OraclePrice.from_payload,
)
case(
    "OraclePrice, other offset and large exponent",
    lambda: prices.OraclePrice("SOL-PERP", ROUND, Decimal("0"), PLUS_TWO),
    prices.OraclePrice.to_payload,
    (
        '{"market":"SOL-PERP","price":"1E+3","confidence":"0","published_at":"2024-03-01T14:00:00'
        '+02:00"}'
    ),
    prices.OraclePrice.from_payload,
)
case(
    "perps Position",
    position,
    perps.Position.to_payload,
    (
        '{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"short","size":"1E+3","entryPrice'
        '":"65000.50","collateral":"1E-8","openedAt":"2024-03-01T12:30:15.123456+00:00","realized'
        'Pnl":"-1.250","revision":3}'
    ),
    perps.Position.from_payload,
)
case(
    "perps Position, never opened",
    lambda: position(side=perps.Side.LONG, opened_at=None, realized_pnl=Decimal(0), revision=0),
    perps.Position.to_payload,
    (
        '{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"long","size":"1E+3","entryPrice"'
        ':"65000.50","collateral":"1E-8","openedAt":null,"realizedPnl":"0","revision":0}'
    ),
    perps.Position.from_payload,
)
case(
    "MarginAccount",
    lambda: perps_margin.MarginAccount("alice", TINY, ROUND, 9),
    perps_margin.MarginAccount.to_payload,
    '{"owner":"alice","balance":"1E-8","deposited":"1E+3","revision":9}',
    perps_margin.MarginAccount.from_payload,
)
case(
    "liquidation candidate",
    lambda: valuation(Decimal("66000.5")),
    candidate_payload,
    (
        '{"positionId":"p-1","market":"BTC-PERP","side":"short","size":"1E+3","markPrice":"65100.'
        '25","notional":"1E+3","healthFactor":"1.6666","liquidationPrice":"66000.5","potentialRew'
        'ard":"1E-8"}'
    ),
)
case(
    "liquidation candidate without a liquidation price",
    lambda: valuation(None),
    candidate_payload,
    (
        '{"positionId":"p-1","market":"BTC-PERP","side":"short","size":"1E+3","markPrice":"65100.'
        '25","notional":"1E+3","healthFactor":"1.6666","liquidationPrice":null,"potentialReward":'
        '"1E-8"}'
    ),
)
case(
    "trade announcement",
    trade,
    lambda t: trade_announcement("PositionClosed", t).payload,
    (
        '{"position":{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"short","size":"1E+3"'
        ',"entryPrice":"65000.50","collateral":"1E-8","openedAt":"2024-03-01T12:30:15.123456+00:0'
        '0","realizedPnl":"-1.250","revision":3},"fill":{"kind":"liquidation","size":"1E+3","pric'
        'e":"65000.0","fee":"1E-8","realizedPnl":"-3","at":"2024-03-01T12:35:15.123456+00:00"},"r'
        'eturned":"2.50"}'
    ),
)
case(
    "liquidated announcement",
    lambda: trade(Decimal("1.5")),
    lambda t: liquidated_announcement(t).payload,
    (
        '{"position":{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"short","size":"1E+3"'
        ',"entryPrice":"65000.50","collateral":"1E-8","openedAt":"2024-03-01T12:30:15.123456+00:0'
        '0","realizedPnl":"-1.250","revision":3},"fill":{"kind":"liquidation","size":"1E+3","pric'
        'e":"65000.0","fee":"1E-8","realizedPnl":"-3","at":"2024-03-01T12:35:15.123456+00:00"},"r'
        'eturned":"2.50","reward":"1.5"}'
    ),
)
case(
    "position opened, with the account",
    trade,
    lambda t: trade_announcement(perps_engine.POSITION_OPENED, t).with_account(ACCOUNT).payload,
    (
        '{"position":{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"short","size":"1E+3","'
        'entryPrice":"65000.50","collateral":"1E-8","openedAt":"2024-03-01T12:30:15.123456+00:00","'
        'realizedPnl":"-1.250","revision":3},"fill":{"kind":"liquidation","size":"1E+3","price":"65'
        '000.0","fee":"1E-8","realizedPnl":"-3","at":"2024-03-01T12:35:15.123456+00:00"},"returned"'
        ':"2.50","account":{"owner":"alice","balance":"1E-8","deposited":"1E+3","revision":9}}'
    ),
)
case(
    "position liquidated, with the account",
    lambda: trade(Decimal("1.5")),
    lambda t: liquidated_announcement(t).with_account(ACCOUNT).payload,
    (
        '{"position":{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"short","size":"1E+3","'
        'entryPrice":"65000.50","collateral":"1E-8","openedAt":"2024-03-01T12:30:15.123456+00:00","'
        'realizedPnl":"-1.250","revision":3},"fill":{"kind":"liquidation","size":"1E+3","price":"65'
        '000.0","fee":"1E-8","realizedPnl":"-3","at":"2024-03-01T12:35:15.123456+00:00"},"returned"'
        ':"2.50","reward":"1.5","account":{"owner":"alice","balance":"1E-8","deposited":"1E+3","rev'
        'ision":9}}'
    ),
)
case(
    "position modified by funding",
    position,
    lambda p: perps_engine.funding_announcement(p).payload,
    (
        '{"position":{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"short","size":"1E+3","'
        'entryPrice":"65000.50","collateral":"1E-8","openedAt":"2024-03-01T12:30:15.123456+00:00","'
        'realizedPnl":"-1.250","revision":3},"reason":"funding"}'
    ),
)
case(
    "position warning",
    lambda: valuation(Decimal("66000.5")),
    perps_engine.warning_payload,
    (
        '{"position":{"id":"p-1","owner":"alice","market":"BTC-PERP","side":"short","size":"1E+3","'
        'entryPrice":"65000.50","collateral":"1E-8","openedAt":"2024-03-01T12:30:15.123456+00:00","'
        'realizedPnl":"-1.250","revision":3},"markPrice":"65100.25","healthFactor":"1.6666"}'
    ),
)
case(
    "liquidation candidates",
    lambda: [valuation(Decimal("66000.5")), valuation(None)],
    perps_engine.candidates_payload,
    (
        '{"candidates":[{"positionId":"p-1","market":"BTC-PERP","side":"short","size":"1E+3","markP'
        'rice":"65100.25","notional":"1E+3","healthFactor":"1.6666","liquidationPrice":"66000.5","p'
        'otentialReward":"1E-8"},{"positionId":"p-1","market":"BTC-PERP","side":"short","size":"1E+'
        '3","markPrice":"65100.25","notional":"1E+3","healthFactor":"1.6666","liquidationPrice":nul'
        'l,"potentialReward":"1E-8"}]}'
    ),
)
case("no liquidation candidates", list, perps_engine.candidates_payload, '{"candidates":[]}')
case(
    "market stats",
    lambda: perps_engine.MarketStats(
        "BTC-PERP",
        Decimal("65000.10"),
        ROUND,
        Decimal("1.5"),
        Decimal("0E-8"),
        Decimal("12345.678"),
        Decimal("0.0000125"),
        AT,
        LATER,
    ),
    perps_engine.MARKET_STATS.encode,
    (
        '{"market":"BTC-PERP","indexPrice":"65000.10","markPrice":"1E+3","openInterestLong":"1.5"'
        ',"openInterestShort":"0E-8","volume24h":"12345.678","fundingRate":"0.0000125","lastFundi'
        'ngAt":"2024-03-01T12:30:15.123456+00:00","nextFundingAt":"2024-03-01T12:35:15.123456+00:'
        '00"}'
    ),
    perps_engine.MARKET_STATS.decode,
)
case(
    "market stats before any price or funding",
    lambda: perps_engine.MarketStats(
        "BTC-PERP", None, None, Decimal(0), Decimal(0), Decimal(0), None, None, LATER
    ),
    perps_engine.MARKET_STATS.encode,
    (
        '{"market":"BTC-PERP","indexPrice":null,"markPrice":null,"openInterestLong":"0","openInte'
        'restShort":"0","volume24h":"0","fundingRate":null,"lastFundingAt":null,"nextFundingAt":"'
        '2024-03-01T12:35:15.123456+00:00"}'
    ),
    perps_engine.MARKET_STATS.decode,
)
case(
    "funding settled",
    lambda: perps_engine.FundingSettled(
        "ETH-PERP", Decimal("-0.0000125"), Decimal("65000.5"), ROUND, AT, LATER, 3
    ),
    perps_engine.FUNDING.encode,
    (
        '{"market":"ETH-PERP","rate":"-0.0000125","markPrice":"65000.5","indexPrice":"1E+3","sett'
        'ledAt":"2024-03-01T12:30:15.123456+00:00","nextFundingAt":"2024-03-01T12:35:15.123456+00'
        ':00","positionsCharged":3}'
    ),
    perps_engine.FUNDING.decode,
)
case(
    "paper Order",
    order,
    paper_exchange.Order.to_payload,
    ORDER_GOLDEN,
    paper_exchange.Order.from_payload,
)
case(
    "paper Order, market with nulls",
    lambda: order(
        type=paper_exchange.OrderType.MARKET,
        side=paper_exchange.OrderSide.BUY,
        status=paper_exchange.OrderStatus.FILLED,
        price=None,
        client_order_id=None,
        average_price=None,
        parent_id=None,
        take_profit=None,
        stop_loss=None,
        reduce_only=False,
        active=True,
        filled=Decimal(0),
        reserved_margin=Decimal(0),
    ),
    paper_exchange.Order.to_payload,
    ORDER_NULLS_GOLDEN,
    paper_exchange.Order.from_payload,
)
case(
    "paper Fill",
    lambda: paper_exchange.Fill(
        "3",
        "7",
        "ETH-PERP",
        paper_exchange.OrderSide.BUY,
        ROUND,
        Decimal("3200.5"),
        TINY,
        Decimal("-1.5"),
        LATER,
    ),
    paper_exchange.Fill.to_payload,
    (
        '{"id":"3","orderId":"7","symbol":"ETH-PERP","side":"BUY","quantity":"1000","price":"3200'
        '.5","fee":"0.00000001","pnl":"-1.5","realizedPnl":"-1.50000001","at":"2024-03-01T12:35:1'
        '5.123456+00:00"}'
    ),
    paper_exchange.Fill.from_payload,
)
case(
    "paper Changes",
    lambda: paper_exchange.Changes((order(),), (CASES["paper Fill"].make(),), (paper_position(),)),
    paper_exchange.CHANGES.encode,
    (
        f'{{"orders":[{ORDER_GOLDEN}],"fills":[{CASES["paper Fill"].golden}],'
        f'"positions":[{PAPER_POSITION_GOLDEN}]}}'
    ),
    paper_exchange.CHANGES.decode,
)
case(
    "paper Changes, nothing",
    paper_exchange.Changes,
    paper_exchange.CHANGES.encode,
    '{"orders":[],"fills":[],"positions":[]}',
    paper_exchange.CHANGES.decode,
)
case(
    "PaperPosition",
    paper_position,
    paper_exchange.PaperPosition.to_payload,
    PAPER_POSITION_GOLDEN,
    paper_exchange.PaperPosition.from_payload,
)
case(
    "PositionView",
    lambda: paper_exchange.PositionView(
        paper_position(), ROUND, Decimal("65100"), Decimal("-50.0"), TINY, Decimal("70000.5")
    ),
    paper_exchange.PositionView.to_payload,
    (
        '{"symbol":"BTC-PERP","side":"SHORT","size":"0.50","entryPrice":"65000.5","markPrice":"65'
        '100","unrealizedPnl":"-50.0","realizedPnl":"0.00000001","leverage":"1000","margin":"0.00'
        '000001","liquidationPrice":"70000.5","openedAt":"2024-03-01T12:30:15.123456+00:00","upda'
        'tedAt":"2024-03-01T12:35:15.123456+00:00"}'
    ),
)
case(
    "PositionView, closed and unpriced",
    lambda: paper_exchange.PositionView(
        paper_position(Decimal(0)), Decimal("10"), None, Decimal(0), Decimal(0), None
    ),
    paper_exchange.PositionView.to_payload,
    (
        '{"symbol":"BTC-PERP","side":null,"size":"0","entryPrice":"65000.5","markPrice":null,"unr'
        'ealizedPnl":"0","realizedPnl":"0.00000001","leverage":"10","margin":"0","liquidationPric'
        'e":null,"openedAt":"2024-03-01T12:30:15.123456+00:00","updatedAt":"2024-03-01T12:35:15.1'
        '23456+00:00"}'
    ),
)
case(
    "Balance",
    lambda: paper_exchange.Balance(
        ROUND,
        Decimal("-1.5"),
        TINY,
        Decimal("0.25"),
        Decimal("998.5"),
        Decimal("10"),
        Decimal("0"),
        Decimal("988.500000"),
    ),
    paper_exchange.Balance.to_payload,
    (
        '{"currency":"USD","walletBalance":"1000","unrealizedPnl":"-1.5","realizedPnl":"0.0000000'
        '1","totalFeesPaid":"0.25","netBalance":"998.5","marginUsed":"10","orderMargin":"0","avai'
        'lableBalance":"988.500000"}'
    ),
    paper_exchange.Balance.from_payload,
)
case(
    "PaperAccount",
    lambda: paper_exchange.PaperAccount.from_payload(
        orjson.loads(CASES["PaperAccount"].golden), MARKETS
    ),
    paper_exchange.PaperAccount.to_payload,
    PAPER_ACCOUNT,
)
case(
    "portfolio PriceUpdate",
    lambda: portfolio.PriceUpdate("BTC", "bitcoin", ROUND, TINY, AT),
    portfolio.PriceUpdate.to_payload,
    (
        '{"asset":"BTC","blockchain":"bitcoin","price":"1000","change24h":"0.00000001","timestamp'
        '":"2024-03-01T12:30:15.123456+00:00"}'
    ),
    portfolio.PriceUpdate.from_payload,
)
case(
    "portfolio PriceUpdate without a change",
    lambda: portfolio.PriceUpdate("SOL", "solana", Decimal("150.10"), None, PLUS_TWO),
    portfolio.PriceUpdate.to_payload,
    (
        '{"asset":"SOL","blockchain":"solana","price":"150.10","change24h":null,"timestamp":"2024'
        '-03-01T14:00:00+02:00"}'
    ),
    portfolio.PriceUpdate.from_payload,
)
case(
    "TradeExecuted",
    lambda: portfolio.TradeExecuted("t-1", "ETH", portfolio.TradeAction.SELL, TINY, ROUND, AT),
    portfolio.TradeExecuted.to_payload,
    (
        '{"tradeId":"t-1","asset":"ETH","action":"SELL","amount":"0.00000001","price":"1000","tim'
        'estamp":"2024-03-01T12:30:15.123456+00:00"}'
    ),
    portfolio.TradeExecuted.from_payload,
)
case(
    "TrimExecuted",
    lambda: portfolio.TrimExecuted("trim-1", "BTC", TINY, ROUND, Decimal("12.50"), "why", AT),
    portfolio.TrimExecuted.to_payload,
    (
        '{"trimId":"trim-1","asset":"BTC","amountSold":"0.00000001","price":"1000","profitRealize'
        'd":"12.50","reasoning":"why","timestamp":"2024-03-01T12:30:15.123456+00:00"}'
    ),
    portfolio.TrimExecuted.from_payload,
)
case(
    "BenchmarkTriggered",
    lambda: portfolio.BenchmarkTriggered(
        "b-1", "BTC", ROUND, TINY, "SELL", portfolio.Direction.DOWN, AT
    ),
    portfolio.BenchmarkTriggered.to_payload,
    (
        '{"benchmarkId":"b-1","asset":"BTC","targetPrice":"1000","currentPrice":"0.00000001","act'
        'ion":"SELL","direction":"down","timestamp":"2024-03-01T12:30:15.123456+00:00"}'
    ),
    portfolio.BenchmarkTriggered.from_payload,
)
case(
    "PortfolioUpdate",
    lambda: portfolio.PortfolioUpdate(ROUND, TINY, Decimal("-3.50"), AT),
    portfolio.PortfolioUpdate.to_payload,
    (
        '{"totalValueUsd":"1000","change24h":"0.00000001","change24hUsd":"-3.50","timestamp":"202'
        '4-03-01T12:30:15.123456+00:00"}'
    ),
    portfolio.PortfolioUpdate.from_payload,
)
case(
    "PortfolioUpdate without a change",
    lambda: portfolio.PortfolioUpdate(Decimal("0"), None, None, PLUS_TWO),
    portfolio.PortfolioUpdate.to_payload,
    (
        '{"totalValueUsd":"0","change24h":null,"change24hUsd":null,"timestamp":"2024-03-01T14:00:'
        '00+02:00"}'
    ),
    portfolio.PortfolioUpdate.from_payload,
)
case(
    "ConversionCompleted",
    lambda: portfolio.ConversionCompleted("c-1", "BTC", "ETH", TINY, ROUND, Decimal("0.10"), AT),
    portfolio.ConversionCompleted.to_payload,
    (
        '{"conversionId":"c-1","fromAsset":"BTC","toAsset":"ETH","fromAmount":"0.00000001","toAmo'
        'unt":"1000","feeUsd":"0.10","timestamp":"2024-03-01T12:30:15.123456+00:00"}'
    ),
    portfolio.ConversionCompleted.from_payload,
)
case(
    "marathon AccountSnapshot",
    snapshot,
    marathons.snapshot_to_payload,
    (
        '{"login":1001,"balance":"1E+3","equity":"1010.50","profit":"10.5","margin":"1E-8","freeM'
        'argin":"900","credit":"0","serverTime":"2024-03-01T14:00:00+02:00","positions":[{"ticket'
        '":5,"symbol":"EURUSD","side":"sell","volume":"0.10","openPrice":"1.08500","profit":"-2E+'
        '1"}],"orders":[{"ticket":6,"symbol":"XAUUSD","type":"buy_stop_limit","volume":"1","price'
        '":"2000.00"}]}'
    ),
    marathons.snapshot_from_payload,
)
case(
    "marathon AccountSnapshot, flat",
    lambda: snapshot(open_positions=(), pending_orders=(), server_time=AT),
    marathons.snapshot_to_payload,
    (
        '{"login":1001,"balance":"1E+3","equity":"1010.50","profit":"10.5","margin":"1E-8","freeM'
        'argin":"900","credit":"0","serverTime":"2024-03-01T12:30:15.123456+00:00","positions":[]'
        ',"orders":[]}'
    ),
    marathons.snapshot_from_payload,
)


@pytest.mark.parametrize("name", list(CASES))
def test_payload_json_is_unchanged(name: str) -> None:
    case = CASES[name]
    assert orjson.dumps(case.encode(case.make())).decode() == case.golden


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.decode])
def test_golden_payload_reads_back(name: str) -> None:
    case = CASES[name]
    assert case.decode is not None
    assert case.decode(orjson.loads(case.golden)) == case.make()


POSITION_CHANGE = perps_engine.POSITION_CHANGE
READ_BACK: dict[str, tuple[PayloadCodec[Any], Callable[[Any], Any]]] = {
    "trade announcement": (POSITION_CHANGE, lambda t: trade_announcement("x", t).change),
    "liquidated announcement": (POSITION_CHANGE, lambda t: liquidated_announcement(t).change),
    "position opened, with the account": (
        POSITION_CHANGE,
        lambda t: trade_announcement("x", t).with_account(ACCOUNT).change,
    ),
    "position liquidated, with the account": (
        POSITION_CHANGE,
        lambda t: liquidated_announcement(t).with_account(ACCOUNT).change,
    ),
    "position modified by funding": (
        POSITION_CHANGE,
        lambda p: perps_engine.funding_announcement(p).change,
    ),
    "position warning": (
        POSITION_CHANGE,
        lambda v: perps_engine.PositionChange(
            v.position, mark_price=v.mark, health_factor=v.health
        ),
    ),
    "liquidation candidates": (perps_engine.LIQUIDATIONS, perps_engine.LiquidationsUpdated.of),
    "no liquidation candidates": (perps_engine.LIQUIDATIONS, perps_engine.LiquidationsUpdated.of),
}
"""Events made of parts, read back as the payload they were made of."""


@pytest.mark.parametrize("name", list(READ_BACK))
def test_golden_event_of_parts_reads_back(name: str) -> None:
    codec, payload_of = READ_BACK[name]
    assert codec.decode(orjson.loads(CASES[name].golden)) == payload_of(CASES[name].make())


# --- the codec --------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


@dataclass(frozen=True, slots=True)
class Inner:
    when: date
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Outer:
    name_of_it: str
    inner: Inner
    items: tuple[Inner, ...]
    listed: list[int]
    colour: Colour | None
    change_24h: Decimal = Decimal(0)
    maybe: Decimal | None = None
    count: int = 7

    @property
    def doubled(self) -> int:
        return self.count * 2


OUTER = PayloadCodec(
    Outer, decimals="fixed", fields=(*(f.name for f in dataclasses.fields(Outer)), "doubled")
)
INNER = PayloadCodec(Inner, keys={"when": "on"})


def test_camel() -> None:
    assert camel("entry_price") == "entryPrice"
    assert camel("change_24h_usd") == "change24hUsd"
    assert camel("id") == "id"


def test_codec_round_trip_with_nesting_properties_and_keys() -> None:
    outer = Outer(
        "x", Inner(date(2024, 1, 2), ROUND), (Inner(date(2024, 1, 3), TINY),), [1, 2], None
    )
    payload = OUTER.encode(outer)
    assert orjson.dumps(payload).decode() == (
        '{"nameOfIt":"x","inner":{"on":"2024-01-02","amount":"1E+3"},'
        '"items":[{"on":"2024-01-03","amount":"1E-8"}],"listed":[1,2],"colour":null,'
        '"change24h":"0","maybe":null,"count":7,"doubled":14}'
    )
    assert OUTER.decode(payload) == outer


def test_an_absent_key_gives_the_default() -> None:
    payload = {
        "nameOfIt": "x",
        "inner": {"on": "2024-01-02", "amount": "1"},
        "items": [],
        "listed": [],
        "colour": "red",
    }
    assert OUTER.decode(payload) == Outer(
        "x", Inner(date(2024, 1, 2), Decimal(1)), (), [], Colour.RED
    )
    with pytest.raises(KeyError):
        OUTER.decode({"nameOfIt": "x"})


def test_a_codec_refuses_what_it_cannot_write() -> None:
    @dataclass(frozen=True)
    class Odd:
        value: set[int]

    with pytest.raises(TypeError, match="no payload format"):
        PayloadCodec(Odd).encode(Odd({1}))
    with pytest.raises(TypeError, match="lacks value"):
        PayloadCodec(Odd, fields=()).decode({})
    with pytest.raises(TypeError, match="not a dataclass"):
        PayloadCodec(int)


def test_a_codec_is_generated_once_even_for_a_caller_holding_the_first_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = PayloadCodec(Inner)
    made: list[bool] = []
    generate = PayloadCodec._generate

    def counted(self: PayloadCodec[Any], *, encoding: bool) -> Any:
        made.append(encoding)
        return generate(self, encoding=encoding)

    monkeypatch.setattr(PayloadCodec, "_generate", counted)
    decode, encode = codec.decode, codec.encode
    inner = Inner(date(2024, 1, 2), TINY)
    for _ in range(3):
        assert decode(encode(inner)) == inner
        assert codec.decode(codec.encode(inner)) == inner
    assert made == [True, False]


@dataclass
class Shown:
    """A schema type of Outer's payload: some fields, one named otherwise, one its own."""

    name_of_it: str
    colour: str | None
    twice: int
    change: Decimal
    note: str = "kept"


def test_a_reader_makes_another_type_straight_from_a_payload() -> None:
    read = OUTER.reader(Shown, as_is=("colour",), twice="doubled", change="change_24h")
    outer = Outer("x", Inner(date(2024, 1, 2), TINY), (), [], Colour.RED, Decimal("2.5"), count=4)
    assert read(OUTER.encode(outer)) == Shown("x", "red", 8, Decimal("2.5"))


def test_a_reader_needs_every_field_without_a_default() -> None:
    with pytest.raises(TypeError, match=r"lacks Shown\.twice"):
        OUTER.reader(Shown)


@dataclass(frozen=True, slots=True)
class Parts:
    """An event made of parts, some absent depending on its type."""

    head: Inner
    maybe: Decimal | None = None
    middle: int = 1
    items: tuple[Inner, ...] = ()
    last: Inner | None = None


PARTS = PayloadCodec(Parts, omit_none=True)


def test_omit_none_leaves_an_absent_part_out_and_keeps_the_key_order() -> None:
    head = Inner(date(2024, 1, 2), TINY)
    assert orjson.dumps(PARTS.encode(Parts(head))).decode() == (
        '{"head":{"on":"2024-01-02","amount":"1E-8"},"middle":1,"items":[]}'
    )
    full = Parts(head, ROUND, 2, (head,), head)
    assert list(PARTS.encode(full)) == ["head", "maybe", "middle", "items", "last"]
    assert PARTS.decode(PARTS.encode(full)) == full
    assert PARTS.decode(PARTS.encode(Parts(head))) == Parts(head)


@dataclass(frozen=True, slots=True)
class Bare:
    maybe: Decimal | None
    count: int


def test_omit_none_reads_an_absent_part_as_none_without_a_default() -> None:
    codec = PayloadCodec(Bare, omit_none=True)
    assert codec.encode(Bare(None, 1)) == {"count": 1}
    assert codec.decode({"count": 1}) == Bare(None, 1)
    assert codec.decode(codec.encode(Bare(TINY, 2))) == Bare(TINY, 2)


def test_a_part_is_read_without_the_rest() -> None:
    head = Inner(date(2024, 1, 2), TINY)
    payload = PARTS.encode(Parts(head, ROUND, items=(head, head, head)))
    assert PARTS.part("head")(payload) == head
    assert PARTS.part("maybe")(payload) == ROUND
    assert PARTS.part("last")(payload) is None
    assert PARTS.part("items")(payload) == [head, head, head]
    assert PARTS.part("items")(payload, 2) == [head, head]
    assert PARTS.part("items", lambda p: p["on"])(payload, 1) == ["2024-01-02"]
    with pytest.raises(TypeError, match="not a list"):
        PARTS.part("head", str)
