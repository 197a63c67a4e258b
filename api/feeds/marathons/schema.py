"""The marathon feed: trading competitions between MetaTrader accounts, their live leaderboards
ranked by profit percentage, each account's row, and the organisers' and collectors' mutations."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import strawberry

from api.auth import Role
from api.feeds.marathons.store import MarathonExistsError
from api.feeds.marathons.stream import account_stream, leaderboard_stream
from api.feeds.marathons.types import (
    AccountUpdate,
    Leaderboard,
    LeaderboardRow,
    PendingOrderType,
    TradeSide,
    percent_shown,
)
from api.graphql.access import checked
from api.graphql.context import Info  # noqa: TC001
from api.graphql.errors import ClientError
from api.graphql.permissions import ForbiddenError, limit_mutations, require_role
from api.graphql.scalars import Long
from domain import marathons as model

if TYPE_CHECKING:
    from api.auth import Principal
    from api.feeds.marathons.boards import MarathonBoards
    from api.runtime.services import Services


BOARDS_READY_TIMEOUT_S = 10.0


class UnknownMarathonError(ClientError):
    """A marathon that does not exist, or one the caller may not see: the same answer for both,
    so that a private marathon's id cannot be found by asking."""

    code = "UNKNOWN_MARATHON"

    def __init__(self, marathon_id: str) -> None:
        super().__init__(f"Unknown marathon {marathon_id!r}", marathonId=marathon_id)


class EnrolledElsewhereGraphQLError(ClientError):
    code = "ENROLLED_ELSEWHERE"

    def __init__(self, login: int) -> None:
        super().__init__(
            f"login {login} is enrolled in another marathon: only its owner, the organiser of "
            "every marathon that holds it, or an admin may enrol it in one more",
            login=login,
        )


@strawberry.type(name="Marathon", description="A trading competition between accounts.")
class MarathonType:
    id: strawberry.ID
    name: str
    starts_at: datetime
    ends_at: datetime
    public: bool = strawberry.field(
        description="Public marathons are for everyone; private ones for their participants, "
        "organiser and admins."
    )
    organiser: str
    running: bool
    accounts: int = strawberry.field(description="Participants with at least one snapshot.")

    @classmethod
    def build(cls, marathon: model.Marathon, boards: MarathonBoards) -> MarathonType:
        board = boards.boards.get(marathon.id)
        return cls(
            id=strawberry.ID(marathon.id),
            name=marathon.name,
            starts_at=marathon.starts_at,
            ends_at=marathon.ends_at,
            public=marathon.public,
            organiser=marathon.organiser,
            running=marathon.is_running(datetime.now(marathon.starts_at.tzinfo)),
            accounts=0 if board is None else len(board),
        )


@strawberry.type(description="A row of a stored leaderboard (no positions or orders).")
class StoredLeaderboardRow:
    rank: int
    login: Long
    profit: Decimal
    profit_percentage: Decimal | None
    equity: Decimal
    balance: Decimal
    margin: Decimal
    free_margin: Decimal
    open_positions_count: int
    pending_orders_count: int
    updated_at: datetime


@strawberry.type(description="A leaderboard as it was stored at takenAt.")
class StoredLeaderboard:
    marathon_id: strawberry.ID
    taken_at: datetime
    accounts: int
    rows: list[StoredLeaderboardRow]


def _stored_row(p: dict[str, Any]) -> StoredLeaderboardRow:
    row = _read_stored_row(p)
    row.profit_percentage = percent_shown(row.profit_percentage)
    return row


_read_stored_row = model.STORED_ROW.reader(StoredLeaderboardRow)


async def _boards(services: Services) -> MarathonBoards:
    boards = services.boards
    if not boards.ready.is_set():
        try:
            await asyncio.wait_for(boards.ready.wait(), BOARDS_READY_TIMEOUT_S)
        except TimeoutError:
            raise ClientError(
                "the leaderboards are not loaded yet; try again", code="UPSTREAM_UNAVAILABLE"
            ) from None
    return boards


def may_see(principal: Principal, marathon: model.Marathon, boards: MarathonBoards) -> bool:
    if marathon.public or principal.role is Role.ADMIN:
        return True
    if principal.anonymous:
        return False
    return principal.sub == marathon.organiser or boards.takes_part(marathon.id, principal.sub)


async def visible(info: Info, marathon_id: str) -> tuple[MarathonBoards, model.Marathon]:
    """The marathon, if the caller may see it: public, or the caller takes part, organises it or
    is an admin. Anything else is refused before any data, exactly as an id that does not exist
    (signed in or not): telling "private" from "unknown" would tell which private ids exist."""
    boards = await _boards(info.context.services)
    marathon = boards.marathons.get(marathon_id)

    def seen(principal: Principal) -> model.Marathon:
        if marathon is None or not may_see(principal, marathon, boards):
            raise UnknownMarathonError(marathon_id)
        return marathon

    return boards, checked(info.context.principal, seen)


async def organised(info: Info, marathon_id: str) -> model.Marathon:
    """The marathon, if the caller organises it or is an admin. One it may not see is unknown to
    it; one it sees (public, or it takes part) is forbidden."""
    _, marathon = await visible(info, marathon_id)
    principal = info.context.principal
    if principal.role is not Role.ADMIN and principal.sub != marathon.organiser:
        raise ForbiddenError(f"only the organiser of {marathon_id!r} (or an admin) may do that")
    return marathon


def _check_top(top: int, services: Services) -> None:
    most = services.settings.leaderboard_top_max
    if not 1 <= top <= most:
        raise ClientError(f"top must be between 1 and {most}")


def _member(boards: MarathonBoards, marathon_id: str, login: int) -> None:
    if login not in boards.members.get(marathon_id, {}):
        raise ClientError(
            f"login {login} does not take part in {marathon_id!r}", code="UNKNOWN_ACCOUNT"
        )


@strawberry.type
class MarathonQuery:
    @strawberry.field(description="The marathons the caller may see, the newest first.")
    async def marathons(self, info: Info) -> list[MarathonType]:
        boards = await _boards(info.context.services)
        principal = info.context.principal
        shown = [m for m in boards.marathons.values() if may_see(principal, m, boards)]
        shown.sort(key=lambda m: (m.starts_at, m.id), reverse=True)
        return [MarathonType.build(m, boards) for m in shown]

    @strawberry.field
    async def marathon(self, info: Info, id: strawberry.ID) -> MarathonType:
        boards, marathon = await visible(info, str(id))
        return MarathonType.build(marathon, boards)

    @strawberry.field(description="A page of the leaderboard, from rank offset + 1.")
    async def leaderboard_page(
        self, info: Info, marathon_id: strawberry.ID, offset: int = 0, limit: int = 100
    ) -> Leaderboard:
        boards, marathon = await visible(info, str(marathon_id))
        if offset < 0 or not 1 <= limit <= 1000:
            raise ClientError("offset must be at least 0 and limit between 1 and 1000")
        board = boards.boards[marathon.id]
        return Leaderboard(
            marathon_id=marathon_id,
            accounts=len(board),
            rows=[LeaderboardRow.build(r) for r in board.page(offset, limit)],
        )

    @strawberry.field(description="One account's row; null before its first snapshot.")
    async def account_row(
        self, info: Info, marathon_id: strawberry.ID, login: Long
    ) -> LeaderboardRow | None:
        boards, marathon = await visible(info, str(marathon_id))
        _member(boards, marathon.id, login)
        row = boards.boards[marathon.id].row(login)
        return None if row is None else LeaderboardRow.build(row)

    @strawberry.field(
        description="The leaderboard as it was stored at or before `at` (stored every "
        "LEADERBOARD_SNAPSHOT_INTERVAL_S while the marathon runs); null before the first."
    )
    async def leaderboard_at(
        self, info: Info, marathon_id: strawberry.ID, at: datetime, top: int = 100
    ) -> StoredLeaderboard | None:
        _, marathon = await visible(info, str(marathon_id))
        if not 1 <= top <= 1000:
            raise ClientError("top must be between 1 and 1000")
        if at.tzinfo is None:
            raise ClientError("at must carry a time zone")
        stored = await info.context.services.marathon_store.leaderboard_at(marathon.id, at)
        if stored is None:
            return None
        taken_at, accounts, rows = stored
        return StoredLeaderboard(
            marathon_id=marathon_id,
            taken_at=taken_at,
            accounts=accounts,
            rows=[_stored_row(r) for r in rows[:top]],
        )


@strawberry.type
class MarathonSubscription:
    @strawberry.subscription(
        description="The top of the leaderboard at once, then a new one whenever anything in it "
        "changes, at most LEADERBOARD_MAX_HZ a second."
    )
    async def marathon_leaderboard(
        self, info: Info, marathon_id: strawberry.ID, top: int = 100
    ) -> AsyncIterator[Leaderboard]:
        services = info.context.services
        _check_top(top, services)
        boards, marathon = await visible(info, str(marathon_id))
        return leaderboard_stream(services, boards, marathon.id, top)

    @strawberry.subscription(
        description="One account's row and rank at once, then on every change (its own "
        "figures, or its rank as others move), at most LEADERBOARD_MAX_HZ a second."
    )
    async def account_updates(
        self, info: Info, marathon_id: strawberry.ID, login: Long
    ) -> AsyncIterator[AccountUpdate]:
        boards, marathon = await visible(info, str(marathon_id))
        _member(boards, marathon.id, login)
        return account_stream(info.context.services, boards, marathon.id, login)


@strawberry.input
class CreateMarathonInput:
    name: str
    starts_at: datetime
    ends_at: datetime
    public: bool = True
    id: strawberry.ID | None = strawberry.field(
        default=None,
        description="For admins only: letters, digits, '-' and '_'. Omitted (the only choice "
        "for users): the server generates one.",
    )


@strawberry.input
class AddParticipantInput:
    marathon_id: strawberry.ID
    login: Long
    participant: str = strawberry.field(description="The user (token sub) who owns the account.")
    initial_balance: Decimal | None = strawberry.field(
        default=None,
        description="The starting deposit; omitted: the first snapshot's balance minus its "
        "floating profit.",
    )


@strawberry.input
class OpenTradeInput:
    ticket: Long
    symbol: str
    type: TradeSide
    volume: Decimal
    price_open: Decimal
    profit: Decimal


@strawberry.input
class PendingOrderInput:
    ticket: Long
    symbol: str
    type: PendingOrderType
    volume: Decimal
    price_open: Decimal


@strawberry.input(
    description="An account snapshot, the same fields as the RabbitMQ message "
    "(docs/marathon-ingest.md) in camelCase."
)
class AccountSnapshotInput:
    login: Long
    balance: Decimal
    equity: Decimal
    profit: Decimal
    margin: Decimal
    free_margin: Decimal
    server_time: datetime
    credit: Decimal = Decimal(0)
    positions: list[OpenTradeInput] = strawberry.field(default_factory=list)
    orders: list[PendingOrderInput] = strawberry.field(default_factory=list)


@strawberry.type
class IngestSnapshotResult:
    login: Long
    stored: bool = strawberry.field(
        description="False when a snapshot as new was already stored (nothing was announced)."
    )


@strawberry.type
class IngestSnapshotsResult:
    stored: int = strawberry.field(
        description="Snapshots stored, each its account's newest, and announced once."
    )
    ignored: int = strawberry.field(
        description="Snapshots not stored (nothing announced): one as new was stored already "
        "(a resend, a late arrival), or the list held a newer one, or an equal one earlier, of "
        "the same login."
    )


INGEST_LIST_MAX = 500
"""Most snapshots one ``ingestAccountSnapshots`` call takes: one transaction each call, and the
request (variables included) must fit ``MAX_MESSAGE_BYTES`` (256 KiB by default: 500 snapshots
with a few positions each)."""

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


GENERATED_ID_ATTEMPTS = 3
"""A generated id has 80 random bits; should one be taken (an admin chose it), draw again."""


def generated_marathon_id() -> str:
    return f"m-{secrets.token_hex(10)}"


def _enroller(principal: Principal) -> model.Enroller:
    return model.Enroller(sub=principal.sub, admin=principal.role is Role.ADMIN)


@strawberry.type
class MarathonMutation:
    @strawberry.mutation(description="Create a marathon organised by the caller.")
    async def create_marathon(self, info: Info, input: CreateMarathonInput) -> MarathonType:
        principal = limit_mutations(info)
        require_role(principal, Role.USER, Role.ADMIN, what="createMarathon")
        assert principal.sub is not None
        # Ids are one namespace: were a user to choose one, "already exists" would tell it which
        # private ids exist. Admins see every marathon, so for them it tells nothing.
        if input.id is not None and principal.role is not Role.ADMIN:
            raise ClientError("only admins choose a marathon's id: omit id and one is generated")
        if input.id is not None and not _ID.match(str(input.id)):
            raise ClientError("id must be 1 to 64 letters, digits, '-' or '_'")
        name = input.name.strip()
        if not 1 <= len(name) <= 200:
            raise ClientError("name must be 1 to 200 characters")
        services = info.context.services
        for _ in range(1 if input.id is not None else GENERATED_ID_ATTEMPTS):
            marathon_id = str(input.id) if input.id is not None else generated_marathon_id()
            try:
                marathon = model.Marathon(
                    id=marathon_id,
                    name=name,
                    starts_at=input.starts_at,
                    ends_at=input.ends_at,
                    public=input.public,
                    organiser=principal.sub,
                )
            except ValueError as exc:
                raise ClientError(f"invalid marathon: {exc}") from None
            try:
                await services.marathon_desk.create(marathon)
            except MarathonExistsError:
                continue
            return MarathonType.build(marathon, await _boards(services))
        raise ClientError(f"marathon {marathon_id!r} already exists", code="MARATHON_EXISTS")

    @strawberry.mutation(description="Add an account to a marathon (its organiser or admins).")
    async def add_participant(self, info: Info, input: AddParticipantInput) -> bool:
        principal = limit_mutations(info)
        marathon = await organised(info, str(input.marathon_id))
        participant = input.participant.strip()
        if not 1 <= len(participant) <= 200:
            raise ClientError("participant must be 1 to 200 characters")
        if input.login <= 0:
            raise ClientError("login must be positive")
        initial = input.initial_balance
        if initial is not None and (not initial.is_finite() or not 0 < initial < 10**15):
            raise ClientError("initialBalance must be a positive number")
        try:
            await info.context.services.marathon_desk.add_participant(
                marathon.id, input.login, participant, initial, _enroller(principal)
            )
        except model.EnrolledElsewhereError:
            raise EnrolledElsewhereGraphQLError(input.login) from None
        return True

    @strawberry.mutation(description="Remove an account from a marathon; false if it was not in.")
    async def remove_participant(self, info: Info, marathon_id: strawberry.ID, login: Long) -> bool:
        limit_mutations(info)
        marathon = await organised(info, str(marathon_id))
        return await info.context.services.marathon_desk.remove_participant(marathon.id, login)

    @strawberry.mutation(
        description="For the service role: an account snapshot, as a collector without RabbitMQ "
        "sends it. Stored, then every leaderboard it is on moves."
    )
    async def ingest_account_snapshot(
        self, info: Info, input: AccountSnapshotInput
    ) -> IngestSnapshotResult:
        principal = limit_mutations(info)
        require_role(principal, Role.SERVICE, what="ingestAccountSnapshot")
        try:
            snapshot = snapshot_from_input(input)
        except ValueError as exc:
            raise ClientError(f"invalid snapshot: {exc}") from None
        stored = await info.context.services.marathon_desk.ingest(snapshot)
        return IngestSnapshotResult(login=input.login, stored=stored)

    @strawberry.mutation(
        description="For the service role: a list of account snapshots (at most "
        f"{INGEST_LIST_MAX}), stored in one transaction, then every leaderboard they are on moves "
        "once. All or nothing: one invalid snapshot (the error names its index) and none is "
        "stored. Each login's newest snapshot is stored unless one as new is stored already."
    )
    async def ingest_account_snapshots(
        self, info: Info, snapshots: list[AccountSnapshotInput]
    ) -> IngestSnapshotsResult:
        principal = limit_mutations(info)
        require_role(principal, Role.SERVICE, what="ingestAccountSnapshots")
        if len(snapshots) > INGEST_LIST_MAX:
            raise ClientError(
                f"at most {INGEST_LIST_MAX} snapshots in one call (got {len(snapshots)}): "
                "send the others in another call"
            )
        parsed = []
        for index, input in enumerate(snapshots):
            try:
                parsed.append(snapshot_from_input(input))
            except ValueError as exc:
                raise ClientError(
                    f"invalid snapshot at index {index} (login {input.login}): {exc}",
                    index=index,
                ) from None
        stored = await info.context.services.marathon_desk.ingest_many(parsed)
        return IngestSnapshotsResult(stored=stored, ignored=len(parsed) - stored)


def snapshot_from_input(input: AccountSnapshotInput) -> model.AccountSnapshot:
    if input.login <= 0:
        raise ValueError("login must be positive")
    return model.AccountSnapshot(
        login=input.login,
        balance=input.balance,
        equity=input.equity,
        profit=input.profit,
        margin=input.margin,
        free_margin=input.free_margin,
        credit=input.credit,
        server_time=input.server_time,
        open_positions=tuple(
            model.OpenTrade(
                ticket=t.ticket,
                symbol=t.symbol,
                side=t.type,
                volume=t.volume,
                open_price=t.price_open,
                profit=t.profit,
            )
            for t in input.positions
        ),
        pending_orders=tuple(
            model.PendingOrder(
                ticket=o.ticket,
                symbol=o.symbol,
                type=o.type,
                volume=o.volume,
                price=o.price_open,
            )
            for o in input.orders
        ),
    )
