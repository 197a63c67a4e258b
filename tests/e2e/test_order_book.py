"""The order book feed on a real server: the simulated makers quote 50 levels a side around each
oracle price; ``orderBook(market:, depth:)`` sends the best ``depth`` levels, then deltas that
chain by ``previous``/``sequence``; a client applying them holds exactly the book the query shows
at the same sequence; bad arguments get clear errors while a bystander is served; a resumed
subscription goes on from its cursor."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import jsonpatch
import pytest

from tests.conftest import isolated_server
from tests.e2e.support import PLACE, call
from tests.support import GraphQLWS, ServerProcess, loop_watch, token

if TYPE_CHECKING:
    from collections.abc import Iterator

BOOK = """subscription($m: String!, $d: Int!, $after: String) {
  orderBook(market: $m, depth: $d, after: $after) {
    __typename
    ... on OrderBookSnapshot { market sequence cursor bids { price size } asks { price size } }
    ... on OrderBookDelta { market previous sequence cursor changes { side price size } }
    ... on StreamReset { reason cursor }
  }
}"""
QUERY = """query($m: String!, $d: Int!) {
  orderBook(market: $m, depth: $d) { sequence cursor bids { price size } asks { price size } }
}"""
DEPTH = 10


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with isolated_server(
        database_url,
        {"PRICE_FEED_HZ": "20", "BOOK_QUOTE_HZ": "20"},
        tmp_path_factory.mktemp("order-book") / "server.log",
    ) as process:
        yield process


class ClientBook:
    """A client's copy of the best levels, built from a snapshot and the deltas after it."""

    def __init__(self) -> None:
        self.sequence: int | None = None
        self.sides: dict[str, dict[Decimal, Decimal]] = {"BID": {}, "ASK": {}}
        self.states: list[tuple[int, dict[str, list[tuple[Decimal, Decimal]]]]] = []

    def take(self, item: dict[str, Any]) -> None:
        if item["__typename"] == "OrderBookSnapshot":
            self.sides = {
                "BID": {Decimal(x["price"]): Decimal(x["size"]) for x in item["bids"]},
                "ASK": {Decimal(x["price"]): Decimal(x["size"]) for x in item["asks"]},
            }
        else:
            assert item["__typename"] == "OrderBookDelta", item
            assert item["previous"] == self.sequence, (item["previous"], self.sequence)
            assert item["sequence"] > item["previous"]
            for change in item["changes"]:
                side = self.sides[change["side"]]
                size = Decimal(change["size"])
                if size:
                    side[Decimal(change["price"])] = size
                else:
                    side.pop(Decimal(change["price"]), None)
        self.sequence = item["sequence"]
        self.states.append((item["sequence"], self.levels()))

    def levels(self) -> dict[str, list[tuple[Decimal, Decimal]]]:
        bids = sorted(self.sides["BID"].items(), reverse=True)
        asks = sorted(self.sides["ASK"].items())
        return {"bids": bids, "asks": asks}

    def at(self, sequence: int) -> dict[str, list[tuple[Decimal, Decimal]]]:
        """The book as of ``sequence``: the state after the last event at or before it."""
        return [state for seq, state in self.states if seq <= sequence][-1]


def shown(book: dict[str, Any]) -> dict[str, list[tuple[Decimal, Decimal]]]:
    return {
        side: [(Decimal(x["price"]), Decimal(x["size"])) for x in book[side]]
        for side in ("bids", "asks")
    }


async def query(server: ServerProcess, market: str, depth: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=20) as http:
        answer = (
            await http.post(
                server.url, json={"query": QUERY, "variables": {"m": market, "d": depth}}
            )
        ).json()
    assert "errors" not in answer, answer
    book: dict[str, Any] = answer["data"]["orderBook"]
    return book


async def first_book(client: GraphQLWS, id: str) -> dict[str, Any]:
    """The first snapshot (the makers quote within a tick or two of the first price)."""
    item = await client.next_data(id, "orderBook")
    assert item["__typename"] == "OrderBookSnapshot", item
    return item


async def test_a_client_applying_the_deltas_holds_the_book_the_query_shows(
    server: ServerProcess,
) -> None:
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("b", BOOK, {"m": "BTC-PERP", "d": DEPTH})
        book = ClientBook()
        snapshot = await first_book(client, "b")
        book.take(snapshot)
        bids, asks = book.levels()["bids"], book.levels()["asks"]
        assert len(bids) == DEPTH
        assert len(asks) == DEPTH
        assert bids[0][0] < asks[0][0]  # not crossed
        deltas = 0
        deadline = time.monotonic() + 20
        while deltas < 20 and time.monotonic() < deadline:
            book.take(await client.next_data("b", "orderBook"))
            deltas += 1
        assert deltas == 20
        wanted = await query(server, "BTC-PERP", DEPTH)
        while book.sequence is not None and book.sequence < wanted["sequence"]:
            book.take(await client.next_data("b", "orderBook"))
        assert book.at(wanted["sequence"]) == shown(wanted)
        levels = book.levels()
        assert len(levels["bids"]) == DEPTH
        assert len(levels["asks"]) == DEPTH


async def test_a_resumed_subscription_goes_on_from_its_cursor(server: ServerProcess) -> None:
    book = ClientBook()
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("b", BOOK, {"m": "ETH-PERP", "d": DEPTH})
        book.take(await first_book(client, "b"))
        for _ in range(3):
            item = await client.next_data("b", "orderBook")
            book.take(item)
        cursor = item["cursor"]
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("b", BOOK, {"m": "ETH-PERP", "d": DEPTH, "after": cursor})
        # A snapshot of now first (the cursor does not say which depth was held), then deltas
        # that chain on it.
        first = await client.next_data("b", "orderBook")
        assert first["__typename"] == "OrderBookSnapshot", first
        assert first["sequence"] >= book.sequence
        book.take(first)
        for _ in range(4):
            book.take(await client.next_data("b", "orderBook"))
        assert book.sequence is not None
    wanted = await query(server, "ETH-PERP", DEPTH)
    assert wanted["sequence"] >= book.sequence


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"m": "BTC-PERP", "d": 0}, "INVALID_DEPTH"),
        ({"m": "BTC-PERP", "d": 501}, "INVALID_DEPTH"),
        ({"m": "DOGE-PERP", "d": 10}, "UNKNOWN_MARKET"),
        ({"m": "BTC-PERP", "d": 10, "after": "not-a-cursor"}, "INVALID_CURSOR"),
    ],
)
async def test_bad_arguments_get_a_clear_error_and_a_bystander_is_served(
    server: ServerProcess, variables: dict[str, Any], code: str
) -> None:
    async with loop_watch(server) as worst, GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe(f"bad-{uuid.uuid4().hex[:6]}", BOOK, variables)
        message = await client.receive()
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == code, message
        async with httpx.AsyncClient(timeout=20) as http:
            answer = (
                await http.post(
                    server.url,
                    json={"query": QUERY, "variables": {"m": variables["m"], "d": variables["d"]}},
                )
            ).json()
        if code != "INVALID_CURSOR":
            assert answer["errors"][0]["extensions"]["code"] == code, answer
    assert worst["healthz_s"] < 0.5


async def test_identical_subscribers_see_the_same_deltas(server: ServerProcess) -> None:
    async with (
        GraphQLWS.connect(server.ws_url) as one,
        GraphQLWS.connect(server.ws_url) as two,
    ):
        await one.subscribe("b", BOOK, {"m": "SOL-PERP", "d": 5})
        await first_book(one, "b")
        await two.subscribe("b", BOOK, {"m": "SOL-PERP", "d": 5})
        seen_two = ClientBook()
        seen_two.take(await first_book(two, "b"))
        ones = [await one.next_data("b", "orderBook") for _ in range(15)]
        twos = [await two.next_data("b", "orderBook") for _ in range(5)]
        by_sequence = {item["sequence"]: item for item in ones}
        compared = 0
        for item in twos:
            seen_two.take(item)
            other = by_sequence.get(item["sequence"])
            # Each execution merges what waited for it, so compare the changes both sent whole.
            if other is not None and other.get("previous") == item.get("previous"):
                assert {k: v for k, v in item.items() if k != "cursor"} == {
                    k: v for k, v in other.items() if k != "cursor"
                }
                compared += 1
        assert compared > 0


TRADES = """subscription($m: String!, $after: String) {
  trades(market: $m, after: $after) {
    __typename
    ... on Trade { id market side price size at cursor }
    ... on StreamReset { reason cursor }
  }
}"""
RECENT = (
    "query($m: String!, $n: Int!) { trades(market: $m, limit: $n) { id side price size cursor } }"
)


async def buy(server: ServerProcess, user: str, quantity: str) -> dict[str, Any]:
    placed = await call(
        server,
        PLACE,
        {
            "i": {
                "symbol": "SOL-PERP",
                "side": "BUY",
                "type": "MARKET",
                "quantity": quantity,
                "clientOrderId": f"{user}-{uuid.uuid4().hex[:8]}",
            }
        },
        token(user),
    )
    assert "errors" not in placed, placed
    order: dict[str, Any] = placed["data"]["placeOrder"]["order"]
    return order


async def test_each_fill_is_on_the_public_tape_without_who_traded(server: ServerProcess) -> None:
    user = f"taker-{uuid.uuid4().hex[:8]}"
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("t", TRADES, {"m": "SOL-PERP"})
        await asyncio.sleep(0.3)  # subscribed before the order
        order = await buy(server, user, "2")
        trade = await client.next_data("t", "trades")
        assert trade["__typename"] == "Trade"
        assert (trade["market"], trade["side"], trade["size"]) == ("SOL-PERP", "BUY", "2")
        assert trade["price"] == order["averagePrice"]
        assert trade["id"] != order["id"]
        assert user not in str(trade)
        cursor = trade["cursor"]
    second = await buy(server, user, "3")
    # Resumed after the first: the second comes first, from the history.
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("t", TRADES, {"m": "SOL-PERP", "after": cursor})
        missed = await client.next_data("t", "trades")
        assert (missed["size"], missed["price"]) == ("3", second["averagePrice"])
    recent = await call(server, RECENT, {"m": "SOL-PERP", "n": 2})
    assert [t["size"] for t in recent["data"]["trades"]] == ["2", "3"]
    assert recent["data"]["trades"][-1]["cursor"] == missed["cursor"]


async def test_a_bad_trades_limit_or_market_is_refused(server: ServerProcess) -> None:
    for variables, code in (
        ({"m": "SOL-PERP", "n": 0}, "INVALID_LIMIT"),
        ({"m": "SOL-PERP", "n": 501}, "INVALID_LIMIT"),
        ({"m": "DOGE-PERP", "n": 5}, "UNKNOWN_MARKET"),
    ):
        answer = await call(server, RECENT, variables)
        assert answer["errors"][0]["extensions"]["code"] == code, answer


CANCEL = "mutation($o: ID!) { cancelOrder(orderId: $o) { id status } }"
DEEP = """query($m: String!) {
  orderBook(market: $m, depth: 500) { sequence bids { price size } asks { price size } }
}"""


async def bid_at(server: ServerProcess, price: str) -> str | None:
    answer = await call(server, DEEP, {"m": "BTC-PERP"})
    assert "errors" not in answer, answer
    for level in answer["data"]["orderBook"]["bids"]:
        if Decimal(level["price"]) == Decimal(price):
            size: str = level["size"]
            return size
    return None


async def eventually(check: Any, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_a_resting_limit_order_is_in_the_book_until_it_is_canceled(
    server: ServerProcess,
) -> None:
    """A user's BUY LIMIT far below the market rests in the book as a level of its own (the
    makers quote 50 ticks around the price); canceled, the level goes."""
    user = f"bidder-{uuid.uuid4().hex[:8]}"
    mark = Decimal((await query(server, "BTC-PERP", 1))["bids"][0]["price"])
    price = str((mark * Decimal("0.8")).quantize(Decimal("0.1")))
    placed = await call(
        server,
        PLACE,
        {
            "i": {
                "symbol": "BTC-PERP",
                "side": "BUY",
                "type": "LIMIT",
                "quantity": "0.013",
                "price": price,
                "clientOrderId": f"{user}-1",
            }
        },
        token(user),
    )
    assert "errors" not in placed, placed
    order = placed["data"]["placeOrder"]["order"]
    assert order["status"] == "NEW"
    assert Decimal(await eventually(lambda: bid_at(server, price))) == Decimal("0.013")
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("deep", BOOK, {"m": "BTC-PERP", "d": 500})
        book = ClientBook()
        book.take(await first_book(client, "deep"))
        assert dict(book.levels()["bids"])[Decimal(price)] == Decimal("0.013")
        canceled = await call(server, CANCEL, {"o": order["id"]}, token(user))
        assert canceled["data"]["cancelOrder"]["status"] == "CANCELED", canceled
        deadline = time.monotonic() + 10
        while Decimal(price) in dict(book.levels()["bids"]) and time.monotonic() < deadline:
            book.take(await client.next_data("deep", "orderBook"))
        assert Decimal(price) not in dict(book.levels()["bids"])
    assert await bid_at(server, price) is None


async def test_a_client_that_asks_for_deltas_rebuilds_the_same_book(server: ServerProcess) -> None:
    """With deltas asked for (docs/protocols.md), each orderBook result comes numbered, whole or
    as a patch of the one before; applied, they chain and hold exactly the book the query shows
    at the same sequence. (The book's results are deltas already: a patch between two of them is
    seldom smaller than the next, so most come whole.)"""
    async with GraphQLWS.connect(server.ws_url) as client:
        payload = {
            "query": BOOK,
            "variables": {"m": "BTC-PERP", "d": DEPTH},
            "extensions": {"delta": True},
        }
        await client.send({"id": "p", "type": "subscribe", "payload": payload})
        book = ClientBook()
        last: dict[str, Any] | None = None
        seq = 0

        async def take() -> None:
            nonlocal last, seq
            message = await client.receive()
            assert message["type"] == "next", message
            delta = message["payload"].pop("extensions")["delta"]
            assert delta["seq"] == seq + 1
            seq = delta["seq"]
            if "patch" in delta:
                assert last is not None
                last = jsonpatch.apply_patch(last, delta["patch"])
            else:
                last = message["payload"]
            assert last is not None
            book.take(last["data"]["orderBook"])

        for _ in range(15):
            await take()
        wanted = await query(server, "BTC-PERP", DEPTH)
        while book.sequence is not None and book.sequence < wanted["sequence"]:
            await take()
        assert book.at(wanted["sequence"]) == shown(wanted)
