"""The marathon feed's subscription streams: a marathon's leaderboard and one account's row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING

import strawberry

from api.feeds.marathons.types import AccountUpdate, Leaderboard, LeaderboardRow
from api.graphql.errors import StreamEndedError
from api.graphql.scalars import Long
from api.streaming.hub import HubError

if TYPE_CHECKING:
    from api.feeds.marathons.boards import MarathonBoards, Notifier
    from api.runtime.services import Services
    from domain import marathons as model


async def leaderboard_stream(
    services: Services, boards: MarathonBoards, marathon_id: str, top: int
) -> AsyncIterator[Leaderboard]:
    """The top rows at once, then again whenever they change, at most LEADERBOARD_MAX_HZ a
    second: changes in between are conflated (the newest top is what is sent)."""
    notifier = boards.notifier(marathon_id)
    interval = 1.0 / services.settings.leaderboard_max_hz
    last: list[model.LeaderboardRow] | None = None
    while True:
        seen = notifier.version
        board = boards.boards.get(marathon_id)
        rows = [] if board is None else board.top(top)
        if rows != last:
            last = rows
            yield Leaderboard(
                marathon_id=strawberry.ID(marathon_id),
                accounts=0 if board is None else len(board),
                rows=[LeaderboardRow.build(r) for r in rows],
            )
        await asyncio.sleep(interval)
        await _changed(notifier, seen)


async def account_stream(
    services: Services, boards: MarathonBoards, marathon_id: str, login: int
) -> AsyncIterator[AccountUpdate]:
    """The account's row at once, then whenever it changes (its figures, or its rank because
    others moved), at most LEADERBOARD_MAX_HZ a second."""
    notifier = boards.notifier(marathon_id)
    interval = 1.0 / services.settings.leaderboard_max_hz
    first = True
    last: model.LeaderboardRow | None = None
    while True:
        seen = notifier.version
        board = boards.boards.get(marathon_id)
        row = None if board is None else board.row(login)
        if first or row != last:
            first, last = False, row
            yield AccountUpdate(
                marathon_id=strawberry.ID(marathon_id),
                login=Long(login),
                row=None if row is None else LeaderboardRow.build(row),
            )
        await asyncio.sleep(interval)
        await _changed(notifier, seen)


async def _changed(notifier: Notifier, seen: int) -> None:
    """Until the board moves past ``seen``; the stream ends, as a hub subscription would, when
    the boards stop following the feed (SHUTTING_DOWN)."""
    try:
        await notifier.wait(seen)
    except HubError as exc:
        raise StreamEndedError(exc) from exc
