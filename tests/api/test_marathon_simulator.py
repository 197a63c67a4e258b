"""The simulated marathon speaks the collectors' wire format, and its figures add up."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import TYPE_CHECKING

from api.account_messages import parse_snapshot
from domain.marathon_simulator import DEMO_ACCOUNTS, FIRST_LOGIN, MarathonSimulator
from tests.domain.test_perps_engine import ManualClock

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
