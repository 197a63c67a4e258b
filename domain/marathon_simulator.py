"""A simulated marathon, so the embedded default shows a live leaderboard: a public demo marathon
whose accounts trade at random. Each account's state is sent as the collector's wire message
(``docs/marathon-ingest.md``) through the same parse-and-ingest path RabbitMQ messages take.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.marathons import Marathon

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from domain.ports import Clock

logger = logging.getLogger(__name__)

DEMO_MARATHON_ID = "demo"
DEMO_ACCOUNTS = 40
FIRST_LOGIN = 9_100_001
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")


AccountState = tuple[Decimal, Decimal, int]
"""Balance, floating profit and open trades of an account, as last stored."""


@dataclass(slots=True)
class _Account:
    login: int
    balance: Decimal
    floating: Decimal
    open_trades: int


class MarathonSimulator:
    """Every ``interval_s``, a few accounts' floating profit moves, some close a trade (profit
    moves into balance) and open another, and each changed account sends a snapshot."""

    def __init__(
        self,
        *,
        ingest_message: Callable[[bytes], Awaitable[None]],
        clock: Clock,
        interval_s: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.ingest_message = ingest_message
        self.clock = clock
        self.interval_s = interval_s
        self.random = random.Random(seed)
        self.accounts = [
            _Account(
                login=FIRST_LOGIN + n,
                balance=Decimal(self.random.choice((5_000, 10_000, 25_000, 50_000))),
                floating=Decimal(0),
                open_trades=0,
            )
            for n in range(DEMO_ACCOUNTS)
        ]

    def demo_marathon(self, now: datetime) -> tuple[Marathon, dict[int, str]]:
        marathon = Marathon(
            id=DEMO_MARATHON_ID,
            name="Demo marathon",
            starts_at=now - timedelta(days=1),
            ends_at=now + timedelta(days=365),
            public=True,
            organiser="demo-organiser",
        )
        participants = {
            a.login: f"sim-trader-{a.login - FIRST_LOGIN + 1:02d}" for a in self.accounts
        }
        return marathon, participants

    def message(self, account: _Account, now: datetime) -> dict[str, Any]:
        equity = account.balance + account.floating
        margin = Decimal(account.open_trades * 250)
        per_trade = (
            (account.floating / account.open_trades).quantize(Decimal("0.01"))
            if account.open_trades
            else Decimal(0)
        )
        positions = [
            {
                "ticket": account.login * 1000 + n,
                "symbol": SYMBOLS[(account.login + n) % len(SYMBOLS)],
                "type": "buy" if n % 2 == 0 else "sell",
                "volume": "0.10",
                "price_open": "1.0850",
                "profit": str(per_trade),
            }
            for n in range(account.open_trades)
        ]
        if positions:  # the trades' profits add up to the account's floating profit exactly
            positions[-1]["profit"] = str(account.floating - per_trade * (account.open_trades - 1))
        return {
            "login": account.login,
            "balance": str(account.balance),
            "equity": str(equity),
            "profit": str(account.floating),
            "margin": str(margin),
            "free_margin": str(equity - margin),
            "positions": positions,
            "orders": [],
            "server_time": now.isoformat(),
        }

    def move(self, account: _Account) -> None:
        cents = Decimal("0.01")
        if account.open_trades == 0 or self.random.random() < 0.1:
            account.balance += account.floating  # close everything: profit moves into balance
            account.floating = Decimal(0)
            account.open_trades = self.random.randint(1, 3)
        drift = Decimal(self.random.gauss(0, 0.004)) * account.balance
        account.floating = (account.floating + drift).quantize(cents)

    async def step(self, first: bool = False) -> None:
        now = self.clock.now()
        chosen = self.accounts if first else self.random.sample(self.accounts, 5)
        for account in chosen:
            if not first:
                self.move(account)
            body = json.dumps(self.message(account, now)).encode()
            try:
                await self.ingest_message(body)
            except Exception:
                logger.exception("simulated snapshot of %d was not ingested", account.login)

    async def run(
        self,
        ensure_demo: Callable[[Marathon, dict[int, str]], Awaitable[dict[int, AccountState]]],
    ) -> None:
        """Create the demo marathon if it is missing, pick up each account where its last stored
        snapshot left it, then trade until cancelled."""
        marathon, participants = self.demo_marathon(self.clock.now())
        while True:  # the database may be down, now or at start: try until it answers
            try:
                stored = await ensure_demo(marathon, participants)
                break
            except Exception:
                logger.exception("could not set up the demo marathon; trying again")
            await self.clock.sleep(self.interval_s)
        for account in self.accounts:
            if account.login in stored:
                account.balance, account.floating, account.open_trades = stored[account.login]
        await self.step(first=True)
        while True:
            await self.clock.sleep(self.interval_s)
            await self.step()
