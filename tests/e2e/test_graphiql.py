"""GraphiQL at ``/graphql`` (api/transport/graphiql.py) in a real headless Chromium against a real
server with
simulated feeds, with every request to a host other than 127.0.0.1 refused: the page must load
everything from this server, as it does on a machine with no route to a CDN.

Set ``UPDATE_GRAPHIQL_SCREENSHOT=1`` to also write docs/graphiql.png (a ``priceUpdates``
subscription streaming)."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from api.transport.graphiql import (
    ASSETS_URL,
    CONTENT_SECURITY_POLICY,
    DEFAULT_DOCUMENT,
    DEFAULT_HEADERS,
    SCRIPTS,
    STYLESHEETS,
)
from tests.browser import Tab
from tests.conftest import isolated_server
from tests.support import GraphQLWS, ServerProcess, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from playwright.async_api import (
        Browser,
        Page,
        Request,
        Route,
        WebSocketRoute,
    )

ROOT = Path(__file__).parents[2]
DOCS_SCREENSHOT = ROOT / "docs" / "graphiql.png"
VENDOR = ROOT / "api" / "transport" / "static" / "graphiql" / "vendor"
WAIT_MS = 30_000
LOCAL_HOST = "127.0.0.1"

SETTINGS = {"PRICE_FEED_HZ": "4", "LEADERBOARD_MAX_HZ": "4"}

RESULT = ".result-window .CodeMirror"
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
HEADERS_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"

RESULT_FIELD = """([selector, field]) => {
    const editor = document.querySelector(selector);
    try {
        return JSON.parse(editor.CodeMirror.getValue()).data[field] || null;
    } catch {
        return null;
    }
}"""
"""The ``data`` field ``field`` of the JSON in the result pane, or null while it has none."""


@pytest.fixture(scope="module")
def graphiql_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Alone on a fresh database (simulated feeds on: prices, the demo marathon, user demo's
    positions)."""
    with isolated_server(
        database_url, SETTINGS, tmp_path_factory.mktemp("graphiql") / "server.log"
    ) as process:
        yield process


class GraphiQL(Tab):
    """One tab on GraphiQL: what it logged, every request it made or tried, and the frames its
    WebSockets sent. Requests to any host but 127.0.0.1 are refused and recorded."""

    def __init__(self, page: Page) -> None:
        super().__init__(page)
        self.requests: list[Request] = []
        self.refused: list[str] = []

    async def route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == LOCAL_HOST:
            await route.continue_()
        else:
            self.refused.append(route.request.url)
            await route.abort("blockedbyclient")

    async def route_socket(self, ws: WebSocketRoute) -> None:
        self.refused.append(ws.url)
        await ws.close()

    async def editor(self, selector: str) -> str:
        text: str = await self.page.eval_on_selector(selector, "e => e.CodeMirror.getValue()")
        return text

    async def set_headers(self, text: str) -> None:
        await self.page.eval_on_selector(
            HEADERS_EDITOR, "(e, text) => e.CodeMirror.setValue(text)", text
        )

    async def run(self, operation: str) -> None:
        """The run button, then ``operation`` in the menu of the document's operations."""
        await self.page.click(".graphiql-execute-button")
        await self.page.get_by_role("menuitem", name=operation, exact=True).click()

    async def stop(self) -> None:
        await self.page.click(".graphiql-execute-button")
        await self.page.locator(".graphiql-execute-button[aria-label^='Execute']").wait_for(
            timeout=WAIT_MS
        )

    async def result(self, field: str, differing_from: Any = None) -> Any:
        """The result pane's ``data.<field>`` once it shows one (other than ``differing_from``)."""
        handle = await self.page.wait_for_function(
            f"""(args) => {{
                const value = ({RESULT_FIELD})(args.slice(0, 2));
                return value && JSON.stringify(value) !== args[2] ? value : null;
            }}""",
            arg=[
                RESULT,
                field,
                json.dumps(differing_from, separators=(",", ":"), ensure_ascii=False),
            ],
            timeout=WAIT_MS,
        )
        return await handle.json_value()

    def connection_inits(self) -> list[dict[str, Any]]:
        return [m.get("payload", {}) for m in self.sent if m["type"] == "connection_init"]

    def graphql_posts(self, operation: str) -> list[Request]:
        """The HTTP requests that ran ``operation``."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and (r.post_data_json or {}).get("operationName") == operation
        ]


@pytest.fixture
async def graphiql(browser: Browser, graphiql_server: ServerProcess) -> AsyncIterator[GraphiQL]:
    context = await browser.new_context(viewport={"width": 1360, "height": 860})
    page = await context.new_page()
    tab = GraphiQL(page)
    context.on("request", lambda request: tab.requests.append(request))
    await context.route("**/*", tab.route)
    await context.route_web_socket(
        lambda url: urlsplit(url).hostname != LOCAL_HOST, tab.route_socket
    )
    await page.goto(graphiql_server.url)
    await page.locator(QUERY_EDITOR).wait_for(timeout=WAIT_MS)
    yield tab
    await context.close()


async def test_graphiql_loads_from_this_server_alone_and_runs_a_query_and_a_subscription(
    graphiql: GraphiQL, graphiql_server: ServerProcess, tmp_path: Path
) -> None:
    page = graphiql.page
    assert await page.title() == "tradestream GraphiQL"
    assert await graphiql.editor(QUERY_EDITOR) == DEFAULT_DOCUMENT
    # The headers editor is open, with its example.
    assert await graphiql.editor(HEADERS_EDITOR) == DEFAULT_HEADERS

    await graphiql.run("Markets")
    markets = await graphiql.result("markets")
    assert [m["id"] for m in markets] == ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
    price = await graphiql.result("price")
    assert re.fullmatch(r"\d+(\.\d+)?", price["price"]), price
    # Over HTTP, with the placeholder left out of the headers.
    [query] = graphiql.graphql_posts("Markets")
    assert "authorization" not in await query.all_headers()

    await graphiql.run("Prices")
    first = await graphiql.result("priceUpdates")
    assert first["market"] == "BTC-PERP"
    # The value on screen changes as new prices arrive: a later one, with a higher sequence.
    later = await graphiql.result("priceUpdates", differing_from=first)
    assert later["sequence"] > first["sequence"]
    assert later["publishedAt"] > first["publishedAt"]
    # Over the WebSocket on this same URL, its connection_init without the placeholder.
    assert [ws.url for ws in graphiql.sockets] == [graphiql_server.ws_url]
    assert graphiql.connection_inits() == [{}]
    [subscribe] = [m for m in graphiql.sent if m["type"] == "subscribe"]
    assert subscribe["payload"]["operationName"] == "Prices"

    # For the picture, the editor scrolled to the subscription that runs.
    await page.eval_on_selector(
        QUERY_EDITOR,
        """e => {
            const line = e.CodeMirror.getValue().split("\\n").indexOf("subscription Prices {");
            e.CodeMirror.scrollTo(null, e.CodeMirror.heightAtLine(line - 2, "local"));
        }""",
    )
    screenshot = tmp_path / "graphiql.png"
    await page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("UPDATE_GRAPHIQL_SCREENSHOT"):
        await page.screenshot(path=str(DOCS_SCREENSHOT))
    await graphiql.stop()

    assert graphiql.refused == []
    hosts = {urlsplit(r.url).hostname for r in graphiql.requests if not r.url.startswith("data:")}
    assert hosts == {LOCAL_HOST}
    loaded = {urlsplit(r.url).path for r in graphiql.requests}
    assert loaded >= {f"{ASSETS_URL}/{path}" for path in (*SCRIPTS, *STYLESHEETS)}
    # No Content-Security-Policy violation (Chromium logs each as a console error), no error.
    assert graphiql.problems == []


async def test_the_headers_editors_token_goes_with_queries_and_in_connection_init(
    graphiql: GraphiQL,
) -> None:
    demo = token("demo", ttl_s=3600)
    await graphiql.set_headers(orjson.dumps({"Authorization": f"Bearer {demo}"}).decode())

    await graphiql.run("MyPositions")
    update = await graphiql.result("positions")
    for _ in range(20):  # the state comes first; a warning may replace it before it is read
        if update["__typename"] == "PositionsUpdate":
            break
        update = await graphiql.result("positions", differing_from=update)
    assert update["__typename"] == "PositionsUpdate"
    assert {p["market"] for p in update["positions"]} == {"BTC-PERP", "ETH-PERP", "SOL-PERP"}
    assert graphiql.connection_inits() == [{"Authorization": f"Bearer {demo}"}]
    await graphiql.stop()

    await graphiql.run("Markets")
    await graphiql.result("markets")
    [query] = graphiql.graphql_posts("Markets")
    assert (await query.all_headers())["authorization"] == f"Bearer {demo}"

    # A menu and a dialog: GraphiQL's one inline style (the CSP admits it by its hash).
    await graphiql.page.click("button[aria-label='Open settings dialog']")
    await graphiql.page.get_by_role("dialog").wait_for(timeout=WAIT_MS)
    await graphiql.page.keyboard.press("Escape")
    assert graphiql.refused == []
    assert graphiql.problems == []


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.config: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name in ("src", "href"):
            if named.get(name):
                self.urls.append(f"{tag} {named[name]}")
        if named.get("data-config"):
            self.config = json.loads(named["data-config"] or "")


async def test_the_page_loads_only_its_own_files_under_a_strict_content_security_policy(
    graphiql_server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=graphiql_server.base_url) as http:
        page = await http.get("/graphql", headers={"accept": "text/html"})
        assets = {path: await http.get(f"{ASSETS_URL}/{path}") for path in (*SCRIPTS, *STYLESHEETS)}
        query = await http.post("/graphql", json={"query": "{ markets { id } }"})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    policy = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["connect-src"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY

    parsed = _Assets()
    parsed.feed(page.text)
    assert parsed.urls == [
        "link data:,",
        *(f"link {ASSETS_URL}/{path}" for path in STYLESHEETS),
        *(f"script {ASSETS_URL}/{path}" for path in SCRIPTS),
    ]
    assert "<script>" not in page.text
    assert "<style" not in page.text
    assert " style=" not in page.text
    assert parsed.config == {"defaultDocument": DEFAULT_DOCUMENT, "defaultHeaders": DEFAULT_HEADERS}

    for path, response in assets.items():
        assert response.status_code == 200, path
        kind = "css" if path.endswith(".css") else "javascript"
        assert re.fullmatch(rf"text/{kind}; charset=utf-8", response.headers["content-type"]), (
            path,
            response.headers["content-type"],
        )
        assert (
            response.content
            == (ROOT / "api" / "transport" / "static" / "graphiql" / path).read_bytes()
        )
    # The GraphQL endpoint itself is as before: JSON, no page policy.
    assert query.status_code == 200
    assert query.headers["content-type"] == "application/json"
    assert "content-security-policy" not in query.headers
    assert [m["id"] for m in query.json()["data"]["markets"]] == [
        "BTC-PERP",
        "ETH-PERP",
        "SOL-PERP",
    ]


def test_the_vendored_assets_are_the_pinned_npm_packages_with_their_licenses() -> None:
    """tools/graphiql/vendor.sh copied each package's files with its package.json and LICENSE:
    what the page loads is what tools/graphiql/package.json pins."""
    pins = orjson.loads((ROOT / "tools" / "graphiql" / "package.json").read_bytes())
    lock = orjson.loads((ROOT / "tools" / "graphiql" / "package-lock.json").read_bytes())
    vendored = {}
    for folder in sorted(p for p in VENDOR.iterdir() if p.is_dir()):
        manifest = orjson.loads((folder / "package.json").read_bytes())
        vendored[manifest["name"]] = manifest["version"]
        assert manifest["license"] == "MIT", folder.name
        assert "Permission is hereby granted" in (folder / "LICENSE").read_text(), folder.name
        assert (
            lock["packages"][f"node_modules/{manifest['name']}"]["version"] == manifest["version"]
        )
    assert vendored == pins["dependencies"]
    on_disk = {
        str(p.relative_to(VENDOR.parent)) for p in VENDOR.rglob("*") if p.suffix in (".js", ".css")
    }
    assert on_disk == {p for p in (*SCRIPTS, *STYLESHEETS) if p.startswith("vendor/")}


def default_document(html: str) -> str:
    parsed = _Assets()
    parsed.feed(html)
    return parsed.config["defaultDocument"]


async def test_the_default_document_runs_as_it_is(graphiql_server: ServerProcess) -> None:
    async with httpx.AsyncClient() as http:
        page = await http.get(graphiql_server.url, headers={"accept": "text/html"})
        document = default_document(page.text)
        markets = await http.post(
            graphiql_server.url, json={"query": document, "operationName": "Markets"}
        )
    assert "subscription Prices {" in document
    assert 'priceUpdates(market: "BTC-PERP")' in document
    assert "tradestream token --sub demo" in document
    assert markets.status_code == 200
    assert "errors" not in markets.json()
    assert {m["id"] for m in markets.json()["data"]["markets"]} >= {"BTC-PERP", "ETH-PERP"}

    # Each subscription of the document streams as it is; MyPositions with the header GraphiQL
    # sends in connection_init: its editor's headers, "Authorization" capitalised.
    async with GraphQLWS.connect(graphiql_server.ws_url, init=False) as ws:
        demo = token("demo")
        await ws.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {demo}"}})
        assert await ws.receive() == {"type": "connection_ack"}
        for n, name in enumerate(["Prices", "Leaderboard", "MyPositions"]):
            await ws.send(
                {
                    "id": str(n),
                    "type": "subscribe",
                    "payload": {"query": document, "operationName": name},
                }
            )
        # Until each has sent something, the (fresh) leaderboard has rows and the positions
        # stream has sent a state with the demo user's positions (opened as the server starts).
        latest: dict[str, dict[str, Any]] = {}
        for _ in range(200):
            message = await ws.receive()
            assert message["type"] == "next", message  # an error fails here, at once
            latest[message["id"]] = message["payload"]["data"]
            if (
                len(latest) == 3
                and latest["1"]["marathonLeaderboard"]["rows"]
                and latest["2"]["positions"].get("positions")
            ):
                break
    assert latest["0"]["priceUpdates"]["market"] == "BTC-PERP"
    assert latest["1"]["marathonLeaderboard"]["rows"]
    assert latest["2"]["positions"]["positions"]


async def test_a_websocket_header_with_a_bad_token_is_refused(
    graphiql_server: ServerProcess,
) -> None:
    async with GraphQLWS.connect(graphiql_server.ws_url, init=False) as ws:
        await ws.send({"type": "connection_init", "payload": {"AUTHORIZATION": "Bearer nope"}})
        code, reason = await ws.closed()
    assert code == 4403
    assert reason.startswith("Forbidden: malformed token")
