"""The simulated marathon speaks the collectors' wire format, and its figures add up."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import TYPE_CHECKING

from api.feeds.marathons.messages import parse_snapshot
from domain.marathon_simulator import DEMO_ACCOUNTS, FIRST_LOGIN, MarathonSimulator
from tests.domain.fakes import ManualClock

if TYPE_CHECKING:
    from domain.marathons import Marathon


def simulator(sent: list[bytes]) -> MarathonSimulator:
    async def ingest(body: bytes) -> None:
        sent.append(body)

    return MarathonSimulator(ingest_message=ingest, clock=ManualClock(), seed=3)


async def test_every_message_parses_and_adds_up() -> None:
    sent: list[bytes] = []
    sim = simulator(sent)
    await sim.step(first=True)
    for _ in range(30):
        await sim.step()
    assert len(sent) == DEMO_ACCOUNTS + 30 * 5
    for body in sent:
        snapshot = parse_snapshot(body)
        assert snapshot.equity == snapshot.balance + snapshot.profit
        assert sum((t.profit for t in snapshot.open_positions), Decimal(0)) == snapshot.profit
        assert snapshot.free_margin == snapshot.equity - snapshot.margin


async def test_accounts_resume_where_they_were_stored() -> None:
    sent: list[bytes] = []
    sim = simulator(sent)
    marathons: list[Marathon] = []

    async def ensure_demo(
        marathon: Marathon, participants: dict[int, str]
    ) -> dict[int, tuple[Decimal, Decimal, int]]:
        marathons.append(marathon)
        assert len(participants) == DEMO_ACCOUNTS
        return {FIRST_LOGIN: (Decimal("12345.67"), Decimal("-10.50"), 2)}

    sim.clock.sleep = _stop  # type: ignore[method-assign]
    with contextlib.suppress(_Stopped):
        await sim.run(ensure_demo)
    [marathon] = marathons
    assert marathon.public
    first = parse_snapshot(sent[0])
    assert (first.login, first.balance, first.profit) == (
        FIRST_LOGIN,
        Decimal("12345.67"),
        Decimal("-10.50"),
    )
    assert len(first.open_positions) == 2


class _Stopped(Exception):
    pass


async def _stop(seconds: float) -> None:
    raise _Stopped


async def test_setting_up_the_demo_is_retried_while_the_database_is_down() -> None:
    """The simulator is a worker of its own: a database that is down when it starts must not
    end it (it would stay dead after the database is back)."""
    sent: list[bytes] = []
    sim = simulator(sent)
    attempts = 0
    sleeps: list[float] = []

    async def ensure_demo(
        marathon: Marathon, participants: dict[int, str]
    ) -> dict[int, tuple[Decimal, Decimal, int]]:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise ConnectionRefusedError(111, "Connection refused")
        return {}

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:  # two retries, then the first pause after the first step
            raise _Stopped

    sim.clock.sleep = sleep  # type: ignore[method-assign]
    with contextlib.suppress(_Stopped):
        await sim.run(ensure_demo)
    assert attempts == 3
    assert sleeps == [sim.interval_s] * 3
    assert len(sent) == DEMO_ACCOUNTS  # the first step ran once set up
