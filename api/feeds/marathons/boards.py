"""Each process's live leaderboards: built from PostgreSQL at start, then kept current from the
cluster-wide ``marathon-feed`` topic, so every process answers leaderboard queries and
subscriptions from memory, whichever process ingested the snapshot.

A reader that falls behind the feed (more than ``FEED_CAPACITY`` events) or loses it rebuilds from
the database and goes on: the feed is a stream, and the database is the truth.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from api.streaming.hub import HubClosedError, HubError
from domain.marathons import (
    ACCOUNT_SNAPSHOT,
    ACCOUNT_SNAPSHOTS,
    ADDED_PARTICIPANT,
    MARATHON_CREATED,
    PARTICIPANT_ADDED,
    PARTICIPANT_REMOVED,
    REMOVED_PARTICIPANT,
    SNAPSHOT_BATCH,
    Leaderboard,
    marathon_from_payload,
    snapshot_from_payload,
)
from domain.topics import marathon_feed_topic

if TYPE_CHECKING:
    from collections.abc import Iterable

    from api.feeds.marathons.store import MarathonState, PgMarathonStore
    from api.streaming.hub import Hub
    from domain.events import Event
    from domain.marathons import AccountSnapshot, Marathon, Participant

logger = logging.getLogger(__name__)

FEED_CAPACITY = 100_000
"""Feed events the boards may fall behind (a burst of snapshots) before they rebuild."""


class Notifier:
    """A version number and a way to wait for the next one: readers never miss a change and
    never queue them (a reader that wakes late sees the newest state)."""

    def __init__(self, *, closed: bool = False) -> None:
        self.version = 0
        self.closed = closed
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """No version will come after this one: a waiting reader gets HubClosedError."""
        self.closed = True
        self._changed.set()

    async def wait(self, seen: int) -> int:
        """The version after ``seen`` (at once if there is one already); HubClosedError once
        the boards no longer follow the feed because the server is shutting down."""
        while self.version == seen:
            if self.closed:
                raise HubClosedError("the server is shutting down")
            await self._changed.wait()
        return self.version


class MarathonBoards:
    def __init__(self, store: PgMarathonStore, hub: Hub) -> None:
        self.store = store
        self.hub = hub
        self.marathons: dict[str, Marathon] = {}
        self.boards: dict[str, Leaderboard] = {}
        self.members: dict[str, dict[int, Participant]] = {}
        self.by_login: dict[int, set[str]] = {}
        self.snapshots: dict[int, AccountSnapshot] = {}
        self.notifiers: dict[str, Notifier] = {}
        self._accounts_of: dict[tuple[str, str], int] = {}
        """(marathon, user) -> how many of the marathon's accounts the user owns."""
        self.ready = asyncio.Event()
        self.closed = False

    # Reads ----------------------------------------------------------------------------------

    def notifier(self, marathon_id: str) -> Notifier:
        notifier = self.notifiers.get(marathon_id)
        if notifier is None:
            notifier = self.notifiers[marathon_id] = Notifier(closed=self.closed)
        return notifier

    def close(self) -> None:
        """The hub is drained (the server is shutting down): every reader is told, as the hub
        tells its own subscribers, instead of waiting for a change that will not come."""
        self.closed = True
        for notifier in self.notifiers.values():
            notifier.close()

    def takes_part(self, marathon_id: str, user: str | None) -> bool:
        """Whether ``user`` owns an account in the marathon (O(1))."""
        return user is not None and self._accounts_of.get((marathon_id, user), 0) > 0

    # The feed -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the feed until cancelled, rebuilding whenever it is lost."""
        while True:
            try:
                async with self.hub.subscribe(marathon_feed_topic(), FEED_CAPACITY) as feed:
                    # Subscribed first, then loaded: what is published meanwhile is applied
                    # again, which changes nothing (snapshots older than the board's are ignored).
                    self.rebuild(await self.store.load())
                    self.ready.set()
                    async for event in feed:
                        self.apply(event)
            except asyncio.CancelledError:
                raise
            except HubClosedError:
                self.close()
                return
            except HubError as exc:
                logger.warning("marathon feed lost (%s); rebuilding from the database", exc)
            except Exception:
                logger.exception("marathon boards failed; rebuilding from the database")
            await asyncio.sleep(1.0)

    def rebuild(self, state: MarathonState) -> None:
        self.marathons = {m.id: m for m in state.marathons}
        self.boards = {m.id: Leaderboard() for m in state.marathons}
        self.members = {m.id: {} for m in state.marathons}
        self._accounts_of = {}
        self.by_login = {}
        self.snapshots = dict(state.snapshots)
        for participant in state.participants:
            self._register(participant)
        for marathon_id in self.marathons:
            self.notifier(marathon_id).bump()

    def apply(self, event: Event) -> None:
        payload = event.payload
        if event.type == ACCOUNT_SNAPSHOTS:
            self._snapshots(SNAPSHOT_BATCH.decode(payload).snapshots)
        elif event.type == ACCOUNT_SNAPSHOT:
            self._snapshots((snapshot_from_payload(payload),))
        elif event.type == PARTICIPANT_ADDED:
            added = ADDED_PARTICIPANT.decode(payload)
            if added.snapshot is not None:
                self._remember(added.snapshot)
            participant = added.participant
            self._register(participant)
            self.notifier(participant.marathon_id).bump()
        elif event.type == PARTICIPANT_REMOVED:
            gone = REMOVED_PARTICIPANT.decode(payload)
            marathon_id, login = gone.marathon_id, int(gone.login)
            board = self.boards.get(marathon_id)
            removed = None if board is None else self.members[marathon_id].pop(login, None)
            if board is not None and removed is not None:
                self._count(marathon_id, removed.participant, -1)
                board.unregister(login)
                self.by_login.get(login, set()).discard(marathon_id)
                self.notifier(marathon_id).bump()
        elif event.type == MARATHON_CREATED:
            marathon = marathon_from_payload(payload)
            if marathon.id not in self.marathons:
                self.marathons[marathon.id] = marathon
                self.boards[marathon.id] = Leaderboard()
                self.members[marathon.id] = {}
                self.notifier(marathon.id).bump()
        else:
            logger.warning("unknown marathon feed event %r", event.type)

    def _register(self, participant: Participant) -> None:
        board = self.boards.get(participant.marathon_id)
        if board is None:
            return  # the marathon was deleted meanwhile
        members = self.members[participant.marathon_id]
        previous = members.get(participant.login)
        if previous is not None:
            self._count(participant.marathon_id, previous.participant, -1)
        members[participant.login] = participant
        self._count(participant.marathon_id, participant.participant, +1)
        self.by_login.setdefault(participant.login, set()).add(participant.marathon_id)
        board.register(participant.login, participant.registered_at, participant.initial_balance)
        snapshot = self.snapshots.get(participant.login)
        if snapshot is not None:
            board.update(snapshot)

    def _count(self, marathon_id: str, user: str, delta: int) -> None:
        key = (marathon_id, user)
        count = self._accounts_of.get(key, 0) + delta
        if count > 0:
            self._accounts_of[key] = count
        else:
            self._accounts_of.pop(key, None)

    def _remember(self, snapshot: AccountSnapshot) -> bool:
        """Keep ``snapshot`` as its account's latest, unless a newer one is known."""
        known = self.snapshots.get(snapshot.login)
        if known is not None and known.server_time >= snapshot.server_time:
            return False
        self.snapshots[snapshot.login] = snapshot
        return True

    def _snapshots(self, snapshots: Iterable[AccountSnapshot]) -> None:
        """Apply a batch, then wake each affected marathon's readers once."""
        moved: set[str] = set()
        for snapshot in snapshots:
            if not self._remember(snapshot):
                continue
            for marathon_id in self.by_login.get(snapshot.login, ()):
                self.boards[marathon_id].update(snapshot)
                moved.add(marathon_id)
        for marathon_id in moved:
            self.notifier(marathon_id).bump()
