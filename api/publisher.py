"""The real :class:`domain.ports.Publisher`: sequences from PostgreSQL, delivery by broadcaster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from api.envelope import encode_event
from domain.events import Event

if TYPE_CHECKING:
    from api.broadcast import Broadcast
    from domain.ports import Clock


class Sequencer(Protocol):
    async def next(self, topic: str) -> int: ...


class BroadcastPublisher:
    def __init__(self, broadcast: Broadcast, sequencer: Sequencer, clock: Clock) -> None:
        self.broadcast = broadcast
        self.sequencer = sequencer
        self.clock = clock

    async def prepare(self, topic: str, type: str, payload: dict[str, Any]) -> Event:
        sequence = await self.sequencer.next(topic)
        return Event(topic, sequence, self.clock.now(), type, payload)

    async def send(self, event: Event) -> None:
        await self.broadcast.publish(event.topic, encode_event(event))
