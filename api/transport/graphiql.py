"""GraphiQL as tradestream serves it at ``/graphql`` to browsers: a default document that runs as
it is, the headers editor open with an ``Authorization`` example, and that header also sent to the
WebSocket (in ``connection_init``) once it holds a real token.

Everything the page loads is ours, from ``api/transport/static/graphiql`` (served under
``/static/graphiql``
by the static mount in ``api/transport/demo.py``): GraphiQL, React and the explorer plugin at the
versions
Strawberry's page took from a CDN, copied from their npm packages by ``tools/graphiql/vendor.sh``,
and ``graphiql.js``, which starts GraphiQL with the defaults the page passes as JSON in a
``data-config`` attribute. No inline script or style in the page, so its policy is the demo
page's, with the two additions ``CONTENT_SECURITY_POLICY`` explains."""

from __future__ import annotations

from html import escape

import orjson

ASSETS_URL = "/static/graphiql"

STYLESHEETS = (
    "vendor/graphiql/graphiql.min.css",
    "vendor/plugin-explorer/style.css",
    "graphiql.css",
)
SCRIPTS = (
    "vendor/react/react.production.min.js",
    "vendor/react-dom/react-dom.production.min.js",
    "vendor/graphiql/graphiql.min.js",
    "vendor/plugin-explorer/index.umd.js",
    "graphiql.js",
)
"""In the order they run: each UMD bundle reads the globals of those before it (React, ReactDOM,
GraphiQL), and graphiql.js uses them all."""

SCROLL_LOCK_STYLE = "sha256-Y/huXlwoYkVyQlxwSVcCi1RCDGDCSVBzDt0hYP9qlTc="
"""The one inline style GraphiQL makes: a ``<style>`` that react-remove-scroll-bar adds to lock the
page's scrolling while a menu or dialog is open (the run button's operation menu, settings, short
keys). Its text depends only on the scroll bar's width, which is always 0 here (graphiql.css keeps
the root from scrolling), so one hash admits exactly it, where ``'unsafe-inline'`` would admit any
injected style. A GraphiQL upgrade that changes that text makes the browser refuse it (harmless:
the page does not scroll anyway) and fails tests/e2e/test_graphiql.py, which fails on any console
error; Chromium's error names the new hash."""

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src 'self'; style-src 'self' '{SCROLL_LOCK_STYLE}'; "
    "img-src 'self' data:; font-src data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The demo page's policy, with two additions: the hash of GraphiQL's one inline style (above),
and ``font-src data:`` for the fonts that graphiql.min.css embeds as data: URLs. Scripts and style
sheets only from this origin, no eval; connections only to it ('self' covers ws: and wss: on it).
"""

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


def graphiql_html() -> str:
    """The page: GraphiQL's assets, and its defaults as JSON for graphiql.js."""
    config = orjson.dumps({"defaultDocument": DEFAULT_DOCUMENT, "defaultHeaders": DEFAULT_HEADERS})
    links = "".join(f'    <link rel="stylesheet" href="{ASSETS_URL}/{p}" />\n' for p in STYLESHEETS)
    scripts = "".join(f'    <script defer src="{ASSETS_URL}/{p}"></script>\n' for p in SCRIPTS)
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>tradestream GraphiQL</title>
    <link rel="icon" href="data:," />
{links}{scripts}  </head>
  <body>
    <div id="graphiql" data-config="{escape(config.decode(), quote=True)}">Loading...</div>
  </body>
</html>
"""
