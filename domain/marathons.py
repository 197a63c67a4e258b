"""Trading marathons: competitions between MetaTrader accounts, ranked live by profit percentage.

Definitions (``../shared/DOMAIN.md``, "MetaTrader accounts and marathons"; amounts in the account
currency):

    equity          = balance + credit + floating profit
    free margin     = equity - margin
    margin level    = equity / margin * 100                 (margin 0 -> None)
    profit          = equity - initial balance              (the marathon's gain, not the floating
                                                             profit of open positions)
    profit %        = (equity - initial balance) / initial balance * 100
                                                            (initial balance <= 0 -> None)
    initial balance = the starting deposit, set explicitly by the organiser; otherwise derived
                      once, from the account's first snapshot, as balance - floating profit

A snapshot carries the collector's figures as MetaTrader reports them: ``equity`` and
``free_margin`` are not recomputed here (MetaTrader's own values obey the definitions above, up to
its rounding). Every division is guarded, and computed with :class:`~decimal.Decimal` in the
current context (28 significant digits by default), as one division and never rounded further:
``(equity - initial) * 100 / initial``, so two mathematically equal percentages compare equal.

Ranking. An account is ranked from its first snapshot on (registered, but without a snapshot, it
has no rank and no row). The order is deterministic (no venue documents more than registration
order):

1. accounts with a profit % before every account without one (initial balance <= 0);
2. among those with one: profit % descending, then profit descending, then registered at
   ascending (the earlier entrant first), then login ascending;
3. among those without one: profit descending, registered at ascending, login ascending.

Rank 1 is the leader. :class:`Leaderboard` keeps the accounts in a sorted list keyed in exactly
this order, so an update costs O(log n) (remove the old key, insert the new one) and a rank is a
binary search; nothing is ever re-sorted.

Deposits, withdrawals and credit during a marathon distort profit %, and are NOT detected. The
initial balance is fixed when it is set (or derived from the first snapshot) and never moves
afterwards. A snapshot holds no history of balance operations, so a deposit of D raises balance
and equity by D and shows as profit: ``D / initial * 100`` points of profit % (a 1,000 deposit on
a 10,000 start is +10%); a withdrawal shows as a loss the same way. Credit (a broker bonus) is part
of equity, so credit granted after the start also shows as profit. What we do about it:

- organisers should set the initial balance explicitly (``register(login, at, initial_balance)``)
  and forbid deposits and withdrawals during a marathon in its rules;
- a known deposit can be corrected by hand: registering the account again with an explicit
  initial balance raised by the deposit re-ranks it (an explicit initial balance always wins);
- detecting balance operations would need the collector to publish MetaTrader's balance deals;
  it does not today, and no heuristic is attempted.

The derived initial balance (``balance - floating profit``, the seed system's rule) is the
starting deposit only when the first snapshot has no open positions (floating profit 0). With
open positions it is not: balance 10,000 with +500 floating gives an initial balance of 9,500 and
equity 10,500, so the floating profit is counted twice (+1,000, 10.53%). Another reason to set
the initial balance explicitly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from domain.payloads import PayloadCodec

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator

_HUNDRED = Decimal(100)
_ZERO = Decimal(0)


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


def _require_finite(value: Decimal, what: str) -> None:
    if not value.is_finite():
        raise ValueError(f"{what} must be a finite number")


def _require_login(login: int) -> None:
    if isinstance(login, bool) or not isinstance(login, int) or login <= 0:
        raise ValueError("login must be a positive integer")


@dataclass(frozen=True, slots=True)
class Marathon:
    """A competition between accounts from ``starts_at`` (included) to ``ends_at`` (excluded)."""

    id: str
    name: str
    starts_at: datetime
    ends_at: datetime
    public: bool
    organiser: str

    def __post_init__(self) -> None:
        _require_aware(self.starts_at, "starts_at")
        _require_aware(self.ends_at, "ends_at")
        if self.ends_at <= self.starts_at:
            raise ValueError("a marathon must end after it starts")

    def is_running(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True, slots=True)
class Holding:
    """Another marathon that already holds a login: its organiser, and the user it names as the
    login's owner (the ``participant`` its organiser gave)."""

    organiser: str
    owner: str


@dataclass(frozen=True, slots=True)
class Enroller:
    """Who enrols a login: a user's ``sub`` and whether it is an admin. :data:`SYSTEM` is the
    server itself (the demo marathon)."""

    sub: str | None
    admin: bool = False


SYSTEM = Enroller(sub=None, admin=True)


def may_enrol(enroller: Enroller, elsewhere: Collection[Holding]) -> bool:
    """Whether ``enroller`` may show a login's figures through one more marathon, given the
    other marathons that hold it. Snapshots are kept per login, so every marathon that holds a
    login shows the same live figures: a second marathon is a second audience for them. A login
    no marathon holds is free; one that others hold needs an admin, the login's owner, or the
    organiser of every marathon that holds it (who decides already where it is shown)."""
    if enroller.admin or not elsewhere:
        return True
    if enroller.sub is None:
        return False
    return any(h.owner == enroller.sub for h in elsewhere) or all(
        h.organiser == enroller.sub for h in elsewhere
    )


class EnrolledElsewhereError(PermissionError):
    """The login is held by another marathon and the enroller may not show it through one more."""

    def __init__(self, login: int) -> None:
        super().__init__(f"login {login} is enrolled in another marathon")
        self.login = login


class TradeSide(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.Enum):
    """MetaTrader's pending order types."""

    BUY_LIMIT = "buy_limit"
    SELL_LIMIT = "sell_limit"
    BUY_STOP = "buy_stop"
    SELL_STOP = "sell_stop"
    BUY_STOP_LIMIT = "buy_stop_limit"
    SELL_STOP_LIMIT = "sell_stop_limit"


@dataclass(frozen=True, slots=True)
class OpenTrade:
    """An open position; ``profit`` is its floating profit in the account currency."""

    ticket: int
    symbol: str
    side: TradeSide
    volume: Decimal
    open_price: Decimal
    profit: Decimal

    def __post_init__(self) -> None:
        if self.ticket <= 0:
            raise ValueError("ticket must be positive")
        _require_finite(self.profit, "profit")
        if not (self.volume.is_finite() and self.volume > 0):
            raise ValueError("volume must be positive")
        if not (self.open_price.is_finite() and self.open_price > 0):
            raise ValueError("open price must be positive")


@dataclass(frozen=True, slots=True)
class PendingOrder:
    ticket: int
    symbol: str
    type: OrderType
    volume: Decimal
    price: Decimal

    def __post_init__(self) -> None:
        if self.ticket <= 0:
            raise ValueError("ticket must be positive")
        if not (self.volume.is_finite() and self.volume > 0):
            raise ValueError("volume must be positive")
        if not (self.price.is_finite() and self.price > 0):
            raise ValueError("price must be positive")


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """One account's state as the collector read it at ``server_time``. ``profit`` is the floating
    profit of the open positions; ``equity`` and ``free_margin`` are MetaTrader's figures."""

    login: int
    balance: Decimal
    equity: Decimal
    profit: Decimal
    margin: Decimal
    free_margin: Decimal
    server_time: datetime
    credit: Decimal = _ZERO
    open_positions: tuple[OpenTrade, ...] = ()
    pending_orders: tuple[PendingOrder, ...] = ()

    def __post_init__(self) -> None:
        _require_login(self.login)
        for name in ("balance", "equity", "profit", "margin", "free_margin", "credit"):
            _require_finite(getattr(self, name), name)
        if self.margin < 0:
            raise ValueError("margin must not be negative")
        _require_aware(self.server_time, "server_time")

    @property
    def margin_level(self) -> Decimal | None:
        """Equity over margin, in percent; None without margin."""
        if self.margin == 0:
            return None
        return self.equity * _HUNDRED / self.margin


def initial_balance_from(snapshot: AccountSnapshot) -> Decimal:
    """The seed system's derived initial balance: balance minus floating profit (see the module
    docstring for when that is not the starting deposit)."""
    return snapshot.balance - snapshot.profit


def profit_percentage(equity: Decimal, initial_balance: Decimal) -> Decimal | None:
    """``(equity - initial) / initial * 100``; None when the initial balance is <= 0."""
    if initial_balance <= 0:
        return None
    return (equity - initial_balance) * _HUNDRED / initial_balance


@dataclass(frozen=True, slots=True)
class LeaderboardRow:
    rank: int
    login: int
    profit: Decimal
    """Equity minus the initial balance."""
    profit_percentage: Decimal | None
    initial_balance: Decimal
    equity: Decimal
    balance: Decimal
    credit: Decimal
    margin: Decimal
    free_margin: Decimal
    margin_level: Decimal | None
    open_positions: tuple[OpenTrade, ...]
    pending_orders: tuple[PendingOrder, ...]
    registered_at: datetime
    updated_at: datetime
    """The server time of the snapshot the row shows."""

    @property
    def open_positions_count(self) -> int:
        return len(self.open_positions)

    @property
    def pending_orders_count(self) -> int:
        return len(self.pending_orders)


@dataclass(frozen=True, slots=True)
class Change:
    """What one register, update or unregister did to one account's rank (None: unranked)."""

    login: int
    old_rank: int | None
    new_rank: int | None

    @property
    def moved(self) -> bool:
        return self.old_rank != self.new_rank

    def moved_within(self, top: int) -> bool:
        """Whether the order of the first ``top`` accounts changed: the account entered or left
        them, or moved among them. Only this account changed its key, so when its rank is the same
        nobody else moved either, and when it changed, the accounts between the old and the new
        rank shifted by one: the top ``top`` changed exactly when the better of the two ranks is
        inside it."""
        if self.old_rank == self.new_rank:
            return False
        ranks = [r for r in (self.old_rank, self.new_rank) if r is not None]
        return min(ranks) <= top

    def visible_within(self, top: int) -> bool:
        """Whether a view of the first ``top`` rows changed: their order, or this account's figures
        while it is (or was) among them. A superset of :meth:`moved_within`."""
        return any(r is not None and r <= top for r in (self.old_rank, self.new_rank))


class UnknownAccountError(LookupError):
    """A snapshot for a login that is not registered in the marathon."""

    def __init__(self, login: int) -> None:
        super().__init__(f"Account {login} is not registered in this marathon")
        self.login = login


_Key = tuple[int, Decimal, Decimal, datetime, int]
"""(0 with a profit % else 1, -profit %, -profit, registered at, login): ascending is rank order."""


class _SortedKeys:
    """The typed subset of ``sortedcontainers.SortedList`` the leaderboard uses (it ships no
    type information)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: Any = SortedList()

    def __len__(self) -> int:
        size: int = len(self._keys)
        return size

    def add(self, key: _Key) -> None:
        self._keys.add(key)

    def remove(self, key: _Key) -> None:
        self._keys.remove(key)

    def position(self, key: _Key) -> int:
        """The 0-based position of a key that is in the list: O(log n)."""
        position: int = self._keys.bisect_left(key)
        return position

    def slice(self, start: int, stop: int) -> Iterator[_Key]:
        keys: Iterator[_Key] = self._keys.islice(start, stop)
        return keys


@dataclass(slots=True)
class _Account:
    registered_at: datetime
    initial_balance: Decimal | None
    explicit: bool
    snapshot: AccountSnapshot | None = None
    profit: Decimal = _ZERO
    profit_percentage: Decimal | None = None
    key: _Key | None = None


class Leaderboard:
    """One marathon's live ranking. ``len()`` counts the ranked accounts (those with a snapshot).
    Every register, update and unregister costs O(log n); ``rank`` is O(log n); ``top`` and
    ``page`` are O(log n + rows)."""

    def __init__(self) -> None:
        self._accounts: dict[int, _Account] = {}
        self._ranking = _SortedKeys()

    def __len__(self) -> int:
        return len(self._ranking)

    @property
    def registered(self) -> int:
        """How many accounts are registered, ranked or not."""
        return len(self._accounts)

    def is_registered(self, login: int) -> bool:
        return login in self._accounts

    def register(
        self, login: int, registered_at: datetime, initial_balance: Decimal | None = None
    ) -> Change:
        """Idempotent: registering an account again keeps its first ``registered_at``. An explicit
        ``initial_balance`` replaces any earlier one (derived or explicit) and re-ranks the
        account; without one, a second registration changes nothing."""
        _require_login(login)
        _require_aware(registered_at, "registered_at")
        if initial_balance is not None:
            _require_finite(initial_balance, "initial balance")
        account = self._accounts.get(login)
        if account is None:
            self._accounts[login] = _Account(
                registered_at, initial_balance, explicit=initial_balance is not None
            )
            return Change(login, None, None)
        if initial_balance is None or (
            account.explicit and account.initial_balance == initial_balance
        ):
            rank = self.rank(login)
            return Change(login, rank, rank)
        account.initial_balance = initial_balance
        account.explicit = True
        return self._rekey(login, account)

    def unregister(self, login: int) -> Change:
        """Removes the account (a login that is not registered: nothing happens); the accounts
        below it move up one rank."""
        account = self._accounts.pop(login, None)
        if account is None or account.key is None:
            return Change(login, None, None)
        old_rank = self._ranking.position(account.key) + 1
        self._ranking.remove(account.key)
        return Change(login, old_rank, None)

    def update(self, snapshot: AccountSnapshot) -> Change:
        """Applies the account's latest snapshot (in arrival order: ordering snapshots is the
        caller's job). The first one derives the initial balance if none was set."""
        account = self._accounts.get(snapshot.login)
        if account is None:
            raise UnknownAccountError(snapshot.login)
        if account.initial_balance is None:
            account.initial_balance = initial_balance_from(snapshot)
        account.snapshot = snapshot
        return self._rekey(snapshot.login, account)

    def rank(self, login: int) -> int | None:
        """1 for the leader; None for an account that is not registered or has no snapshot yet."""
        account = self._accounts.get(login)
        if account is None or account.key is None:
            return None
        return self._ranking.position(account.key) + 1

    def row(self, login: int) -> LeaderboardRow | None:
        rank = self.rank(login)
        if rank is None:
            return None
        return self._row(self._accounts[login], rank)

    def top(self, n: int) -> list[LeaderboardRow]:
        return self.page(0, n)

    def page(self, offset: int, limit: int) -> list[LeaderboardRow]:
        """The rows ranked ``offset + 1`` to ``offset + limit``."""
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        return [
            self._row(self._accounts[key[-1]], offset + i)
            for i, key in enumerate(self._ranking.slice(offset, offset + limit), start=1)
        ]

    def _rekey(self, login: int, account: _Account) -> Change:
        old_rank = None
        if account.key is not None:
            old_rank = self._ranking.position(account.key) + 1
            self._ranking.remove(account.key)
        snapshot, initial = account.snapshot, account.initial_balance
        if snapshot is None or initial is None:  # an explicit balance set before any snapshot
            account.key = None
            return Change(login, old_rank, None)
        profit = snapshot.equity - initial
        percentage = profit_percentage(snapshot.equity, initial)
        if percentage is None:
            key = (1, _ZERO, profit.copy_negate(), account.registered_at, login)
        else:
            key = (0, percentage.copy_negate(), profit.copy_negate(), account.registered_at, login)
        account.profit, account.profit_percentage, account.key = profit, percentage, key
        self._ranking.add(key)
        return Change(login, old_rank, self._ranking.position(key) + 1)

    def _row(self, account: _Account, rank: int) -> LeaderboardRow:
        snapshot, initial = account.snapshot, account.initial_balance
        assert snapshot is not None
        assert initial is not None
        return LeaderboardRow(
            rank=rank,
            login=snapshot.login,
            profit=account.profit,
            profit_percentage=account.profit_percentage,
            initial_balance=initial,
            equity=snapshot.equity,
            balance=snapshot.balance,
            credit=snapshot.credit,
            margin=snapshot.margin,
            free_margin=snapshot.free_margin,
            margin_level=snapshot.margin_level,
            open_positions=snapshot.open_positions,
            pending_orders=snapshot.pending_orders,
            registered_at=account.registered_at,
            updated_at=snapshot.server_time,
        )


SNAPSHOT = PayloadCodec(
    AccountSnapshot,
    keys={"open_positions": "positions", "pending_orders": "orders"},
    fields=(
        *("login", "balance", "equity", "profit", "margin", "free_margin", "credit"),
        *("server_time", "open_positions", "pending_orders"),
    ),
)
"""An account snapshot's payload (events and the stored latest snapshot)."""
OPEN_TRADE = PayloadCodec(OpenTrade)
PENDING_ORDER = PayloadCodec(PendingOrder)
MARATHON = PayloadCodec(Marathon)
STORED_ROW = PayloadCodec(
    LeaderboardRow,
    fields=(
        *("rank", "login", "profit", "profit_percentage", "equity", "balance", "margin"),
        *("free_margin", "open_positions_count", "pending_orders_count", "updated_at"),
    ),
)
"""A row of a stored leaderboard: the figures, the counts, no positions or orders (encoded only:
the schema reads it back as its own row type)."""


def snapshot_to_payload(snapshot: AccountSnapshot) -> dict[str, Any]:
    """An account snapshot as JSON values (decimals as strings), for events."""
    return SNAPSHOT.encode(snapshot)


def snapshot_from_payload(payload: dict[str, Any]) -> AccountSnapshot:
    return SNAPSHOT.decode(payload)


# --- the marathon feed's events (cluster-wide topic marathon-feed) -----------------------------

MARATHON_CREATED = "marathon.created"
PARTICIPANT_ADDED = "participant.added"
PARTICIPANT_REMOVED = "participant.removed"
ACCOUNT_SNAPSHOT = "account.snapshot"
"""One stored snapshot (written before batched ingest; still read from history)."""
ACCOUNT_SNAPSHOTS = "account.snapshots"
"""The snapshots one ingest batch stored (:class:`SnapshotBatch`)."""


@dataclass(frozen=True, slots=True)
class Participant:
    marathon_id: str
    login: int
    participant: str
    """The user (token ``sub``) who owns the account."""
    initial_balance: Decimal | None
    initial_explicit: bool
    registered_at: datetime

    def to_payload(self) -> dict[str, Any]:
        return PARTICIPANT.encode(self)


PARTICIPANT = PayloadCodec(Participant)


def marathon_payload(marathon: Marathon) -> dict[str, Any]:
    return MARATHON.encode(marathon)


def marathon_from_payload(payload: dict[str, Any]) -> Marathon:
    return MARATHON.decode(payload)


@dataclass(frozen=True, slots=True)
class ParticipantAdded:
    """A participant.added event's payload: the participant, and its account's latest snapshot
    if one is stored (else the key is absent, not null)."""

    participant: Participant
    snapshot: AccountSnapshot | None = None


ADDED_PARTICIPANT = PayloadCodec(ParticipantAdded, omit_none=True)


@dataclass(frozen=True, slots=True)
class ParticipantRemoved:
    """A participant.removed event's payload."""

    marathon_id: str
    login: int


REMOVED_PARTICIPANT = PayloadCodec(ParticipantRemoved)


@dataclass(frozen=True, slots=True)
class SnapshotBatch:
    """An account.snapshots event's payload: what one ingest batch (a RabbitMQ window, or the
    list form of the mutation) stored, in login order, to be applied in the order given: for each
    login its newest snapshot of the batch, preceded by the batch's first one of that login when
    the account had no snapshot stored before (that first snapshot derives the initial balance,
    as it would have had it been stored alone). One event for the whole batch instead of one per
    snapshot: at tens of thousands of snapshots a second, the per-event cost of numbering,
    broadcasting and applying dominates."""

    snapshots: tuple[AccountSnapshot, ...]


SNAPSHOT_BATCH = PayloadCodec(SnapshotBatch)


@dataclass(frozen=True, slots=True)
class LoginSnapshots:
    """One login's snapshots in a batch: the first to arrive, and the newest (the first of equal
    ``server_time``: a second copy is a redelivery). Often the same snapshot."""

    first: AccountSnapshot
    newest: AccountSnapshot


def by_login(snapshots: Iterable[AccountSnapshot]) -> list[LoginSnapshots]:
    """A batch's snapshots per login, in login order: a batch stores each login's newest once,
    and derives a missing initial balance from its first."""
    seen: dict[int, LoginSnapshots] = {}
    for snapshot in snapshots:
        known = seen.get(snapshot.login)
        if known is None:
            seen[snapshot.login] = LoginSnapshots(snapshot, snapshot)
        elif known.newest.server_time < snapshot.server_time:
            seen[snapshot.login] = LoginSnapshots(known.first, snapshot)
    return [seen[login] for login in sorted(seen)]


def participant_added_payload(
    participant: Participant, snapshot: AccountSnapshot | None
) -> dict[str, Any]:
    return ADDED_PARTICIPANT.encode(ParticipantAdded(participant, snapshot))


def participant_removed_payload(marathon_id: str, login: int) -> dict[str, Any]:
    return REMOVED_PARTICIPANT.encode(ParticipantRemoved(marathon_id, login))
