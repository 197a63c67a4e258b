"""A Python client: gql over one WebSocket (graphql-transport-ws), the token in connection_init.

Subscribes to a public feed (a market's prices) and a private one (the token's user's positions),
prints TRADESTREAM_EVENTS events of each as JSON lines, and exits 0; 1 on an error or a time-out.
Install: pip install 'gql[websockets]>=4.4,<5'. Run: python client.py; docs/clients.md has the
settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

URL = os.environ.get("TRADESTREAM_URL", "http://127.0.0.1:8000/graphql")
TOKEN = os.environ.get("TRADESTREAM_TOKEN", "")
MARKET = os.environ.get("TRADESTREAM_MARKET", "BTC-PERP")
EVENTS = int(os.environ.get("TRADESTREAM_EVENTS", "3"))
AFTER = os.environ.get("TRADESTREAM_AFTER") or None  # resume positions right after this cursor
TIMEOUT_S = float(os.environ.get("TRADESTREAM_TIMEOUT_S", "30"))
# A file holding a fresh token for the same user, rewritten by whatever refreshes your tokens: with
# it, the session is renewed in band when the server's expiry notice comes, with no reconnect.
TOKEN_FILE = os.environ.get("TRADESTREAM_TOKEN_FILE") or None

PRICES = """
subscription PriceUpdates($market: String!) {
  priceUpdates(market: $market) { market price confidence publishedAt sequence }
}
"""

# Every event carries a cursor: pass the last one as `after` to resume right after it.
POSITIONS = """
subscription Positions($after: String) {
  positions(after: $after) {
    __typename
    ... on Resumable { cursor }
    ... on PositionsUpdate {
      user
      positions { id owner market side size markPrice unrealizedPnl healthFactor }
    }
    ... on PositionOpened { position { id owner size } }
    ... on PositionModified { position { id owner size } }
    ... on PositionClosed { returned position { id owner } }
    ... on PositionLiquidated { liquidationReward position { id owner } }
    ... on LiquidationWarning { healthFactor position { id owner } }
    ... on StreamReset { reason }
  }
}
"""


RENEW = """
mutation RenewSession($token: String!) { renewSession(token: $token) { expiresAt renewed } }
"""


async def renew_on_notice(session: Any, transport: WebsocketsTransport, token_file: str) -> None:
    """Renew the session each time the server's expiry notice comes (a ping whose payload says
    how long the token has left): renewSession over the same socket, every subscription kept."""
    while True:
        await transport.ping_received.wait()
        transport.ping_received.clear()
        notice = transport.payloads.get("ping") or {}
        if "tokenExpiresInS" not in notice:
            continue
        token = (await asyncio.to_thread(Path(token_file).read_text)).strip()
        request = GraphQLRequest(RENEW, variable_values={"token": token})
        renewed = (await session.execute(request))["renewSession"]
        print(f"session renewed until {renewed['expiresAt']}", file=sys.stderr)


async def take(session: Any, field: str, query: str, variables: dict[str, Any]) -> str | None:
    """Print EVENTS results of one subscription and return the newest cursor among them (None
    if they have none). Leaving the loop completes the subscription on the server."""
    request = GraphQLRequest(query, variable_values=variables)
    cursor, seen = None, 0
    async with contextlib.aclosing(session.subscribe(request)) as results:
        async for data in results:
            print(json.dumps({"feed": field, "event": data[field]}), flush=True)
            cursor = data[field].get("cursor") or cursor  # to resume right after this event
            seen += 1
            if seen == EVENTS:
                return cursor
    raise RuntimeError("the server ended the subscription")


async def main() -> None:
    transport = WebsocketsTransport(
        url=URL.replace("http", "ws", 1),
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload={"authorization": f"Bearer {TOKEN}"},
    )
    async with Client(transport=transport) as session:
        renewing = None
        if TOKEN_FILE is not None:
            renewing = asyncio.create_task(renew_on_notice(session, transport, TOKEN_FILE))
        try:
            _, cursor = await asyncio.gather(
                take(session, "priceUpdates", PRICES, {"market": MARKET}),
                take(session, "positions", POSITIONS, {"after": AFTER}),
            )
        finally:
            if renewing is not None:
                renewing.cancel()
    print(f"resume the positions with TRADESTREAM_AFTER={cursor or AFTER}", file=sys.stderr)


if __name__ == "__main__":
    if not TOKEN:
        sys.exit("error: set TRADESTREAM_TOKEN to a token")
    try:
        asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))
    except TimeoutError:
        sys.exit(f"error: fewer than {EVENTS} events of each feed in {TIMEOUT_S:g} s")
    except Exception as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""  # e.g. 4403 Forbidden: <why>
        sys.exit(f"error: {exc}{cause}")
