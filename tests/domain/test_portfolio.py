"""The portfolio dashboard's domain against hand-computed cases: average cost, value and 24 h
change, the update gate at its threshold, price alerts (crossings, first tick, once, re-arming,
restarts; exactly once as a property), trims and their no-repeat rule, conversions and their
refusals, and the event payloads."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.portfolio import (
    MAX_AMOUNT,
    AlertTrigger,
    AlertWatch,
    BenchmarkTriggered,
    ConversionCompleted,
    ConversionResult,
    Direction,
    Holding,
    Portfolio,
    PortfolioError,
    PortfolioUpdate,
    PortfolioUpdateGate,
    PriceAlert,
    PriceUpdate,
    TradeAction,
    TradeExecuted,
    TrimExecuted,
    TrimRule,
    ValueChange,
    convert,
    evaluate_trim,
    floor_to_lot,
    value_change,
)

D = Decimal
AT = datetime(2024, 1, 1, 12, 30, tzinfo=UTC)
UP, DOWN = Direction.UP, Direction.DOWN
BAD_NUMBERS = ["0", "-1", "NaN", "sNaN", "Infinity", "-Infinity", "1e15"]


def code_of(error: pytest.ExceptionInfo[PortfolioError]) -> str:
    return error.value.code


# --- average cost ---------------------------------------------------------------------------------


def test_buys_average_their_cost_by_hand() -> None:
    h = Holding("ETH").buy(D(2), D(100)).buy(D(1), D(130))
    assert (h.amount, h.average_cost, h.realized_pnl) == (D(3), D(110), D(0))


def test_a_sale_realizes_against_the_average_which_stays() -> None:
    h = Holding("ETH").buy(D(2), D(100)).buy(D(1), D(130))  # 3 at 110
    h = h.sell(D(1), D(150))
    assert (h.amount, h.average_cost, h.realized_pnl) == (D(2), D(110), D(40))
    h = h.sell(D("0.5"), D(100))  # 0.5 * (100 - 110) = -5
    assert (h.amount, h.average_cost, h.realized_pnl) == (D("1.5"), D(110), D(35))


def test_buying_after_a_sale_averages_the_rest_with_the_new() -> None:
    h = Holding("ETH", D(2), D(110), D(40)).buy(D(2), D(130))
    assert (h.amount, h.average_cost, h.realized_pnl) == (D(4), D(120), D(40))


def test_selling_everything_resets_the_average_and_keeps_the_pnl() -> None:
    h = Holding("ETH", D(2), D(110), D(40)).sell(D(2), D(90))  # 2 * (90 - 110) = -40
    assert (h.amount, h.average_cost, h.realized_pnl) == (D(0), D(0), D(0))
    assert h.buy(D(1), D(95)).average_cost == D(95)


def test_an_average_that_does_not_terminate_is_kept_to_10_places() -> None:
    h = Holding("ETH").buy(D(1), D(100)).buy(D(2), D(101))  # 302 / 3
    assert h.average_cost == D("100.6666666667")


def test_fees_go_to_realized_not_to_the_cost() -> None:
    h = Holding("ETH").buy(D(2), D(100), fee=D("0.2"))
    assert (h.average_cost, h.realized_pnl) == (D(100), D("-0.2"))
    h = h.sell(D(1), D(120), fee=D("0.12"))
    assert h.realized_pnl == D("19.68")  # -0.2 + 20 - 0.12


def test_unrealized_pnl_is_against_the_average() -> None:
    assert Holding("ETH", D(3), D(110)).unrealized_pnl(D(100)) == D(-30)


def test_selling_more_than_held_is_refused() -> None:
    h = Holding("ETH", D(2), D(110))
    with pytest.raises(PortfolioError) as error:
        h.sell(D("2.0001"), D(120))
    assert code_of(error) == "INSUFFICIENT_FUNDS"
    assert h == Holding("ETH", D(2), D(110))


@pytest.mark.parametrize("quantity", BAD_NUMBERS)
def test_trades_refuse_invalid_quantities(quantity: str) -> None:
    h = Holding("ETH", D(2), D(110))
    for trade in (h.buy, h.sell):
        with pytest.raises(PortfolioError) as error:
            trade(D(quantity), D(100))
        assert code_of(error) == "INVALID_AMOUNT"


@pytest.mark.parametrize("price", BAD_NUMBERS)
def test_trades_refuse_invalid_prices(price: str) -> None:
    h = Holding("ETH", D(2), D(110))
    for trade in (h.buy, h.sell):
        with pytest.raises(PortfolioError) as error:
            trade(D(1), D(price))
        assert code_of(error) == "INVALID_PRICE"


@pytest.mark.parametrize("fee", ["-0.01", "NaN", "1e15"])
def test_trades_refuse_invalid_fees(fee: str) -> None:
    with pytest.raises(PortfolioError) as error:
        Holding("ETH").buy(D(1), D(100), fee=D(fee))
    assert code_of(error) == "INVALID_AMOUNT"


def test_a_holding_must_stay_below_the_maximum() -> None:
    with pytest.raises(PortfolioError) as error:
        Holding("ETH", MAX_AMOUNT - 1, D(1)).buy(D(1), D(1))
    assert code_of(error) == "INVALID_AMOUNT"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"asset": " "}, "INVALID_SETTING"),
        ({"asset": "X" * 101}, "INVALID_SETTING"),
        ({"amount": D(-1)}, "INVALID_AMOUNT"),
        ({"average_cost": D("NaN")}, "INVALID_PRICE"),
        ({"realized_pnl": D("Infinity")}, "INVALID_AMOUNT"),
    ],
)
def test_a_holding_refuses_invalid_state(kwargs: dict[str, object], code: str) -> None:
    fields: dict[str, object] = {"asset": "ETH", **kwargs}
    with pytest.raises(PortfolioError) as error:
        Holding(**fields)  # type: ignore[arg-type]
    assert code_of(error) == code


# --- value and 24 h change ------------------------------------------------------------------------

PORTFOLIO = Portfolio(
    holdings=(Holding("BTC", D("0.5"), D(40000)), Holding("ETH", D(2), D(2500)), Holding("SOL")),
    cash=D(1000),
    perp_equity=D(500),
)


def test_value_is_holdings_at_prices_plus_cash_and_perp_equity() -> None:
    prices = {"BTC": D(60000), "ETH": D(3000)}  # no SOL price: none is held
    assert PORTFOLIO.value(prices) == D(37500)  # 30,000 + 6,000 + 1,000 + 500


def test_value_needs_a_price_for_every_asset_held() -> None:
    for prices in ({"BTC": D(60000)}, {"BTC": D(60000), "ETH": D(0)}):
        with pytest.raises(PortfolioError) as error:
            PORTFOLIO.value(prices)
        assert code_of(error) == "PRICE_UNAVAILABLE"


def test_an_empty_portfolio_is_worth_its_cash() -> None:
    assert Portfolio(cash=D(250)).value({}) == D(250)


def test_holdings_are_looked_up_and_replaced_by_asset() -> None:
    assert PORTFOLIO.holding("ETH") == Holding("ETH", D(2), D(2500))
    assert PORTFOLIO.holding("DOGE") == Holding("DOGE")
    changed = PORTFOLIO.with_holding(Holding("ETH", D(1), D(2500)))
    assert changed.holding("ETH").amount == D(1)
    assert len(changed.holdings) == 3
    assert len(PORTFOLIO.with_holding(Holding("DOGE", D(10), D("0.1"))).holdings) == 4


def test_a_portfolio_holds_each_asset_once() -> None:
    with pytest.raises(ValueError, match="once"):
        Portfolio(holdings=(Holding("ETH"), Holding("ETH")))


@pytest.mark.parametrize("field", ["cash", "perp_equity"])
@pytest.mark.parametrize("value", ["NaN", "1e15", "-1e15"])
def test_a_portfolio_refuses_invalid_cash_and_equity(field: str, value: str) -> None:
    with pytest.raises(PortfolioError) as error:
        Portfolio(**{field: D(value)})  # type: ignore[arg-type]
    assert code_of(error) == "INVALID_AMOUNT"


@pytest.mark.parametrize(
    ("now", "ago", "expected"),
    [
        ("37500", "30000", ("7500", "25")),
        ("90", "100", ("-10", "-10")),
        ("100", "100", ("0", "0")),
        ("100", "0", ("100", None)),
        ("0", "0", ("0", None)),
        ("-50", "-100", ("50", "50")),  # a rise is positive even from a negative value
    ],
)
def test_value_change_by_hand(now: str, ago: str, expected: tuple[str, str | None]) -> None:
    absolute, percent = expected
    change = value_change(D(now), D(ago))
    assert change == ValueChange(D(absolute), None if percent is None else D(percent))


def test_a_percent_change_is_not_rounded() -> None:
    assert value_change(D(100), D(3)).percent == D(9700) / D(3)


# --- the portfolio update gate --------------------------------------------------------------------


def test_the_gate_publishes_the_first_value() -> None:
    assert PortfolioUpdateGate(D(1)).offer(D(100))


def test_the_gate_publishes_at_the_threshold_and_not_below() -> None:
    gate = PortfolioUpdateGate(D(1))
    assert gate.offer(D(100))
    assert not gate.offer(D("100.99"))  # 0.99%
    assert not gate.offer(D("99.01"))  # -0.99%
    assert gate.offer(D(101))  # exactly 1%
    assert gate.last_published == D(101)
    assert not gate.offer(D("99.9901"))  # -0.9999%
    assert gate.offer(D("99.99"))  # exactly -1% of 101
    assert gate.offer(D(200))


def test_the_gate_measures_from_the_last_published_value_so_a_drift_is_published() -> None:
    gate = PortfolioUpdateGate(D(1))
    assert [gate.offer(D(v)) for v in ["100", "100.4", "100.8", "101", "101.5"]] == [
        True,
        False,
        False,
        True,
        False,
    ]


def test_the_gate_does_not_publish_every_tick() -> None:
    gate = PortfolioUpdateGate(D("0.5"))
    ticks = [D(10000) + D(i % 7) for i in range(1000)]  # moves of at most 0.06%
    assert sum(gate.offer(t) for t in ticks) == 1


def test_the_gate_from_a_published_zero_publishes_any_other_value() -> None:
    gate = PortfolioUpdateGate(D(5), last_published=D(0))
    assert not gate.offer(D(0))
    assert gate.offer(D("0.01"))


def test_a_threshold_of_zero_publishes_every_value() -> None:
    gate = PortfolioUpdateGate(D(0))
    assert all(gate.offer(D(v)) for v in ["100", "100", "0", "0", "5"])


def test_the_gate_is_restored_from_the_last_published_value() -> None:
    gate = PortfolioUpdateGate(D(2), last_published=D(1000))
    assert not gate.should_publish(D(1019))
    assert gate.should_publish(D(980))
    assert gate.last_published == D(1000)  # should_publish records nothing


@pytest.mark.parametrize("threshold", ["-1", "NaN", "1e15"])
def test_the_gate_refuses_an_invalid_threshold(threshold: str) -> None:
    with pytest.raises(PortfolioError) as error:
        PortfolioUpdateGate(D(threshold))
    assert code_of(error) == "INVALID_SETTING"


# --- price alerts ---------------------------------------------------------------------------------


def alert(
    direction: Direction = UP,
    target: str = "100",
    *,
    id: str = "a1",
    asset: str = "ETH",
    once: bool = True,
) -> PriceAlert:
    return PriceAlert(id, asset, D(target), direction, "SELL", once=once)


def fired(watch: AlertWatch, asset: str, prices: list[str]) -> list[list[str]]:
    """The ids each price fires."""
    return [[t.alert.id for t in watch.observe(asset, D(p))] for p in prices]


def fires(a: PriceAlert, prices: list[str]) -> list[bool]:
    """Whether each price fires ``a``, watched from the first price on."""
    return [bool(ids) for ids in fired(AlertWatch([a]), a.asset, prices)]


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        (["99", "100"], [False, True]),  # reaching the level counts
        (["99", "101"], [False, True]),
        (["90", "150"], [False, True]),  # a jump past it counts
        (["99", "99.99"], [False, False]),
        (["100", "101"], [False, False]),  # already at the level: no crossing
        (["101", "99"], [False, False]),  # the other way
    ],
)
def test_crosses_up(prices: list[str], expected: list[bool]) -> None:
    assert fires(alert(UP, once=False), prices) == expected


@pytest.mark.parametrize(
    ("prices", "expected"),
    [
        (["101", "100"], [False, True]),
        (["101", "99"], [False, True]),
        (["150", "90"], [False, True]),
        (["101", "100.01"], [False, False]),
        (["100", "99"], [False, False]),
        (["99", "101"], [False, False]),
    ],
)
def test_crosses_down(prices: list[str], expected: list[bool]) -> None:
    assert fires(alert(DOWN, once=False), prices) == expected


def test_the_first_tick_never_fires_even_past_the_level() -> None:
    assert fires(alert(UP), ["150"]) == [False]
    assert fires(alert(DOWN), ["50"]) == [False]


def test_the_first_tick_after_arming_never_fires_though_the_asset_was_seen() -> None:
    watch = AlertWatch()
    watch.observe("ETH", D(90))
    watch.add(alert(UP))
    assert fired(watch, "ETH", ["110", "90", "100"]) == [[], [], ["a1"]]


def test_a_once_alert_fires_once_and_is_disarmed() -> None:
    watch = AlertWatch([alert(UP)])
    assert fired(watch, "ETH", ["90", "110", "90", "110", "90", "110"]) == [
        [],
        ["a1"],
        [],
        [],
        [],
        [],
    ]
    assert watch.get("a1") == replace(alert(UP), armed=False)


def test_a_trigger_carries_the_alert_after_firing_and_both_prices() -> None:
    watch = AlertWatch([alert(UP)])
    watch.observe("ETH", D(95))
    (trigger,) = watch.observe("ETH", D(105))
    assert trigger == AlertTrigger(replace(alert(UP), armed=False), D(95), D(105))


def test_a_repeating_alert_rearms_when_the_price_goes_back_across() -> None:
    a = alert(UP, once=False)
    # 100 -> 100 is no crossing; 101 -> 100 touches the level without going below: no re-arm;
    # 100 -> 99.99 goes back below, so 99.99 -> 100 fires again.
    prices = ["99", "100", "100", "101", "100", "101", "99.99", "100", "150"]
    assert fires(a, prices) == [False, True, False, False, False, False, False, True, False]


def test_a_repeating_alert_stays_armed() -> None:
    watch = AlertWatch([alert(DOWN, once=False)])
    assert fired(watch, "ETH", ["101", "99", "101", "99"]) == [[], ["a1"], [], ["a1"]]
    assert watch.alerts == (alert(DOWN, once=False),)


def test_a_disarmed_alert_never_fires_until_added_again_armed() -> None:
    watch = AlertWatch([replace(alert(UP), armed=False)])
    assert fired(watch, "ETH", ["90", "110"]) == [[], []]
    watch.add(alert(UP))
    assert fired(watch, "ETH", ["90", "110"]) == [[], ["a1"]]


def test_alerts_watch_their_own_asset_and_fire_in_the_order_added() -> None:
    watch = AlertWatch(
        [alert(UP, "100", id="e1"), alert(UP, "95", id="e2"), alert(UP, "100", id="b", asset="BTC")]
    )
    assert fired(watch, "ETH", ["90", "120"]) == [[], ["e1", "e2"]]
    assert fired(watch, "BTC", ["120"]) == [[]]  # BTC's first tick
    assert fired(watch, "BTC", ["90", "100"]) == [[], ["b"]]


def test_removing_and_replacing_alerts() -> None:
    watch = AlertWatch([alert(UP, id="a1"), alert(UP, id="a2")])
    assert watch.remove("a1") == alert(UP, id="a1")
    assert watch.remove("a1") is None
    watch.add(alert(DOWN, "100", id="a2", asset="BTC"))  # same id: replaced, moved to BTC
    assert watch.alerts == (alert(DOWN, "100", id="a2", asset="BTC"),)
    assert fired(watch, "ETH", ["90", "110"]) == [[], []]
    assert fired(watch, "BTC", ["110", "90"]) == [[], ["a2"]]


def test_a_restart_with_the_stored_price_does_not_fire_twice() -> None:
    for a in (alert(UP), alert(UP, once=False)):
        before = AlertWatch([a])
        assert fired(before, "ETH", ["90", "105"]) == [[], ["a1"]]
        after = AlertWatch(before.alerts, before.last_prices)
        assert fired(after, "ETH", ["106", "105"]) == [[], []]


def test_a_restart_with_the_stored_price_sees_a_crossing_while_down() -> None:
    before = AlertWatch([alert(UP)])
    before.observe("ETH", D(90))
    after = AlertWatch(before.alerts, before.last_prices)
    assert fired(after, "ETH", ["110"]) == [["a1"]]


def test_a_restart_without_a_stored_price_fires_nothing_on_its_first_tick() -> None:
    before = AlertWatch([alert(UP)])
    before.observe("ETH", D(90))
    after = AlertWatch(before.alerts)
    assert fired(after, "ETH", ["110", "90", "100"]) == [[], [], ["a1"]]


def test_last_prices_is_a_copy() -> None:
    watch = AlertWatch(last_prices={"ETH": D(1)})
    watch.last_prices["ETH"] = D(2)
    assert watch.last_prices == {"ETH": D(1)}


@pytest.mark.parametrize("price", BAD_NUMBERS)
def test_a_watch_refuses_invalid_prices(price: str) -> None:
    with pytest.raises(PortfolioError) as error:
        AlertWatch().observe("ETH", D(price))
    assert code_of(error) == "INVALID_PRICE"
    with pytest.raises(PortfolioError) as error:
        AlertWatch(last_prices={"ETH": D(price)})
    assert code_of(error) == "INVALID_PRICE"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"id": ""}, "INVALID_SETTING"),
        ({"asset": "  "}, "INVALID_SETTING"),
        ({"action": ""}, "INVALID_SETTING"),
        ({"action": "x" * 101}, "INVALID_SETTING"),
        ({"target_price": D(0)}, "INVALID_PRICE"),
        ({"target_price": D("NaN")}, "INVALID_PRICE"),
    ],
)
def test_an_alert_refuses_invalid_settings(kwargs: dict[str, object], code: str) -> None:
    fields: dict[str, object] = {
        "id": "a1",
        "asset": "ETH",
        "target_price": D(100),
        "direction": UP,
        **kwargs,
    }
    with pytest.raises(PortfolioError) as error:
        PriceAlert(**fields)  # type: ignore[arg-type]
    assert code_of(error) == code


def crossings(a: PriceAlert, prices: list[Decimal]) -> list[int]:
    """The ticks at which DOMAIN.md's rule sees ``a``'s level crossed, written out again."""
    level, ticks = a.target_price, list(pairwise(prices))
    if a.direction is UP:
        return [i for i, (p, c) in enumerate(ticks, start=1) if p < level <= c]
    return [i for i, (p, c) in enumerate(ticks, start=1) if p > level >= c]


def firings(a: PriceAlert, prices: list[Decimal]) -> list[int]:
    watch = AlertWatch([a])
    return [i for i, p in enumerate(prices) if watch.observe(a.asset, p)]


PRICES = st.lists(st.integers(96, 104).map(Decimal), max_size=60)


@settings(database=None, derandomize=True, max_examples=200)
@given(prices=PRICES, direction=st.sampled_from(Direction))
def test_a_once_alert_fires_at_most_once_and_iff_a_tick_crosses(
    prices: list[Decimal], direction: Direction
) -> None:
    a = alert(direction, "100")
    expected = crossings(a, prices)
    assert firings(a, prices) == expected[:1]


@settings(database=None, derandomize=True, max_examples=200)
@given(prices=PRICES, direction=st.sampled_from(Direction))
def test_a_repeating_alert_fires_on_every_crossing(
    prices: list[Decimal], direction: Direction
) -> None:
    a = alert(direction, "100", once=False)
    assert firings(a, prices) == crossings(a, prices)


def test_a_price_alert_triggers_exactly_once_over_a_long_random_walk() -> None:
    rng = random.Random(7)
    price, prices = D(100), []
    for _ in range(20_000):  # steps of up to 1.00, kept between 90 and 110
        price = min(max(price + D(rng.randint(-100, 100)) / 100, D(90)), D(110))
        prices.append(price)
    for direction in Direction:
        a = alert(direction, "100")
        assert len(crossings(alert(direction, "100", once=False), prices)) > 10
        assert len(firings(a, prices)) == 1


# --- trims ----------------------------------------------------------------------------------------

RULE = TrimRule("ETH", gain_percent=D(5), sell_percent=D(25), lot_size=D("0.01"))
ETH = Holding("ETH", D(4), D(2000))


def test_a_trim_by_hand() -> None:
    decision = evaluate_trim(ETH, D(2150), RULE)
    assert decision is not None
    assert (decision.amount_sold, decision.price, decision.profit_realized) == (
        D(1),
        D(2150),
        D(150),
    )
    assert decision.gain_percent == D("7.5")
    assert decision.reasoning == (
        "price 2,150.00 is 7.50% above the average cost 2,000.00 (rule: take 25% at +5%)"
    )
    assert decision.holding == Holding("ETH", D(3), D(2000), D(150))
    assert decision.rule == TrimRule("ETH", D(5), D(25), D("0.01"), last_trim_price=D(2150))


def test_a_trim_fires_at_the_gain_and_not_below() -> None:
    assert evaluate_trim(ETH, D("2099.99"), RULE) is None
    decision = evaluate_trim(ETH, D(2100), RULE)  # exactly +5%
    assert decision is not None
    assert decision.profit_realized == D(100)


def test_a_trim_sells_whole_lots_only() -> None:
    decision = evaluate_trim(Holding("ETH", D("1.234"), D(2000)), D(2150), RULE)
    assert decision is not None
    assert decision.amount_sold == D("0.30")  # 25% is 0.3085
    assert decision.holding.amount == D("0.934")
    assert decision.profit_realized == D(45)


def test_a_trim_too_small_for_a_lot_does_nothing() -> None:
    assert evaluate_trim(Holding("ETH", D("0.03"), D(2000)), D(2150), RULE) is None  # 0.0075


def test_a_trim_of_100_percent_sells_every_whole_lot() -> None:
    rule = TrimRule("ETH", D(5), D(100), D("0.01"))
    decision = evaluate_trim(Holding("ETH", D("1.005"), D(2000)), D(2100), rule)
    assert decision is not None
    assert (decision.amount_sold, decision.holding.amount) == (D("1.00"), D("0.005"))


def test_an_empty_holding_or_one_without_cost_never_trims() -> None:
    assert evaluate_trim(Holding("ETH"), D(2150), RULE) is None
    assert evaluate_trim(Holding("ETH", D(4), D(0)), D(2150), RULE) is None


def test_a_rule_does_not_fire_again_until_another_gain_past_its_last_trim() -> None:
    first = evaluate_trim(ETH, D(2150), RULE)
    assert first is not None
    holding, rule = first.holding, first.rule
    # Every tick after the trim, a dip and a recovery, all below 2,150 * 1.05 = 2,257.50:
    for price in ["2150", "2160", "2257.49", "1900", "2100", "2150"]:
        assert evaluate_trim(holding, D(price), rule) is None
    second = evaluate_trim(holding, D("2257.5"), rule)
    assert second is not None
    assert (second.amount_sold, second.profit_realized) == (D("0.75"), D("193.125"))
    assert second.holding == Holding("ETH", D("2.25"), D(2000), D("343.125"))
    assert second.rule.last_trim_price == D("2257.5")
    assert second.reasoning == (
        "price 2,257.50 is 12.88% above the average cost 2,000.00 and 5.00% above the last trim"
        " at 2,150.00 (rule: take 25% at +5%)"
    )


def test_after_buying_higher_the_average_governs_the_next_trim() -> None:
    rule = TrimRule("ETH", D(5), D(25), D("0.01"), last_trim_price=D(2100))
    holding = Holding("ETH", D(4), D(2400))  # bought more above the last trim
    assert evaluate_trim(holding, D(2205), rule) is None  # +5% over the last trim, not the cost
    assert evaluate_trim(holding, D(2520), rule) is not None


def test_a_rule_cannot_trim_another_asset() -> None:
    with pytest.raises(ValueError, match="BTC"):
        evaluate_trim(Holding("BTC", D(1), D(1)), D(2), RULE)


def test_a_trim_reasoning_shows_small_prices_in_full() -> None:
    rule = TrimRule("PEPE", D(10), D(50), D(1))
    decision = evaluate_trim(Holding("PEPE", D(1000), D("0.00001")), D("0.000012"), rule)
    assert decision is not None
    assert decision.reasoning == (
        "price 0.000012 is 20.00% above the average cost 0.00001 (rule: take 50% at +10%)"
    )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"gain_percent": D(0)}, "INVALID_SETTING"),
        ({"gain_percent": D("NaN")}, "INVALID_SETTING"),
        ({"sell_percent": D(0)}, "INVALID_SETTING"),
        ({"sell_percent": D("100.01")}, "INVALID_SETTING"),
        ({"lot_size": D(0)}, "INVALID_SETTING"),
        ({"asset": ""}, "INVALID_SETTING"),
        ({"last_trim_price": D(-1)}, "INVALID_PRICE"),
    ],
)
def test_a_trim_rule_refuses_invalid_settings(kwargs: dict[str, object], code: str) -> None:
    fields: dict[str, object] = {
        "asset": "ETH",
        "gain_percent": D(5),
        "sell_percent": D(25),
        "lot_size": D("0.01"),
        **kwargs,
    }
    with pytest.raises(PortfolioError) as error:
        TrimRule(**fields)  # type: ignore[arg-type]
    assert code_of(error) == code


@pytest.mark.parametrize(
    ("amount", "lot", "expected"),
    [("0.3085", "0.01", "0.30"), ("7", "2", "6"), ("0.0075", "0.01", "0"), ("1.5", "0.5", "1.5")],
)
def test_floor_to_lot(amount: str, lot: str, expected: str) -> None:
    assert floor_to_lot(D(amount), D(lot)) == D(expected)


# --- conversions ----------------------------------------------------------------------------------

ETH_2 = Holding("ETH", D(2), D(2500))


def eth_to(
    target: Holding,
    amount: str = "1",
    from_price: str | None = "3000",
    to_price: str | None = "60000",
    fee_rate: str = "0.001",
    places: int = 8,
) -> ConversionResult:
    return convert(
        ETH_2,
        target,
        D(amount),
        None if from_price is None else D(from_price),
        None if to_price is None else D(to_price),
        D(fee_rate),
        places,
    )


def test_a_conversion_by_hand() -> None:
    result = eth_to(Holding("BTC"))  # 1 * 3000 / 60000 * 0.999 = 0.04995
    assert (result.from_asset, result.to_asset) == ("ETH", "BTC")
    assert (result.from_amount, result.to_amount, result.fee) == (D(1), D("0.04995"), D(3))
    assert result.from_holding == Holding("ETH", D(1), D(2500), D(497))  # 500 - 3 fee
    assert result.to_holding == Holding("BTC", D("0.04995"), D(60000))


def test_a_conversion_adds_to_an_existing_holding_at_its_price() -> None:
    result = eth_to(Holding("BTC", D("0.05"), D(40000)), fee_rate="0")  # receives 0.05
    assert result.to_holding == Holding("BTC", D("0.1"), D(50000))


def test_a_conversion_rounds_down_to_the_places_and_charges_the_rest() -> None:
    result = eth_to(Holding("X"), to_price="7", fee_rate="0")  # 3000 / 7 = 428.571428571...
    assert result.to_amount == D("428.57142857")
    assert result.fee == D("0.00000001")
    coarse = eth_to(Holding("X"), to_price="7", fee_rate="0", places=0)
    assert (coarse.to_amount, coarse.fee) == (D(428), D(4))


def test_a_conversion_rounds_down_exactly() -> None:
    # 1 * 1 / 3 * (1 - 0.0000000000000000000000000003) sits just below 0.33333333 only beyond
    # 28 digits; the exact floor is still 0.33333333, never one unit above it.
    result = convert(Holding("A", D(1)), Holding("B"), D(1), D(1), D(3), D("3e-28"))
    assert result.to_amount == D("0.33333333")
    near_one = convert(Holding("A", D(1)), Holding("B"), D(1), D(3), D(3), D("1e-30"))
    assert near_one.to_amount == D("0.99999999")


def test_converting_all_of_a_holding_empties_it() -> None:
    result = eth_to(Holding("BTC"), amount="2")
    assert (result.from_holding.amount, result.from_holding.average_cost) == (D(0), D(0))


def test_a_conversion_refuses_the_same_asset() -> None:
    with pytest.raises(PortfolioError) as error:
        eth_to(Holding("ETH"))
    assert code_of(error) == "SAME_ASSET"


@pytest.mark.parametrize("amount", BAD_NUMBERS)
def test_a_conversion_refuses_an_invalid_amount(amount: str) -> None:
    with pytest.raises(PortfolioError) as error:
        eth_to(Holding("BTC"), amount=amount)
    assert code_of(error) == "INVALID_AMOUNT"


def test_a_conversion_refuses_more_than_held() -> None:
    with pytest.raises(PortfolioError) as error:
        eth_to(Holding("BTC"), amount="2.00000001")
    assert code_of(error) == "INSUFFICIENT_FUNDS"


@pytest.mark.parametrize("side", ["from_price", "to_price"])
@pytest.mark.parametrize("price", [None, "0", "-1", "NaN", "1e15"])
def test_a_conversion_refuses_a_missing_price(side: str, price: str | None) -> None:
    with pytest.raises(PortfolioError) as error:
        eth_to(Holding("BTC"), **{side: price})  # type: ignore[arg-type]
    assert code_of(error) == "PRICE_UNAVAILABLE"


def test_a_conversion_refuses_to_receive_nothing() -> None:
    with pytest.raises(PortfolioError) as error:
        eth_to(Holding("BTC"), amount="0.0000001", places=2)
    assert code_of(error) == "INVALID_AMOUNT"


@pytest.mark.parametrize(("fee_rate", "places"), [("1", 8), ("-0.1", 8), ("NaN", 8), ("0", 19)])
def test_a_conversion_refuses_invalid_settings(fee_rate: str, places: int) -> None:
    with pytest.raises(PortfolioError) as error:
        eth_to(Holding("BTC"), fee_rate=fee_rate, places=places)
    assert code_of(error) == "INVALID_SETTING"


# --- events ---------------------------------------------------------------------------------------

TIME = "2024-01-01T12:30:00+00:00"


def test_price_update_payload() -> None:
    event = PriceUpdate.of("ETH", "ethereum", D(3300), D(3000), AT)
    assert event.event_type == "PriceUpdate"
    assert event.to_payload() == {
        "asset": "ETH",
        "blockchain": "ethereum",
        "price": "3300",
        "change24h": "10",
        "timestamp": TIME,
    }
    assert PriceUpdate.of("ETH", "ethereum", D(3300), None, AT).to_payload()["change24h"] is None


def test_trade_executed_payload() -> None:
    event = TradeExecuted("t1", "BTC", TradeAction.BUY, D("0.5"), D(60000), AT)
    assert event.to_payload() == {
        "tradeId": "t1",
        "asset": "BTC",
        "action": "BUY",
        "amount": "0.5",
        "price": "60000",
        "timestamp": TIME,
    }


def test_trim_executed_payload() -> None:
    decision = evaluate_trim(ETH, D(2150), RULE)
    assert decision is not None
    assert TrimExecuted.of("trim-1", decision, AT).to_payload() == {
        "trimId": "trim-1",
        "asset": "ETH",
        "amountSold": "1.00",
        "price": "2150",
        "profitRealized": "150.00",
        "reasoning": decision.reasoning,
        "timestamp": TIME,
    }


def test_benchmark_triggered_payload() -> None:
    trigger = AlertTrigger(replace(alert(UP), armed=False), D(95), D(105))
    assert BenchmarkTriggered.of(trigger, AT).to_payload() == {
        "benchmarkId": "a1",
        "asset": "ETH",
        "targetPrice": "100",
        "currentPrice": "105",
        "action": "SELL",
        "direction": "up",
        "timestamp": TIME,
    }


def test_portfolio_update_payload() -> None:
    assert PortfolioUpdate.of(D(37500), D(30000), AT).to_payload() == {
        "totalValueUsd": "37500",
        "change24h": "25",
        "change24hUsd": "7500",
        "timestamp": TIME,
    }
    assert PortfolioUpdate.of(D(100), D(0), AT).to_payload()["change24h"] is None
    unknown = PortfolioUpdate.of(D(100), None, AT).to_payload()
    assert (unknown["change24h"], unknown["change24hUsd"]) == (None, None)


def test_conversion_completed_payload() -> None:
    event = ConversionCompleted.of("c1", eth_to(Holding("BTC")), AT)
    assert event.to_payload() == {
        "conversionId": "c1",
        "fromAsset": "ETH",
        "toAsset": "BTC",
        "fromAmount": "1",
        "toAmount": "0.04995000",
        "feeUsd": "3.00000000",
        "timestamp": TIME,
    }


def test_payloads_are_json_and_never_in_exponent_notation() -> None:
    payload = PortfolioUpdate.of(D("1E+3"), D("1E-7"), AT).to_payload()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["totalValueUsd"] == "1000"
    assert payload["change24hUsd"] == "999.9999999"
    assert "E" not in payload["change24h"]
