"""What one price tick costs each private ``positions(user:)`` (or ``liveDashboard``) stream
before GraphQL runs.

    .venv/bin/python -m bench.positions_tick [--users 2000] [--ticks 50] [--profile]
    .venv/bin/python -m bench.positions_tick --feed dashboard

N streams (:func:`api.feeds.perps.stream.positions_stream`, the real code; with ``--feed dashboard``
:func:`api.feeds.paper_exchange.stream.live_stream`) run against a real
:class:`api.streaming.hub.Hub` over the
in-memory broadcast, with in-memory stand-ins for the history, the position book, the paper
exchange and the price store. User ``user-<i>`` holds the one BTC-PERP position the shared
benchmark gives it (``../shared/bench/README.md``; on the paper exchange, a market order of that
size at that entry). Each tick is one price event handed to every stream's queue, as the hub's
topic feed does, and the time is divided by N:

- ``drive``: each stream's generator is stepped in turn to the updates the tick makes (positions;
  the dashboard also sends its balance), with no task wake-up: the stream's own work per
  subscriber (decode, re-value, build the updates);
- ``stepped``: every stream is stepped from the hub's ``put`` as a fan-out group steps it
  (:mod:`api.streaming.stepping`): the tick's whole synchronous pass, the hub's delivery included;
- ``foreign``: a tick of ETH-PERP, which no user holds, stepped the same way: what a market a
  subscriber does not hold costs it.

Times are the process's CPU time (``time.process_time``), so other processes on a busy machine
change them less than they change wall time. ``--profile`` runs ``drive`` under cProfile and
prints the top functions. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from api.feeds.paper_exchange.stream import live_stream
from api.feeds.perps.stream import positions_stream
from api.runtime.clock import SystemClock
from api.storage.history import Cursor, Start
from api.streaming.broadcast import Broadcast
from api.streaming.hub import Hub
from api.streaming.stepping import PARKED, Stepping
from domain import perps
from domain.events import Event
from domain.markets import Market, MarketCatalog
from domain.paper_exchange import OrderRequest, OrderSide, OrderType, PaperAccount
from domain.perps_margin import new_account
from domain.prices import PRICE_UPDATE, OraclePrice
from domain.topics import price_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence

D = Decimal
EPOCH = "0"


def _market(id: str, tick: str, step: str, max_leverage: int, mmr: str) -> Market:
    """As the migrations list it."""
    return Market(id, id[:3], "USD", D(tick), D(step), D(step), D(max_leverage), D(mmr), D("0.015"))


MARKETS = MarketCatalog(
    [
        _market("BTC-PERP", "0.1", "0.0001", 20, "0.03"),
        _market("ETH-PERP", "0.01", "0.001", 20, "0.03"),
        _market("SOL-PERP", "0.001", "0.01", 10, "0.05"),
    ]
)


def bench_position(i: int) -> perps.Position:
    """``user-<i>``'s position in the shared benchmark."""
    size = D("0.01") * (1 + i % 5)
    entry = D(100 + i % 7 - 3)
    return perps.Position(
        id=f"pos_{i}",
        owner=f"user-{i}",
        market="BTC-PERP",
        side=perps.Side.LONG if i % 2 == 0 else perps.Side.SHORT,
        size=size,
        entry_price=entry,
        collateral=size * entry / (5 + i % 16),
        opened_at=datetime(2026, 12, 6, tzinfo=UTC),
        revision=1,
    )


@dataclass
class _History:
    async def start(
        self,
        topics: Sequence[str],
        after: Sequence[Cursor] | None,
        snapshot: Callable[[], Awaitable[Any]],
        *,
        always_snapshot: bool = False,
    ) -> Start[Any]:
        return Start([Cursor(EPOCH, 0) for _ in topics], snapshot=await snapshot())


class _Book:
    async def open_positions(self, user: str) -> list[perps.Position]:
        return [bench_position(int(user.removeprefix("user-")))]

    async def margin_account(self, user: str) -> Any:
        return new_account(user, D(10_000))


def bench_account(i: int) -> PaperAccount:
    """``user-<i>``'s paper account: the same position, opened by a market order."""
    position = bench_position(i)
    account = PaperAccount(position.owner, MARKETS, initial_balance=D(10_000))
    side = OrderSide.BUY if position.side is perps.Side.LONG else OrderSide.SELL
    request = OrderRequest("BTC-PERP", side, OrderType.MARKET, position.size)
    account.place_order(request, {"BTC-PERP": position.entry_price}, datetime.now(UTC))
    return account


class _Exchange:
    async def account(self, owner: str) -> PaperAccount:
        return bench_account(int(owner.removeprefix("user-")))

    async def marks(self) -> dict[str, Decimal]:
        return {"BTC-PERP": D(100)}


class _Prices:
    async def latest(self, market: str) -> tuple[OraclePrice, int] | None:
        return (OraclePrice(market, D(100), D("0.05"), datetime.now(UTC)), 1)

    async def latest_of(self, markets: Sequence[str]) -> dict[str, OraclePrice]:
        return {m: OraclePrice(m, D(100), D("0.05"), datetime.now(UTC)) for m in markets}


def price_event(market: str, sequence: int, price: Decimal) -> Event:
    now = datetime.now(UTC)
    payload = OraclePrice(market, price, D("0.05"), now).to_payload()
    return Event(price_topic(market), sequence, now, PRICE_UPDATE, payload)


class Bench:
    def __init__(self, hub: Hub, users: int, feed: str) -> None:
        self.hub = hub
        services: Any = SimpleNamespace(
            hub=hub,
            markets=MARKETS,
            history=_History(),
            book=_Book(),
            exchange=_Exchange(),
            prices=_Prices(),
            clock=SystemClock(),
        )
        dashboard = feed == "dashboard"
        stream = live_stream if dashboard else positions_stream
        self.streams: list[AsyncIterator[Any]] = [
            stream(services, f"user-{i}") for i in range(users)
        ]
        self.at_start = 3 if dashboard else 1
        """What a stream sends at once: the positions; the dashboard's balance and orders too."""
        self.per_tick = 2 if dashboard else 1
        """What a tick makes a stream send: the positions; the dashboard's balance too."""
        self.sequence = {m.id: 1 for m in MARKETS}
        self.price = D(100)

    async def start(self) -> None:
        for stream in self.streams:
            for _ in range(self.at_start):
                await anext(stream)

    def tick(self, market: str = "BTC-PERP") -> None:
        """One price event handed to every queue of its topic: what the hub's feed does."""
        self.sequence[market] += 1
        self.price += D("0.1")
        event = price_event(market, self.sequence[market], self.price)
        feed = self.hub._feeds.get(price_topic(market))
        for queue in () if feed is None else feed.queues:
            queue.put(event)

    async def drive(self) -> float:
        self.tick()
        began = time.process_time()
        for stream in self.streams:
            for _ in range(self.per_tick):
                await anext(stream)
        return time.process_time() - began

    def queued(self) -> int:
        return self.hub.queued_events


class _Stepped:
    """Steps a stream from the hub's ``put``, as a fan-out group does
    (:mod:`api.streaming.stepping`): the
    stream parks on its hub wakeup, and the wakeup's ``set`` runs it to its next update."""

    def __init__(self, stream: AsyncIterator[Any], arrived: Callable[[], None]) -> None:
        self.stream = stream
        self.arrived = arrived
        self.step: Coroutine[Any, None, Any] | None = None
        task = asyncio.current_task()
        assert task is not None
        self.stepping = Stepping(self, asyncio.get_running_loop(), task)

    def resume(self) -> None:
        with self.stepping:
            while True:
                if self.step is None:
                    self.step = self.stream.__anext__()  # type: ignore[assignment]
                    assert self.step is not None
                try:
                    awaited = self.step.send(None)
                except StopIteration:
                    self.step = None
                    self.arrived()
                    continue
                if awaited is not PARKED:
                    raise RuntimeError("the stream awaited something other than a hub queue")
                return

    def close(self) -> None:
        """End the stream where it is parked: it leaves the hub."""
        assert self.step is not None
        with contextlib.suppress(GeneratorExit):
            self.step.throw(GeneratorExit())


async def measure(users: int, ticks: int, profile: bool, feed: str) -> None:
    broadcast = Broadcast("memory://")
    await broadcast.connect()
    hub = Hub(broadcast, queue_size=64)
    bench = Bench(hub, users, feed)
    await bench.start()

    drive = [await bench.drive() for _ in range(ticks)]
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(ticks):
            await bench.drive()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)

    arrived = 0

    def count() -> None:
        nonlocal arrived
        arrived += 1

    steppers = [_Stepped(stream, count) for stream in bench.streams]
    for stepper in steppers:
        stepper.resume()  # parks on its wakeup
    stepped = []
    for _ in range(ticks):
        began = time.process_time()
        bench.tick()
        stepped.append(time.process_time() - began)
    assert arrived == ticks * users * bench.per_tick, arrived

    foreign = []
    for _ in range(ticks):
        began = time.process_time()
        bench.tick("ETH-PERP")
        foreign.append(time.process_time() - began)
    assert arrived == ticks * users * bench.per_tick  # a foreign tick sent nobody an update

    for stepper in steppers:
        stepper.close()
    await hub.close()
    await broadcast.disconnect()

    def per_user(seconds: list[float]) -> str:
        micros = sorted(s / users * 1e6 for s in seconds)
        return f"median {statistics.median(micros):7.2f} us  min {micros[0]:7.2f} us"

    print(f"{feed}: {users} streams, {ticks} ticks each; per subscriber per tick:")
    print(f"  drive    {per_user(drive)}")
    print(f"  stepped  {per_user(stepped)}")
    print(f"  foreign  {per_user(foreign)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--feed", choices=("positions", "dashboard"), default="positions")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(measure(args.users, args.ticks, args.profile, args.feed))


if __name__ == "__main__":
    main()
