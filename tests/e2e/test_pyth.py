"""Oracle prices from Pyth Hermes end to end: a real server whose PRICE_SOURCES points markets
at a local Hermes stand-in (tests/standins/hermes.py) replaying the documented messages, real
graphql-transport-ws subscribers, real PostgreSQL.

No machine here reaches Pyth: this is the wire format as documented and recorded, not the live
service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.support import OPEN, call, error_code
from tests.standins.hermes import BTC, HermesStandIn, serving, update
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, sample, scrape, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

UNKNOWN = "ab" * 32
"""A well-formed feed id the stand-in does not know."""

QUIET = {
    "SIMULATED_FEEDS": "false",  # the stand-in is the only oracle
    "PERPS_ENGINE_INTERVAL_S": "0.2",
    "LOG_LEVEL": "info",
}


@pytest.fixture
async def hermes() -> AsyncIterator[HermesStandIn]:
    async with serving(HermesStandIn(keepalive_s=0.5)) as standin:
        yield standin


@contextlib.asynccontextmanager
async def pyth_server(
    hermes: HermesStandIn, database_url: str, log: Path, sources: dict[str, str], **env: str
) -> AsyncIterator[ServerProcess]:
    """A server on ``database_url`` pricing ``sources`` from the stand-in; started and stopped in
    a thread, so that the stand-in (on this loop) answers it meanwhile."""
    process = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "PRICE_SOURCES": json.dumps(sources),
            "PYTH_HERMES_URL": hermes.url,
            **QUIET,
            **env,
        },
        log,
    )
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


def btc(price: str, conf: str, publish_time: int) -> dict[str, Any]:
    return update("btc", prices={BTC: (price, conf, publish_time)})


def at(publish_time: int) -> str:
    return datetime.fromtimestamp(publish_time, UTC).isoformat()


async def wait_for(check: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.05)


async def test_a_subscriber_gets_the_replayed_prices_exactly(
    hermes: HermesStandIn, isolated_database_url: str, tmp_path: Path
) -> None:
    sources = {"BTC-PERP": f"pyth:0x{BTC.upper()}", "ETH-PERP": "simulated"}
    now = int(time.time())
    async with (
        pyth_server(hermes, isolated_database_url, tmp_path / "server.log", sources) as server,
        GraphQLWS.connect(server.ws_url) as client,
    ):
        await client.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        hermes.send(update("btc_eth"))  # as documented: BTC and ETH feeds in one event
        first = await client.next_data("btc", "priceUpdates")
        assert first == {
            "market": "BTC-PERP",
            "price": "29206.79499999",
            "confidence": "5.09500001",
            "publishedAt": "2024-06-06T00:00:00+00:00",
            "sequence": 1,
        }
        received = [first]
        for i, (price, conf) in enumerate([("2920712345678", "509400000"), ("2921000000000", "0")]):
            hermes.send(btc(price, conf, now + i))
            received.append(await client.next_data("btc", "priceUpdates"))
        assert received[1:] == [
            {
                "market": "BTC-PERP",
                "price": "29207.12345678",
                "confidence": "5.09400000",
                "publishedAt": at(now),
                "sequence": 2,
            },
            {
                "market": "BTC-PERP",
                "price": "29210.00000000",
                "confidence": "0.00000000",
                "publishedAt": at(now + 1),
                "sequence": 3,
            },
        ]
        # ETH-PERP is simulated (and SIMULATED_FEEDS is off): the ETH feed's entry, which the
        # server did not ask for, was neither requested nor published.
        body = await call(server, '{ price(market: "ETH-PERP") { price } }')
        assert body == {"data": {"price": None}}
        samples = scrape(server)
        assert sample(samples, "tradestream_source_prices_total", source="pyth") == 3
        assert sample(samples, "tradestream_source_reconnects_total", source="pyth") == 0
    assert hermes.requests == [{"ids[]": [BTC], "parsed": ["true"]}]


async def test_a_dropped_connection_is_made_again_and_nothing_after_it_is_lost(
    hermes: HermesStandIn, isolated_database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    now = int(time.time())
    async with (
        pyth_server(hermes, isolated_database_url, log, {"BTC-PERP": f"pyth:{BTC}"}) as server,
        GraphQLWS.connect(server.ws_url) as client,
    ):
        await client.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        received = []
        for i in range(5):
            if i in (2, 3):
                hermes.drop()  # two outages, a price received between them
            hermes.send(btc(str(2920000000000 + i), "500000000", now + i))
            received.append(await client.next_data("btc", "priceUpdates"))
        samples = scrape(server)
    assert [p["sequence"] for p in received] == [1, 2, 3, 4, 5]
    assert [p["price"] for p in received] == [f"29200.0000000{i}" for i in range(5)]
    assert len(hermes.requests) == 3
    assert sample(samples, "tradestream_source_reconnects_total", source="pyth") == 2
    text = log.read_text()
    assert text.count("price source pyth: connection lost (RemoteProtocolError") == 2, text
    assert text.count("price source pyth: receiving prices again") == 2, text


async def test_a_malformed_event_is_skipped_and_logged_and_the_stream_goes_on(
    hermes: HermesStandIn, isolated_database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    now = int(time.time())
    async with (
        pyth_server(hermes, isolated_database_url, log, {"BTC-PERP": f"pyth:{BTC}"}) as server,
        GraphQLWS.connect(server.ws_url) as client,
    ):
        await client.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        hermes.send(btc("2920000000000", "1", now))
        first = await client.next_data("btc", "priceUpdates")
        hermes.send_raw('{"binary": {"encoding": "hex", "data": ["504e41"]}, "parsed": [{"id"')
        hermes.send(btc("not a number", "1", now + 1))
        hermes.send(btc("-2920000000000", "1", now + 2))
        hermes.send_error("Error receiving update: Lagged(3)")
        hermes.send(btc("2920100000000", "1", now + 3))
        second = await client.next_data("btc", "priceUpdates")
        samples = scrape(server)
    assert (first["price"], second["price"]) == ("29200.00000000", "29201.00000000")
    assert second["sequence"] == first["sequence"] + 1
    assert len(hermes.requests) == 1  # the same stream went on
    assert sample(samples, "tradestream_source_malformed_messages_total", source="pyth") == 3
    assert sample(samples, "tradestream_source_reconnects_total", source="pyth") == 0
    text = log.read_text()
    assert "skipped a malformed Hermes price update: not JSON" in text
    assert (
        "skipped a malformed Hermes price update: parsed[0]: 'price' is missing or not an integer"
        in text
    )
    assert "skipped a malformed Hermes price update: parsed[0]: price -29200" in text
    assert "Hermes sent an error event: Error receiving update: Lagged(3)" in text


async def test_an_old_or_silent_pyth_price_is_stale_to_the_engine_and_desks(
    hermes: HermesStandIn, isolated_database_url: str, tmp_path: Path
) -> None:
    """A price is stored with its Hermes publish time: one older than PRICE_MAX_AGE_S when it
    arrives, or one that ages because the stream falls silent (keep-alives only), refuses trades
    as every stale price does; an update older than the newest is not published at all."""
    alice = token("alice")
    order = {"i": {"market": "BTC-PERP", "side": "LONG", "size": "0.001", "leverage": "2"}}
    now = int(time.time())
    async with (
        pyth_server(
            hermes,
            isolated_database_url,
            tmp_path / "server.log",
            {"BTC-PERP": f"pyth:{BTC}"},
            PRICE_MAX_AGE_S="3",
        ) as server,
        GraphQLWS.connect(server.ws_url) as client,
    ):
        await client.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        hermes.send(btc("2920000000000", "1", now - 60))
        assert (await client.next_data("btc", "priceUpdates"))["sequence"] == 1
        refused = await call(server, OPEN, order, alice)
        assert error_code(refused) == "PRICE_UNAVAILABLE"
        assert "oracle price is" in refused["errors"][0]["message"]

        now = int(time.time())
        hermes.send(btc("2920100000000", "1", now))
        assert (await client.next_data("btc", "priceUpdates"))["sequence"] == 2
        opened = await call(server, OPEN, order, alice)
        assert "errors" not in opened, opened

        hermes.send(btc("2900000000000", "1", now - 1))  # out of order: never published
        hermes.send(btc("2920200000000", "1", now + 1))
        newest = await client.next_data("btc", "priceUpdates")
        assert (newest["sequence"], newest["price"]) == (3, "29202.00000000")

        # Silence (the stand-in sends keep-alives only): the newest price ages past 3 s.
        deadline = time.monotonic() + 15
        while True:
            body = await call(server, OPEN, order, alice)
            if "errors" in body:
                break
            assert time.monotonic() < deadline, "the silent feed's price never went stale"
            await asyncio.sleep(0.5)
        assert error_code(body) == "PRICE_UNAVAILABLE"
        age = sample(
            scrape(server), "tradestream_source_price_age_seconds", market="BTC-PERP", source="pyth"
        )
        assert age > 3
        assert len(hermes.requests) == 1  # keep-alives kept the stream: it was silent, not lost


async def test_refusals_and_silence_are_retried_with_backoff_and_logged_once(
    isolated_database_url: str, tmp_path: Path
) -> None:
    """503 twice, then a stream that stays silent past PYTH_READ_TIMEOUT_S (no keep-alives):
    one outage, one warning, every attempt counted; then prices flow. The provider key in
    PYTH_HERMES_URL is in no log line."""
    log = tmp_path / "server.log"
    async with serving(HermesStandIn(keepalive_s=None, prefix="/key-s3cr3t")) as hermes:
        hermes.refuse_next(503, times=2)
        async with (
            pyth_server(
                hermes,
                isolated_database_url,
                log,
                {"BTC-PERP": f"pyth:{BTC}"},
                PYTH_READ_TIMEOUT_S="1",
            ) as server,
            GraphQLWS.connect(server.ws_url) as client,
        ):
            await client.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
            await wait_for(lambda: len(hermes.requests) >= 4, what="a silent stream given up")
            hermes.send(btc("2920000000000", "1", int(time.time())))
            price = await client.next_data("btc", "priceUpdates")
            samples = scrape(server)
    assert price["price"] == "29200.00000000"
    assert sample(samples, "tradestream_source_reconnects_total", source="pyth") >= 3
    text = log.read_text()
    assert text.count("price source pyth: connection lost") == 1, text
    assert "connection lost (HermesError: Hermes answered 503: 'Service Unavailable')" in text
    assert text.count("price source pyth: receiving prices again") == 1, text
    assert "s3cr3t" not in text


async def test_an_unknown_feed_id_is_refused_by_hermes_and_the_rest_goes_on(
    hermes: HermesStandIn, isolated_database_url: str, tmp_path: Path
) -> None:
    """Hermes answers 404 for an id it does not know: the Pyth source keeps trying (logged once),
    the market gets no price (and is not walked by the simulated feed), the simulated markets
    tick on."""
    log = tmp_path / "server.log"
    async with (
        pyth_server(
            hermes,
            isolated_database_url,
            log,
            {"SOL-PERP": f"pyth:0x{UNKNOWN}"},
            SIMULATED_FEEDS="true",
            PRICE_FEED_HZ="5",
        ) as server,
        GraphQLWS.connect(server.ws_url) as client,
    ):
        await client.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        first = await client.next_data("btc", "priceUpdates")
        second = await client.next_data("btc", "priceUpdates")
        assert second["sequence"] > first["sequence"]
        await wait_for(lambda: len(hermes.requests) >= 3, what="three attempts")
        body = await call(server, '{ price(market: "SOL-PERP") { price } }')
        assert body == {"data": {"price": None}}
        samples = scrape(server)
    assert sample(samples, "tradestream_source_reconnects_total", source="pyth") >= 2
    assert sample(samples, "tradestream_source_prices_total", source="pyth") == 0
    text = log.read_text()
    assert text.count("price source pyth: connection lost") == 1, text
    assert f"Hermes answered 404: 'Price ids not found: {UNKNOWN}'" in text


def test_a_market_the_server_does_not_have_stops_it_at_start(
    database_url: str, tmp_path: Path
) -> None:
    process = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "SIMULATED_FEEDS": "false",
            "PRICE_SOURCES": json.dumps({"DOGE-PERP": f"pyth:{BTC}"}),
            "PYTH_HERMES_URL": "http://127.0.0.1:9",
        },
        tmp_path / "server.log",
    )
    with pytest.raises(RuntimeError, match="server exited") as raised:
        process.start()
    assert (
        "SourceConfigError: PRICE_SOURCES names DOGE-PERP, not a market of this server "
        "(its markets: BTC-PERP, ETH-PERP, SOL-PERP)" in str(raised.value)
    )
