"""Marathon accounts and the live leaderboard against hand-computed cases, and the incremental
ranking against a full sort as a property."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.marathons import (
    STORED_ROW,
    SYSTEM,
    AccountSnapshot,
    Change,
    Enroller,
    Holding,
    Leaderboard,
    LeaderboardRow,
    Marathon,
    OpenTrade,
    OrderType,
    PendingOrder,
    TradeSide,
    UnknownAccountError,
    by_login,
    initial_balance_from,
    may_enrol,
    profit_percentage,
)

D = Decimal
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def snap(
    login: int,
    balance: str,
    profit: str = "0",
    credit: str = "0",
    margin: str = "0",
    at: datetime = T0,
    positions: tuple[OpenTrade, ...] = (),
    orders: tuple[PendingOrder, ...] = (),
) -> AccountSnapshot:
    """A snapshot whose equity and free margin follow the definitions."""
    equity = D(balance) + D(credit) + D(profit)
    return AccountSnapshot(
        login=login,
        balance=D(balance),
        equity=equity,
        profit=D(profit),
        margin=D(margin),
        free_margin=equity - D(margin),
        server_time=at,
        credit=D(credit),
        open_positions=positions,
        pending_orders=orders,
    )


def board(*accounts: tuple[int, str, str], at: datetime = T0) -> Leaderboard:
    """Accounts as (login, explicit initial balance, equity as a flat balance), registered a
    second apart in the order given."""
    leaderboard = Leaderboard()
    for i, (login, initial, equity) in enumerate(accounts):
        leaderboard.register(login, at + timedelta(seconds=i), D(initial))
        leaderboard.update(snap(login, equity))
    return leaderboard


def logins(leaderboard: Leaderboard) -> list[int]:
    return [row.login for row in leaderboard.top(len(leaderboard))]


# -- marathons and snapshots -----------------------------------------------------------------------


def test_marathon_runs_from_start_to_end_excluded() -> None:
    marathon = Marathon("m1", "March sprint", T0, T0 + timedelta(days=7), True, "acme")
    assert not marathon.is_running(T0 - timedelta(seconds=1))
    assert marathon.is_running(T0)
    assert marathon.is_running(T0 + timedelta(days=7) - timedelta(microseconds=1))
    assert not marathon.is_running(T0 + timedelta(days=7))


@pytest.mark.parametrize("ends", [T0, T0 - timedelta(hours=1)])
def test_marathon_must_end_after_it_starts(ends: datetime) -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        Marathon("m1", "March sprint", T0, ends, False, "acme")


def test_marathon_times_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Marathon("m1", "x", datetime(2026, 3, 2), datetime(2026, 3, 9), False, "acme")


def test_snapshot_margin_level_by_hand() -> None:
    s = snap(1, "10000", profit="250", credit="500", margin="2000")
    assert s.equity == D("10750")
    assert s.free_margin == D("8750")
    assert s.margin_level == D("537.5")  # 10,750 / 2,000 * 100
    assert snap(1, "10000", margin="0").margin_level is None


@pytest.mark.parametrize("login", [0, -5, True])
def test_snapshot_login_must_be_positive(login: int) -> None:
    with pytest.raises(ValueError, match="login"):
        snap(login, "100")


def test_snapshot_rejects_bad_figures() -> None:
    good = snap(1, "100")
    with pytest.raises(ValueError, match="finite"):
        AccountSnapshot(1, D("NaN"), D(100), D(0), D(0), D(100), T0)
    with pytest.raises(ValueError, match="margin"):
        AccountSnapshot(1, D(100), D(100), D(0), D(-1), D(101), T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        AccountSnapshot(1, D(100), D(100), D(0), D(0), D(100), datetime(2026, 3, 2))
    assert good.credit == 0
    assert good.open_positions == ()


def test_trades_and_orders_validate() -> None:
    with pytest.raises(ValueError, match="volume"):
        OpenTrade(1, "EURUSD", TradeSide.BUY, D(0), D("1.08"), D(0))
    with pytest.raises(ValueError, match="price"):
        PendingOrder(2, "EURUSD", OrderType.BUY_LIMIT, D("0.1"), D(0))


def test_initial_balance_from_first_snapshot_is_balance_minus_profit() -> None:
    assert initial_balance_from(snap(1, "10000", profit="500")) == D("9500")
    assert initial_balance_from(snap(1, "10000", profit="-300")) == D("10300")


def test_profit_percentage_is_one_unrounded_division() -> None:
    assert profit_percentage(D("11500"), D("10000")) == D("15")
    assert profit_percentage(D("4000"), D("5000")) == D("-20")
    assert profit_percentage(D("4"), D("3")) == D(100) / D(3)  # 33.33... to 28 digits
    assert profit_percentage(D("100"), D("0")) is None
    assert profit_percentage(D("100"), D("-1")) is None


# -- ranking ---------------------------------------------------------------------------------------


def test_ranked_by_profit_percentage_by_hand() -> None:
    leaderboard = board((1, "10000", "11500"), (2, "5000", "4000"), (3, "2000", "2500"))
    rows = leaderboard.top(3)
    assert [(r.rank, r.login) for r in rows] == [(1, 3), (2, 1), (3, 2)]
    assert [(r.profit, r.profit_percentage) for r in rows] == [
        (D("500"), D("25")),  # 500 / 2,000
        (D("1500"), D("15")),  # 1,500 / 10,000
        (D("-1000"), D("-20")),  # -1,000 / 5,000
    ]
    assert [leaderboard.rank(login) for login in (1, 2, 3)] == [2, 3, 1]
    assert len(leaderboard) == 3


def test_row_carries_the_snapshot() -> None:
    leaderboard = Leaderboard()
    leaderboard.register(7, T0, D("10000"))
    trade = OpenTrade(11, "XAUUSD", TradeSide.SELL, D("0.5"), D("2150.3"), D("-120"))
    order = PendingOrder(12, "EURUSD", OrderType.SELL_STOP, D("1"), D("1.0750"))
    at = T0 + timedelta(hours=1)
    leaderboard.update(
        snap(7, "10500", profit="-120", credit="100", margin="400", at=at, positions=(trade,))
    )
    leaderboard.update(
        snap(7, "10500", profit="-120", credit="100", margin="500", at=at, orders=(order,))
    )
    row = leaderboard.row(7)
    assert row is not None
    assert row.rank == 1
    assert row.equity == D("10480")
    assert row.profit == D("480")
    assert row.profit_percentage == D("4.8")
    assert row.free_margin == D("9980")
    assert row.margin_level == D("2096")  # 10,480 / 500 * 100
    assert row.open_positions == ()
    assert row.pending_orders == (order,)
    assert (row.open_positions_count, row.pending_orders_count) == (0, 1)
    assert row.initial_balance == D("10000")
    assert (row.registered_at, row.updated_at) == (T0, at)
    assert leaderboard.row(8) is None


def test_first_snapshot_derives_the_initial_balance_once() -> None:
    leaderboard = Leaderboard()
    leaderboard.register(1, T0)
    change = leaderboard.update(snap(1, "10000", profit="500"))  # equity 10,500
    assert change == Change(1, None, 1)
    row = leaderboard.row(1)
    assert row is not None
    assert row.initial_balance == D("9500")
    assert row.profit == D("1000")
    assert row.profit_percentage == D("100000") / D("9500")  # 10.526...%
    leaderboard.update(snap(1, "12000"))  # later snapshots never move the initial balance
    row = leaderboard.row(1)
    assert row is not None
    assert row.initial_balance == D("9500")
    assert row.profit == D("2500")


def test_explicit_initial_balance_wins() -> None:
    leaderboard = Leaderboard()
    leaderboard.register(1, T0, D("10000"))
    leaderboard.update(snap(1, "12000", profit="1000"))  # derived would be 11,000
    row = leaderboard.row(1)
    assert row is not None
    assert row.initial_balance == D("10000")
    assert row.profit_percentage == D("30")


def test_explicit_initial_balance_set_later_replaces_the_derived_one_and_reranks() -> None:
    leaderboard = Leaderboard()
    leaderboard.register(1, T0)
    leaderboard.register(2, T0, D("10000"))
    leaderboard.update(snap(1, "11000"))  # derived 11,000: 0%
    leaderboard.update(snap(2, "10500"))  # 5%
    assert logins(leaderboard) == [2, 1]
    change = leaderboard.register(1, T0 + timedelta(days=1), D("10000"))  # now 10%
    assert change == Change(1, 2, 1)
    assert logins(leaderboard) == [1, 2]
    assert leaderboard.register(1, T0, D("10000")) == Change(1, 1, 1)  # same again: nothing


def test_register_is_idempotent_and_keeps_the_first_time() -> None:
    leaderboard = Leaderboard()
    leaderboard.register(5, T0, D("1000"))
    leaderboard.register(4, T0 + timedelta(minutes=1), D("1000"))
    assert leaderboard.register(5, T0 + timedelta(minutes=2)) == Change(5, None, None)
    leaderboard.update(snap(5, "1100"))
    leaderboard.update(snap(4, "1100"))
    assert logins(leaderboard) == [5, 4]  # 5 still registered first
    assert leaderboard.registered == 2


def test_registered_without_snapshot_is_unranked() -> None:
    leaderboard = board((1, "1000", "1200"))
    leaderboard.register(2, T0, D("1000"))
    assert len(leaderboard) == 1
    assert leaderboard.registered == 2
    assert leaderboard.is_registered(2)
    assert leaderboard.rank(2) is None
    assert leaderboard.row(2) is None
    assert logins(leaderboard) == [1]


def test_tie_broken_by_profit_then_registration_then_login() -> None:
    # 1 and 2: both +10%, 2 made more money. 3 and 4: the same % and profit, 4 registered first.
    # 5 and 6: everything equal but the login.
    leaderboard = Leaderboard()
    leaderboard.register(1, T0, D("10000"))
    leaderboard.register(2, T0, D("20000"))
    leaderboard.register(3, T0 + timedelta(minutes=5), D("1000"))
    leaderboard.register(4, T0 + timedelta(minutes=1), D("1000"))
    leaderboard.register(6, T0, D("1000"))
    leaderboard.register(5, T0, D("1000"))
    for s in (
        snap(1, "11000"),
        snap(2, "22000"),
        snap(3, "1050"),
        snap(4, "1050"),
        snap(5, "1020"),
        snap(6, "1020"),
    ):
        leaderboard.update(s)
    assert logins(leaderboard) == [2, 1, 4, 3, 5, 6]


def test_accounts_without_profit_percentage_rank_last() -> None:
    leaderboard = Leaderboard()
    leaderboard.register(1, T0, D("10000"))  # -50%
    leaderboard.register(2, T0, D("0"))  # no %: profit 5,000
    leaderboard.register(3, T0)  # derived 100 - 200 = -100: no %, profit 400
    leaderboard.register(4, T0 - timedelta(minutes=1), D("-100"))  # no %: profit 400, earlier
    leaderboard.update(snap(1, "5000"))
    leaderboard.update(snap(2, "5000"))
    leaderboard.update(snap(3, "100", profit="200"))
    leaderboard.update(snap(4, "300"))
    assert logins(leaderboard) == [1, 2, 4, 3]
    row = leaderboard.row(3)
    assert row is not None
    assert (row.initial_balance, row.profit, row.profit_percentage) == (D(-100), D(400), None)


def test_unregister_removes_and_shifts_ranks() -> None:
    leaderboard = board((1, "100", "140"), (2, "100", "130"), (3, "100", "120"), (4, "100", "110"))
    assert leaderboard.unregister(2) == Change(2, 2, None)
    assert logins(leaderboard) == [1, 3, 4]
    assert [leaderboard.rank(login) for login in (1, 2, 3, 4)] == [1, None, 2, 3]
    assert len(leaderboard) == 3
    assert not leaderboard.is_registered(2)
    assert leaderboard.row(2) is None
    assert leaderboard.unregister(2) == Change(2, None, None)  # again: nothing
    with pytest.raises(UnknownAccountError):
        leaderboard.update(snap(2, "200"))


def test_snapshot_of_an_unregistered_login_is_refused() -> None:
    leaderboard = board((1, "100", "140"))
    with pytest.raises(UnknownAccountError, match="Account 99 is not registered") as raised:
        leaderboard.update(snap(99, "100"))
    assert raised.value.login == 99
    assert len(leaderboard) == 1


def test_pages() -> None:
    # Login i is up i%: login 10 leads.
    leaderboard = board(*((i, "100", str(100 + i)) for i in range(1, 11)))
    assert [(r.rank, r.login) for r in leaderboard.page(0, 3)] == [(1, 10), (2, 9), (3, 8)]
    assert [(r.rank, r.login) for r in leaderboard.page(3, 3)] == [(4, 7), (5, 6), (6, 5)]
    assert [(r.rank, r.login) for r in leaderboard.page(9, 5)] == [(10, 1)]
    assert leaderboard.page(10, 5) == []
    assert leaderboard.top(0) == []
    assert [r.login for r in leaderboard.top(2)] == [10, 9]
    assert len(leaderboard.top(50)) == 10
    with pytest.raises(ValueError, match="negative"):
        leaderboard.page(-1, 3)


# -- what moved ------------------------------------------------------------------------------------


@pytest.fixture
def ten() -> Leaderboard:
    """Login i is up i%: ranks 1..10 are logins 10..1."""
    return board(*((i, "100", str(100 + i)) for i in range(1, 11)))


def test_move_inside_the_top(ten: Leaderboard) -> None:
    change = ten.update(snap(8, "120"))  # rank 3 -> 1
    assert change == Change(8, 3, 1)
    assert change.moved_within(3)
    assert change.moved_within(1)
    assert not change.moved_within(0)


def test_entering_the_top(ten: Leaderboard) -> None:
    change = ten.update(snap(5, "109.5"))  # rank 6 -> 2
    assert change == Change(5, 6, 2)
    assert change.moved_within(3)
    assert not change.moved_within(1)


def test_leaving_the_top(ten: Leaderboard) -> None:
    change = ten.update(snap(10, "105.5"))  # rank 1 -> 5
    assert change == Change(10, 1, 5)
    assert change.moved_within(3)
    assert change.moved_within(1)


def test_move_entirely_outside_the_top(ten: Leaderboard) -> None:
    change = ten.update(snap(2, "106.5"))  # rank 9 -> 5
    assert change == Change(2, 9, 5)
    assert not change.moved_within(3)
    assert not change.visible_within(3)
    assert change.moved_within(5)


def test_new_figures_without_a_move_are_visible_but_not_a_move(ten: Leaderboard) -> None:
    change = ten.update(snap(9, "109.9"))  # still rank 2
    assert change == Change(9, 2, 2)
    assert not change.moved
    assert not change.moved_within(3)
    assert change.visible_within(3)
    assert not change.visible_within(1)


def test_arrivals_and_departures_move_the_top_only_inside_it(ten: Leaderboard) -> None:
    ten.register(11, T0, D("100"))
    arrival = ten.update(snap(11, "100"))  # 0%: last
    assert arrival == Change(11, None, 11)
    assert not arrival.moved_within(10)
    assert arrival.moved_within(11)
    assert ten.unregister(9).moved_within(3)  # was rank 2
    assert not ten.unregister(1).moved_within(3)  # was rank 10
    assert not Change(1, None, None).moved_within(3)


# -- the incremental ranking is a full sort --------------------------------------------------------

LOGINS = st.integers(1, 6)
AMOUNTS = st.sampled_from(["-100", "0", "50", "100", "150", "1000", "1500", "2000"])
INITIALS = st.one_of(st.none(), AMOUNTS)
FLOATING = st.sampled_from(["-50", "0", "50"])
REGISTER = st.tuples(st.just("register"), LOGINS, st.integers(0, 2), INITIALS)
UPDATE = st.tuples(st.just("update"), st.integers(0, 5), AMOUNTS, FLOATING)
"""The account is the registered one at this index (mod their number), so most updates land."""
STRAY_UPDATE = st.tuples(st.just("stray update"), LOGINS, AMOUNTS, FLOATING)
"""Any login, registered or not."""
UNREGISTER = st.tuples(st.just("unregister"), LOGINS)
OPERATIONS = st.builds(
    lambda registrations, rest: registrations + rest,
    st.lists(REGISTER, min_size=3, max_size=6, unique_by=lambda operation: operation[1]),
    st.lists(
        st.one_of(UPDATE, UPDATE, UPDATE, UPDATE, REGISTER, UNREGISTER, STRAY_UPDATE),
        min_size=6,
        max_size=40,
    ),
)


class Model:
    """The state kept naively: what the leaderboard should rank, by a full sort."""

    def __init__(self) -> None:
        self.registered_at: dict[int, datetime] = {}
        self.initial: dict[int, Decimal | None] = {}
        self.explicit: dict[int, bool] = {}
        self.equity: dict[int, Decimal] = {}

    def order(self) -> list[int]:
        def key(login: int) -> tuple[bool, Fraction, Fraction, datetime, int]:
            initial = self.initial[login]
            assert initial is not None
            profit = Fraction(self.equity[login] - initial)
            has_percentage = initial > 0
            percentage = profit / Fraction(initial) * 100 if has_percentage else Fraction(0)
            return (not has_percentage, -percentage, -profit, self.registered_at[login], login)

        return sorted(self.equity, key=key)

    def ranks(self) -> dict[int, int]:
        return {login: i for i, login in enumerate(self.order(), start=1)}


@settings(database=None, derandomize=True, max_examples=200)
@given(OPERATIONS)
def test_incremental_ranking_matches_a_full_sort(operations: list[tuple[object, ...]]) -> None:
    leaderboard, model = Leaderboard(), Model()
    for operation in operations:
        top_before = model.order()
        ranks_before = model.ranks()
        match operation:
            case ("register", int(login), int(minutes), initial):
                assert initial is None or isinstance(initial, str)
                balance = None if initial is None else D(initial)
                change = leaderboard.register(login, T0 + timedelta(minutes=minutes), balance)
                if login not in model.registered_at:
                    model.registered_at[login] = T0 + timedelta(minutes=minutes)
                    model.initial[login] = balance
                    model.explicit[login] = balance is not None
                elif balance is not None:
                    model.initial[login], model.explicit[login] = balance, True
            case ("update" | "stray update" as kind, int(login), str(balance), str(profit)):
                if kind == "update":
                    registered = sorted(model.registered_at) or [login + 1]
                    login = registered[login % len(registered)]
                snapshot = snap(login, balance, profit=profit)
                if login not in model.registered_at:
                    with pytest.raises(UnknownAccountError):
                        leaderboard.update(snapshot)
                    continue
                change = leaderboard.update(snapshot)
                if model.initial[login] is None:
                    model.initial[login] = D(balance) - D(profit)
                model.equity[login] = snapshot.equity
            case ("unregister", int(login)):
                change = leaderboard.unregister(login)
                for table in (model.registered_at, model.initial, model.explicit, model.equity):
                    table.pop(login, None)
            case _:
                raise AssertionError(operation)
        order, ranks = model.order(), model.ranks()
        assert logins(leaderboard) == order
        assert len(leaderboard) == len(order)
        for login in range(1, 7):
            assert leaderboard.rank(login) == ranks.get(login)
        assert (change.old_rank, change.new_rank) == (
            ranks_before.get(change.login),
            ranks.get(change.login),
        )
        for n in range(len(order) + 2):
            assert change.moved_within(n) == (top_before[:n] != order[:n])


def test_a_login_held_elsewhere_needs_its_owner_every_organiser_or_an_admin() -> None:
    carols = Holding(organiser="carol", owner="dave")
    bobs = Holding(organiser="bob", owner="dave")
    assert may_enrol(Enroller("bob"), [])  # a free login: the organiser's word
    assert not may_enrol(Enroller("bob"), [carols])
    assert not may_enrol(Enroller(None), [carols])
    assert may_enrol(Enroller("carol"), [carols])
    assert not may_enrol(Enroller("carol"), [carols, bobs])  # carol no longer holds it alone
    assert may_enrol(Enroller("dave"), [carols, bobs])
    assert may_enrol(Enroller("root", admin=True), [carols, bobs])
    assert may_enrol(SYSTEM, [carols])


# --- a stored leaderboard's row: its wire format pinned byte for byte (stored leaderboards are
# read by processes of other versions) ------------------------------------------------------


STORED_AT = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
STORED_LATER = STORED_AT + timedelta(minutes=1)


def stored_leaderboard_row(percentage: Decimal | None) -> LeaderboardRow:
    trade = OpenTrade(5, "EURUSD", TradeSide.BUY, Decimal("0.1"), Decimal("1.085"), Decimal(2))
    return LeaderboardRow(
        rank=2,
        login=1001,
        profit=Decimal("1E+1"),
        profit_percentage=percentage,
        initial_balance=Decimal("1000"),
        equity=Decimal("1010.00"),
        balance=Decimal("1008"),
        credit=Decimal("0"),
        margin=Decimal("0.00000001"),
        free_margin=Decimal("1000"),
        margin_level=None,
        open_positions=(trade,),
        pending_orders=(),
        registered_at=STORED_AT,
        updated_at=STORED_LATER,
    )


@pytest.mark.parametrize(
    ("percentage", "golden"),
    [
        pytest.param(
            Decimal("1.0000"),
            (
                '{"rank":2,"login":1001,"profit":"1E+1","profitPercentage":"1.0000","equity":"1010.00",'
                '"balance":"1008","margin":"1E-8","freeMargin":"1000","openPositionsCount":1,"pendingOr'
                'dersCount":0,"updatedAt":"2024-03-01T12:31:15.123456+00:00"}'
            ),
            id="with a percentage",
        ),
        pytest.param(
            None,
            (
                '{"rank":2,"login":1001,"profit":"1E+1","profitPercentage":null,"equity":"1010.00","bal'
                'ance":"1008","margin":"1E-8","freeMargin":"1000","openPositionsCount":1,"pendingOrders'
                'Count":0,"updatedAt":"2024-03-01T12:31:15.123456+00:00"}'
            ),
            id="without",
        ),
    ],
)
def test_a_stored_leaderboard_row_is_unchanged(percentage: Decimal | None, golden: str) -> None:
    assert orjson.dumps(STORED_ROW.encode(stored_leaderboard_row(percentage))).decode() == golden


def test_a_batch_keeps_each_logins_first_and_newest_snapshot_in_login_order() -> None:
    def at(login: int, second: int, equity: str = "1000") -> AccountSnapshot:
        return AccountSnapshot(
            login=login,
            balance=Decimal(1000),
            equity=Decimal(equity),
            profit=Decimal(0),
            margin=Decimal(0),
            free_margin=Decimal(equity),
            server_time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second),
        )

    first, newest, late, again = at(2, 5), at(2, 9), at(2, 1), at(2, 9, "2000")
    batch = by_login([first, at(1, 3), newest, late, again])
    assert [(b.first, b.newest) for b in batch] == [(at(1, 3), at(1, 3)), (first, newest)]
    assert batch[1].newest.equity == Decimal(1000)  # the first of equal times: a redelivery
    assert by_login([]) == []
