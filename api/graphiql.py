"""GraphiQL as tradestream serves it: Strawberry's page with a default document that runs as it
is, the headers editor open with an ``Authorization`` example, and that header also sent to the
WebSocket (in ``connection_init``) once it holds a real token."""

from __future__ import annotations

import re

import orjson
from strawberry.http.ides import get_graphql_ide_html

DEFAULT_DOCUMENT = """\
# tradestream: live trading feeds over GraphQL.
#
# Run an operation with the run button (Ctrl-Enter);
# it asks which one. Subscriptions stream over the
# WebSocket on this same URL (graphql-transport-ws).
#
# Public feeds need nothing. For your own streams
# (positions, martingaleProgress), mint a development
# token from the repository root:
#
#   .venv/bin/tradestream token --sub demo --ttl 1h
#
# and put it in the Headers tab below, in place of
# <token>: {"Authorization": "Bearer <token>"}
# It goes with queries, and in connection_init with
# subscriptions. While it says <token>, it is not sent.
#
# The live demo page is at /.

# Every market this server quotes.
query Markets {
  markets { id base quote tickSize maxLeverage }
  price(market: "BTC-PERP") {
    price confidence publishedAt sequence
  }
}

# The latest price at once, then each new one.
subscription Prices {
  priceUpdates(market: "BTC-PERP") {
    market price confidence publishedAt sequence
  }
}

# The demo marathon's top 10, whenever it changes.
subscription Leaderboard {
  marathonLeaderboard(marathonId: "demo", top: 10) {
    accounts
    rows { rank login profit profitPercentage equity }
  }
}

# Needs a token (see above): your positions, then
# every change.
subscription MyPositions {
  positions {
    __typename
    ... on Resumable { cursor }
    ... on PositionsUpdate {
      positions {
        market side size entryPrice markPrice
        unrealizedPnl healthFactor liquidationPrice
      }
    }
    ... on LiquidationWarning { position { id market } healthFactor }
  }
}
"""

DEFAULT_HEADERS = '{\n  "Authorization": "Bearer <token>"\n}'
"""What the headers editor holds until the user changes it: a hint, not sent as it is."""

_FETCHER = """
      // tradestream: headers from the editor go with HTTP requests and, as GraphiQL merges
      // them into connectionParams, with connection_init on the WebSocket. An Authorization
      // value still holding the <token> placeholder is left out, so the page works as loaded.
      function withoutPlaceholders(headers) {
        if (!headers) return headers;
        const kept = {};
        for (const [name, value] of Object.entries(headers)) {
          const placeholder = typeof value === "string" && /<[^>]*>/.test(value);
          if (!(name.toLowerCase() === "authorization" && placeholder)) kept[name] = value;
        }
        return kept;
      }

      function tradestreamFetcher(params, opts) {
        return fetcher(params, opts && { ...opts, headers: withoutPlaceholders(opts.headers) });
      }

      function GraphiQLWithExplorer() {"""

_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("<title>Strawberry GraphiQL</title>", "<title>tradestream GraphiQL</title>"),
    ("\n      function GraphiQLWithExplorer() {", _FETCHER),
    ("fetcher: fetcher,", "fetcher: tradestreamFetcher,"),
    (
        "defaultEditorToolsVisibility: true,",
        'defaultEditorToolsVisibility: "headers",\n'
        f"          defaultHeaders: {orjson.dumps(DEFAULT_HEADERS).decode()},",
    ),
)

_EXAMPLE_QUERY = re.compile(r"const EXAMPLE_QUERY = `.*?`;", re.DOTALL)


def graphiql_html() -> str:
    """Strawberry's GraphiQL page with tradestream's defaults. Raises if the page no longer has
    the places they go (a Strawberry upgrade changed it), rather than serving it without them."""
    html = get_graphql_ide_html(graphql_ide="graphiql")
    document = orjson.dumps(DEFAULT_DOCUMENT).decode().replace("</", "<\\/")
    html, found = _EXAMPLE_QUERY.subn(lambda _: f"const EXAMPLE_QUERY = {document};", html)
    if found != 1:
        raise RuntimeError("Strawberry's GraphiQL page has no EXAMPLE_QUERY to replace")
    for old, new in _REPLACEMENTS:
        if html.count(old) != 1:
            raise RuntimeError(f"Strawberry's GraphiQL page changed: {old.strip()!r} not found")
        html = html.replace(old, new)
    return html
