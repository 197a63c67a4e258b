"""The broadcast backends against the real brokers: what one process publishes, another hears."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from api.streaming.broadcast import NOTIFY_MAX_BYTES, Broadcast, MessageTooLargeError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture(params=["memory", "redis", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    fixture = "redis_url" if request.param == "redis" else "database_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def pair(backend_url: str) -> AsyncIterator[tuple[Broadcast, Broadcast]]:
    """A publishing and a subscribing connection (one and the same for memory://)."""
    publisher = Broadcast(backend_url)
    await publisher.connect()
    subscriber = publisher
    if backend_url != "memory://":
        subscriber = Broadcast(backend_url)
        await subscriber.connect()
    yield publisher, subscriber
    for b in {id(publisher): publisher, id(subscriber): subscriber}.values():
        await b.disconnect()


@pytest.mark.parametrize(
    "topic", ["price:BTC-PERP", "positions:" + "0x" + "ab" * 40], ids=["short", "long"]
)
async def test_published_messages_reach_subscribers_in_order(
    pair: tuple[Broadcast, Broadcast], topic: str
) -> None:
    publisher, subscriber = pair
    async with subscriber.subscribe(topic) as sub:
        for i in range(5):
            await publisher.publish(topic, f"m{i}")
        got = [await asyncio.wait_for(sub.get(), 5) for _ in range(5)]
    assert [e.message for e in got] == [f"m{i}" for i in range(5)]
    assert {e.channel for e in got} == {topic}


async def test_ping_answers(pair: tuple[Broadcast, Broadcast]) -> None:
    for b in pair:
        await b.ping()


async def test_postgres_refuses_a_message_notify_cannot_carry(database_url: str) -> None:
    broadcast = Broadcast(database_url)
    await broadcast.connect()
    try:
        with pytest.raises(MessageTooLargeError, match="use the Redis backend"):
            await broadcast.publish("price:BTC-PERP", "x" * (NOTIFY_MAX_BYTES + 1))
        await broadcast.publish(
            "price:BTC-PERP", "x" * NOTIFY_MAX_BYTES
        )  # the limit itself is fine
    finally:
        await broadcast.disconnect()


async def test_postgres_publishes_concurrently(database_url: str) -> None:
    """broadcaster's own backend fails here: one connection cannot run two commands at once."""
    broadcast = Broadcast(database_url)
    await broadcast.connect()
    try:
        async with broadcast.subscribe("price:ETH-PERP") as sub:
            await asyncio.gather(*(broadcast.publish("price:ETH-PERP", str(i)) for i in range(20)))
            got = {(await asyncio.wait_for(sub.get(), 5)).message for _ in range(20)}
        assert got == {str(i) for i in range(20)}
    finally:
        await broadcast.disconnect()
