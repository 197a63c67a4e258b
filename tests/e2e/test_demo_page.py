"""The live demo page at ``/`` in a real headless Chromium against a real server with simulated
feeds (GraphiQL at ``/graphql``: test_graphiql.py).

Set ``UPDATE_DEMO_SCREENSHOT=1`` to also write a signed-in screenshot to docs/demo.png (after
30 s more of simulated trading)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser import Tab
from tests.conftest import isolated_server
from tests.support import TEST_JWT_SECRET, ServerProcess, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from playwright.async_api import Browser

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "demo.png"
WAIT_MS = 30_000
OTHER_ORIGIN = "http://localhost:3000"
"""The one cross-origin page the server lets in: the demo page must not need to be it."""

SETTINGS = {
    "PRICE_FEED_HZ": "4",
    "ALLOWED_ORIGINS": OTHER_ORIGIN,
    "LEADERBOARD_MAX_HZ": "4",
}


@pytest.fixture(scope="module")
def demo_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Alone on a fresh database (simulated feeds on: prices, the demo marathon, user demo's
    positions and wallet demo's strategies)."""
    with isolated_server(
        database_url, SETTINGS, tmp_path_factory.mktemp("demo") / "server.log"
    ) as process:
        yield process


class Demo(Tab):
    """One tab on the demo page, with what it logged and the frames its WebSocket sent."""

    async def text(self, selector: str) -> str:
        return await self.page.locator(selector).inner_text()

    async def rows(self, table: str, at_least: int = 1) -> int:
        locator = self.page.locator(f"#{table} tbody tr")
        await locator.nth(at_least - 1).wait_for(timeout=WAIT_MS)
        return await locator.count()

    async def connected(self) -> None:
        await self.page.locator('#connection[data-state="connected"]').wait_for(timeout=WAIT_MS)

    async def sign_in(self, value: str) -> None:
        await self.page.fill("#token", value)
        await self.page.click("#sign-in-button")

    def subscribes(self, operation: str, socket: int | None = None) -> list[dict[str, Any]]:
        """What the page sent to subscribe to ``operation`` (on socket number ``socket``)."""
        return [
            m["payload"]
            for m in self.sent
            if m.get("type") == "subscribe"
            and f" {operation}" in m["payload"]["query"]
            and socket in (None, m["socket"])
        ]


@pytest.fixture
async def demo(browser: Browser, demo_server: ServerProcess) -> AsyncIterator[Demo]:
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    tab = Demo(page)
    await page.goto(demo_server.base_url + "/")
    yield tab
    await context.close()


async def distinct_texts(demo: Demo, selector: str, count: int, timeout_s: float) -> list[str]:
    """The texts ``selector`` shows, each change recorded, until ``count`` distinct ones."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = await demo.text(selector)
        if text not in ("", "…") and (not seen or seen[-1] != text):
            seen.append(text)
            if len(seen) >= count:
                return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"{selector} showed only {seen} in {timeout_s}s")


async def test_prices_tick_the_leaderboard_fills_and_signing_in_shows_positions_and_strategies(
    demo: Demo, demo_server: ServerProcess, tmp_path: Path
) -> None:
    page = demo.page
    await demo.connected()
    assert await demo.text("#connection-text") == "live · anonymous"

    markets = [m["id"] for m in demo_server.graphql("{ markets { id } }")["data"]["markets"]]
    assert await demo.rows("prices", len(markets)) == len(markets)
    shown = await page.locator("#prices tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.market)"
    )
    assert shown == markets
    # The price cell changes its text at least twice: three different prices in a row.
    prices = await distinct_texts(demo, '#prices tr[data-market="BTC-PERP"] td.price', 3, 15)
    assert all(re.fullmatch(r"\d+(\.\d+)?", p) for p in prices), prices
    classes = await page.locator("#prices td.price").evaluate_all(
        "cells => cells.map(c => c.className)"
    )
    assert any(" up" in c or " down" in c for c in classes), classes

    # The demo marathon's top 10, ranked.
    assert await demo.rows("leaderboard", 10) == 10
    ranks = await page.locator("#leaderboard tbody td.rank").all_inner_texts()
    assert ranks == [str(n) for n in range(1, 11)]
    ranked = re.match(r"(\d+) accounts ranked · running", await demo.text("#leaderboard-meta"))
    assert ranked is not None
    assert 10 <= int(ranked.group(1)) <= 40  # the simulated accounts join as they trade

    signed = token("demo", ttl_s=3600)
    await demo.sign_in(signed)
    await page.locator("#signed-in").wait_for(timeout=WAIT_MS)
    assert await demo.text("#user") == "demo"
    assert await demo.rows("positions", len(markets)) == len(markets)
    assert await demo.rows("martingale", 3) == 3
    await page.locator('#connection-text:text("signed in as demo")').wait_for(timeout=WAIT_MS)
    sides = await page.locator("#positions tbody td.side").all_inner_texts()
    assert set(sides) <= {"LONG", "SHORT"}
    risks = await page.locator("#martingale tbody td.risk").all_inner_texts()
    assert set(risks) <= {"LOW", "MEDIUM", "HIGH"}
    # The sign-in went to the server in connection_init, on a second socket.
    inits = [m["payload"] for m in demo.sent if m["type"] == "connection_init"]
    assert inits == [{}, {"authorization": f"Bearer {signed}"}]

    await asyncio.sleep(1)  # let the flashes of the first rows fade for the picture
    screenshot = tmp_path / "demo.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DEMO_SCREENSHOT"):
        await asyncio.sleep(30)  # for the docs, a minute's worth of ticks and trades
        await page.screenshot(path=str(DOCS_SCREENSHOT))
    assert demo.problems == []


async def test_a_restarted_server_is_reconnected_and_positions_resume_after_the_last_cursor(
    demo: Demo, demo_server: ServerProcess
) -> None:
    page = demo.page
    await demo.connected()
    await demo.sign_in(token("demo", ttl_s=3600))
    await demo.rows("positions")
    # A cursor arrives with every positions event; the page shows the newest.
    await page.locator("#positions-meta:text-matches('cursor \\\\d')").wait_for(timeout=WAIT_MS)
    assert [s["variables"]["after"] for s in demo.subscribes("DemoPositions")] == [None]

    demo_server.stop()
    await page.locator('#connection[data-state="waiting"]').wait_for(timeout=WAIT_MS)
    # Closed with 1012 and when to come back, the page waits that long (not its own backoff).
    waiting = await demo.text("#connection-text")
    hint = re.search(
        r"\(1012 Service Restart: reconnect in (\d+) ms\) · retrying in ([\d.]+) s", waiting
    )
    assert hint is not None, waiting
    assert abs(int(hint.group(1)) / 1000 - float(hint.group(2))) <= 0.05, waiting
    assert await page.evaluate("document.body.classList.contains('stale')")
    demo_server.start()
    await demo.connected()

    # Sockets: anonymous, signed in, the attempts while the server was down (none if it was back
    # within the hinted delay), and the last one.
    last = len(demo.sockets)
    assert last >= 3
    # Every operation was sent again on the new socket, positions with the newest cursor.
    [resumed] = demo.subscribes("DemoPositions", socket=last)
    cursor = resumed["variables"]["after"]
    assert cursor is not None
    assert re.fullmatch(r"\d+\.[0-9a-f]+", cursor), cursor
    markets = await page.locator("#prices tbody tr").count()
    assert len(demo.subscribes("DemoPrices", socket=last)) == markets == 3
    assert len(demo.subscribes("DemoLeaderboard", socket=last)) == 1
    assert len(demo.subscribes("DemoMartingale", socket=last)) == 1
    await page.locator("#positions-meta:text-matches('open')").wait_for(timeout=WAIT_MS)
    await distinct_texts(demo, '#prices tr[data-market="ETH-PERP"] td.price', 2, 15)
    # The browser logs the failed reconnects while the server is down; nothing else.
    assert [p for p in demo.problems if "WebSocket connection to" not in p] == []


async def test_the_page_renews_its_token_on_the_open_socket_without_a_reconnect(
    demo: Demo,
) -> None:
    """Signed in with an 8 s token, the page gets the expiry notice at once (TOKEN_RENEW_NOTICE_S
    is 60 s) and offers to renew; a token for another user is refused there and changes nothing;
    a fresh one for the same user is sent as renewSession on the same socket: no new socket, and
    the page is still live and signed in past the first token's expiry."""
    page = demo.page
    await demo.connected()
    await demo.sign_in(token("demo", ttl_s=8))
    signed_in = time.monotonic()
    await demo.rows("positions")
    await page.locator("#renew:not([hidden])").wait_for(timeout=WAIT_MS)
    assert "expires in" in await demo.text("#renew-notice")
    sockets = len(demo.sockets)

    await page.fill("#renew-token", token("mallory"))
    await page.click("#renew-button")
    await page.locator("#renew-error:not([hidden])").wait_for(timeout=WAIT_MS)
    assert "renewing keeps the same user" in await demo.text("#renew-error")

    await page.fill("#renew-token", token("demo", ttl_s=3600))
    await page.click("#renew-button")
    await page.locator("#renewed:not([hidden])").wait_for(timeout=WAIT_MS)
    assert "renewed on this connection" in await demo.text("#renewed")
    assert await page.locator("#renew").is_hidden()

    await asyncio.sleep(max(signed_in + 10 - time.monotonic(), 0))  # past the first token's 8 s
    assert len(demo.sockets) == sockets  # no reconnect
    assert await page.locator('#connection[data-state="connected"]').count() == 1
    assert "signed in as demo" in await demo.text("#connection-text")
    assert await page.locator("#signed-in").is_visible()
    await distinct_texts(demo, "#positions tbody tr:first-child td:nth-child(5)", 2, 15)
    assert [p for p in demo.problems if "WebSocket connection to" not in p] == []


async def test_a_refused_token_is_reported_and_the_page_goes_on_anonymously(
    demo: Demo,
) -> None:
    page = demo.page
    await demo.connected()
    await demo.sign_in("not a token")
    assert "Not a usable token" in await demo.text("#auth-error")
    assert await page.locator("#signed-in").is_hidden()

    forged = token("demo", secret=TEST_JWT_SECRET[::-1])
    await demo.sign_in(forged)
    await page.locator("#auth-error:text('Forbidden')").wait_for(timeout=WAIT_MS)
    assert "Signature verification failed" in await demo.text("#auth-error")
    assert await page.locator("#signed-in").is_hidden()
    await demo.connected()
    assert await demo.text("#connection-text") == "live · anonymous"
    await distinct_texts(demo, '#prices tr[data-market="SOL-PERP"] td.price', 2, 15)


async def test_the_page_is_static_with_a_strict_content_security_policy(
    demo_server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=demo_server.base_url) as http:
        page = await http.get("/")
        script = await http.get("/static/demo.js")
        client = await http.get("/static/graphql-ws.js")
        missing = await http.get("/static/nope.js")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert '<script type="module" src="/static/demo.js">' in page.text
    assert script.status_code == client.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert missing.status_code == 404
