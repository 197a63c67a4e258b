"""``PRICE_SOURCES`` read into sources: one Pyth stream for every ``pyth:`` market, ``simulated``
left to the simulated feed, and each mistake refused with the market and what is wrong."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from api.settings import Settings
from api.sources.pyth import PythHermes
from api.sources.registry import SourceConfigError, build_sources
from api.sources.runner import backoff_delay
from tests.standins.hermes import BTC, ETH

if TYPE_CHECKING:
    from collections.abc import Mapping

    from domain.ports import PriceSource

MARKETS = ["BTC-PERP", "ETH-PERP", "SOL-PERP"]


def settings(**sources: str) -> Settings:
    return Settings(price_sources=sources, pyth_hermes_url="http://127.0.0.1:9/hermes/")


def test_every_pyth_market_is_served_by_one_stream() -> None:
    [source] = build_sources(
        settings(**{"BTC-PERP": f"pyth:0x{BTC.upper()}", "ETH-PERP": f"pyth:{ETH}"}), MARKETS
    )
    assert isinstance(source, PythHermes)
    assert source.name == "pyth"
    assert source.markets == {"BTC-PERP", "ETH-PERP"}
    assert source.feeds == {BTC: ("BTC-PERP",), ETH: ("ETH-PERP",)}
    assert source.base_url == "http://127.0.0.1:9/hermes"


def test_two_markets_may_follow_one_feed() -> None:
    [source] = build_sources(
        settings(**{"BTC-PERP": f"pyth:{BTC}", "SOL-PERP": f"pyth:0x{BTC}"}), MARKETS
    )
    assert isinstance(source, PythHermes)
    assert source.feeds == {BTC: ("BTC-PERP", "SOL-PERP")}


def test_simulated_and_unset_make_no_source() -> None:
    assert build_sources(settings(), MARKETS) == []
    assert build_sources(settings(**{"BTC-PERP": "simulated"}), MARKETS) == []


def test_a_kind_is_one_more_factory() -> None:
    made: list[Mapping[str, str]] = []

    def factory(routes: Mapping[str, str], _: Settings) -> list[PriceSource]:
        made.append(routes)
        return []

    build_sources(
        settings(**{"BTC-PERP": "ccxt:binance:BTC/USDT", "ETH-PERP": "ccxt:kraken:ETH/USD"}),
        MARKETS,
        kinds={"ccxt": factory},
    )
    assert made == [{"BTC-PERP": "binance:BTC/USDT", "ETH-PERP": "kraken:ETH/USD"}]


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            {"DOGE-PERP": f"pyth:{BTC}", "BTC-PERP": "simulated"},
            "PRICE_SOURCES names DOGE-PERP, not a market of this server "
            "(its markets: BTC-PERP, ETH-PERP, SOL-PERP)",
        ),
        (
            {"BTC-PERP": "chainlink:0xabc"},
            "PRICE_SOURCES: BTC-PERP: unknown source kind 'chainlink' "
            "(known: ccxt, pyth, simulated)",
        ),
        (
            {"BTC-PERP": "ccxt:binanceusdm"},
            "PRICE_SOURCES: BTC-PERP: 'ccxt' takes <exchange id>:<symbol>, not 'binanceusdm'",
        ),
        (
            {"BTC-PERP": "ccxt:nosuchvenue:BTC/USDT"},
            "PRICE_SOURCES: BTC-PERP: ccxt has no exchange 'nosuchvenue'",
        ),
        ({"BTC-PERP": "pyth"}, "PRICE_SOURCES: BTC-PERP: 'pyth' needs an argument"),
        (
            {"BTC-PERP": "pyth:0x1234"},
            "PRICE_SOURCES: BTC-PERP: '0x1234' is not a Pyth price feed id (64 hex digits, "
            "0x optional)",
        ),
        ({"ETH-PERP": "simulated:fast"}, "PRICE_SOURCES: ETH-PERP: 'simulated' takes no argument"),
    ],
)
def test_a_source_the_server_cannot_use_is_refused_naming_it(
    sources: dict[str, str], message: str
) -> None:
    with pytest.raises(SourceConfigError) as raised:
        build_sources(settings(**sources), MARKETS)
    assert str(raised.value) == message


def test_ccxt_markets_share_one_source_per_exchange() -> None:
    """One client and one watch per venue, whatever the number of its markets."""
    made = build_sources(
        settings(
            **{
                "BTC-PERP": "ccxt:binanceusdm:BTC/USDT:USDT",
                "ETH-PERP": "ccxt:binanceusdm:ETH/USDT:USDT",
                "SOL-PERP": "ccxt:bybit:SOL/USDT:USDT",
            }
        ),
        MARKETS,
    )
    assert sorted((source.name, sorted(source.markets)) for source in made) == [
        ("ccxt:binanceusdm", ["BTC-PERP", "ETH-PERP"]),
        ("ccxt:bybit", ["SOL-PERP"]),
    ]


def test_markets_are_checked_only_when_given() -> None:
    """The command checks kinds and arguments before the database (and its markets) is open."""
    assert len(build_sources(settings(**{"DOGE-PERP": f"pyth:{BTC}"}))) == 1


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    rng = random.Random(7)
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    for attempt, ceiling in enumerate(ceilings):
        delays = [backoff_delay(attempt, 30.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not in step
    assert backoff_delay(10_000, 30.0, rng) <= 30.0
