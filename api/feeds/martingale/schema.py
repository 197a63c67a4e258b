"""The martingale feed: strategies' progress as mining rounds turn, the rounds themselves, and
the mutations that start, stop and configure a strategy or settle a round."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from api.auth import Role
from api.feeds.martingale.store import RoundError, StrategyNotFoundError
from api.feeds.martingale.stream import progress_stream, rounds_stream, summary_stream
from api.feeds.martingale.types import (
    MartingaleProgress,
    MartingaleSummary,
    MartingaleUpdate,
    Round,
    RoundEvent,
    StrategyPage,
)
from api.graphql.access import checked
from api.graphql.context import Info  # noqa: TC001
from api.graphql.errors import ClientError
from api.graphql.permissions import (
    ForbiddenError,
    limit_mutations,
    require_role,
    require_signed_in,
)
from api.graphql.resume import AFTER_DESCRIPTION, parse_after
from domain import martingale as model
from domain.mining_rounds import RoundResult

if TYPE_CHECKING:
    from api.auth import Principal


_WALLET = re.compile(r"^\S{1,100}$")
MAX_PAGE = 500
"""The most strategies one ``strategyPage`` returns."""
_CURSOR_PREFIX = "strategy:"


_CAMEL = {
    "wallet_address": "walletAddress",
    "base_amount": "baseAmountSol",
    "multiplier": "multiplier",
    "total_rounds": "totalRounds",
    "stop_loss": "stopLossSol",
    "take_profit": "takeProfitSol",
    "budget": "budgetSol",
}


class StrategyConfigGraphQLError(ClientError):
    code = "INVALID_STRATEGY"

    def __init__(self, error: model.StrategyConfigError) -> None:
        field = _CAMEL.get(error.field, error.field)
        super().__init__(str(error), field=field)


@strawberry.type(description="One round a strategy played.")
class PlayedRound:
    round_number: int
    amount_sol: Decimal
    won: bool
    reward_sol: Decimal


@strawberry.type(description="A strategy with its whole round history.")
class StrategyDetail:
    progress: MartingaleProgress
    rounds: list[PlayedRound]


def _wallet_for(principal: Principal, wallet: str | None, what: str) -> str | None:
    """The wallet a caller may read: users their own (their token's sub), admins any, or every
    wallet (None) when they name none."""
    require_signed_in(principal, what)
    if principal.role is Role.ADMIN:
        return wallet
    if principal.role is not Role.USER:
        raise ForbiddenError(f"{what} is for users and admins")
    if wallet is not None and wallet != principal.sub:
        raise ForbiddenError(f"{what} of {wallet!r} are not yours to see")
    return principal.sub


def _one_wallet(principal: Principal, wallet: str | None, what: str) -> str:
    """:func:`_wallet_for`, where every wallet at once is too much: an admin names one."""
    chosen = _wallet_for(principal, wallet, what)
    if chosen is None:
        raise ClientError(
            f"{what} is one wallet's: name it (every strategy at once: martingaleSummary, "
            "and strategyPage for the detail)",
            code="WALLET_REQUIRED",
        )
    return chosen


def _page_cursor(strategy_id: str) -> str:
    """The opaque ``endCursor`` of a page that ends with ``strategy_id``."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + strategy_id).encode()).decode()


def _after_id(cursor: str | None) -> str | None:
    """The id a page's ``after`` cursor names; INVALID_CURSOR for one this server did not give."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX) or len(text) == len(_CURSOR_PREFIX):
        raise ClientError(
            f"{cursor[:40]!r} is not a cursor strategyPage gave out", code="INVALID_CURSOR"
        )
    return text.removeprefix(_CURSOR_PREFIX)


@strawberry.type
class MartingaleQuery:
    @strawberry.field(
        description="A wallet's strategies, active and ended (users: their own wallet; admins: "
        "any wallet, which they must name: every strategy is strategyPage's)."
    )
    async def strategies(
        self, info: Info, wallet: str | None = None, active_only: bool = False
    ) -> list[MartingaleProgress]:
        chosen = _one_wallet(info.context.principal, wallet, "strategies")
        owned = await info.context.services.martingale_store.strategies(
            chosen, active_only=active_only
        )
        return [MartingaleProgress.of(o.strategy) for o in owned]

    @strawberry.field(
        description="Strategies a page at a time, in id order (users: their own wallet; admins: "
        "any, or every strategy when wallet is omitted). first: 1 to 500; after: a page's "
        "endCursor."
    )
    async def strategy_page(
        self,
        info: Info,
        first: int = 100,
        after: str | None = None,
        wallet: str | None = None,
        active_only: bool = False,
    ) -> StrategyPage:
        chosen = _wallet_for(info.context.principal, wallet, "strategyPage")
        if not 1 <= first <= MAX_PAGE:
            raise ClientError(f"first must be between 1 and {MAX_PAGE}", code="INVALID_PAGE")
        owned, more = await info.context.services.martingale_store.page(
            chosen, active_only=active_only, first=first, after=_after_id(after)
        )
        return StrategyPage(
            strategies=[MartingaleProgress.of(o.strategy) for o in owned],
            end_cursor=_page_cursor(owned[-1].strategy.id) if owned else None,
            has_next_page=more,
        )

    @strawberry.field(description="Every strategy at once, by status (admins).")
    async def martingale_summary(self, info: Info) -> MartingaleSummary:
        require_role(info.context.principal, Role.ADMIN, what="martingaleSummary")
        services = info.context.services
        return MartingaleSummary.of(await services.martingale_store.summary(), services.clock.now())

    @strawberry.field(description="One strategy and every round it played; null if unknown.")
    async def strategy(self, info: Info, id: strawberry.ID) -> StrategyDetail | None:
        principal = info.context.principal
        require_signed_in(principal, "strategy")
        owned = await info.context.services.martingale_store.strategy(str(id))
        if owned is None or (principal.role is not Role.ADMIN and owned.owner != principal.sub):
            return None  # someone else's strategy is as unknown as a missing one
        return StrategyDetail(
            progress=MartingaleProgress.of(owned.strategy),
            rounds=[
                PlayedRound(
                    round_number=r.round_number, amount_sol=r.amount, won=r.won, reward_sol=r.reward
                )
                for r in owned.strategy.rounds
            ],
        )

    @strawberry.field(description="Mining rounds, the newest first (public).")
    async def rounds(self, info: Info, limit: int = 20, before: int | None = None) -> list[Round]:
        if not 1 <= limit <= 500:
            raise ClientError("limit must be between 1 and 500")
        store = info.context.services.martingale_store
        return [Round.of(r) for r in await store.rounds(limit, before)]


@strawberry.type
class MartingaleSubscription:
    @strawberry.subscription(
        description="The progress of every active strategy of a wallet (users: their own; "
        "admins: any, which they must name: every strategy is martingaleSummary's): at once, "
        "then whenever a round turns or a strategy changes, and at least every 60 s "
        "(MARTINGALE_REFRESH_S)."
    )
    async def martingale_progress(
        self, info: Info, wallet: str | None = None
    ) -> AsyncIterator[MartingaleUpdate]:
        chosen = checked(
            info.context.principal, lambda p: _one_wallet(p, wallet, "martingaleProgress")
        )
        return progress_stream(info.context.services, chosen)

    @strawberry.subscription(
        description="Every strategy at once, by status: counts and totals, and the newest "
        "settled round (admins). At once, then as each round is settled, and at least every 60 s "
        "(MARTINGALE_REFRESH_S)."
    )
    async def martingale_summary(self, info: Info) -> AsyncIterator[MartingaleSummary]:
        require_role(info.context.principal, Role.ADMIN, what="martingaleSummary")
        return summary_stream(info.context.services)

    @strawberry.subscription(
        description="The current round at once, then each round as it opens and as it is "
        "settled (public)."
    )
    async def rounds(
        self,
        info: Info,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
    ) -> AsyncIterator[RoundEvent]:
        return rounds_stream(info.context.services, parse_after(after, 1))


@strawberry.input
class StartStrategyInput:
    base_amount_sol: Decimal
    multiplier: Decimal
    total_rounds: int
    stop_loss_sol: Decimal | None = None
    take_profit_sol: Decimal | None = None
    budget_sol: Decimal | None = None
    wallet_address: str | None = strawberry.field(
        default=None, description="Admins only; a user's strategies use the user's own wallet."
    )


@strawberry.input(description="Limits to change on a running strategy; omitted ones stay.")
class ConfigureStrategyInput:
    strategy_id: strawberry.ID
    total_rounds: int | None = None
    stop_loss_sol: Decimal | None = None
    take_profit_sol: Decimal | None = None
    budget_sol: Decimal | None = None


@strawberry.input(description="A round's real outcome.")
class SettleRoundInput:
    round_number: int
    won: bool
    reward_multiplier: Decimal = strawberry.field(
        default=Decimal(0), description="SOL paid back per SOL deployed on a win, stake included."
    )


def _config(make: Any) -> model.StrategyConfig:
    try:
        config: model.StrategyConfig = make()
    except model.StrategyConfigError as exc:
        raise StrategyConfigGraphQLError(exc) from None
    return config


def _owner_scope(principal: Principal) -> str | None:
    """Whose strategies a caller may change: its own, or anyone's for admins (None)."""
    return None if principal.role is Role.ADMIN else principal.sub


@strawberry.type
class MartingaleMutation:
    @strawberry.mutation(description="Start a strategy; it plays from the next round.")
    async def start_strategy(self, info: Info, input: StartStrategyInput) -> MartingaleProgress:
        principal = limit_mutations(info)
        require_role(principal, Role.USER, Role.ADMIN, what="startStrategy")
        assert principal.sub is not None
        wallet = principal.sub
        if input.wallet_address is not None and input.wallet_address != principal.sub:
            if principal.role is not Role.ADMIN:
                raise ForbiddenError("a strategy uses your own wallet (your token's sub)")
            wallet = input.wallet_address
        if not _WALLET.match(wallet):
            raise ClientError("a wallet address is 1 to 100 characters without spaces")
        config = _config(
            lambda: model.StrategyConfig(
                wallet_address=wallet,
                base_amount=input.base_amount_sol,
                multiplier=input.multiplier,
                total_rounds=input.total_rounds,
                stop_loss=input.stop_loss_sol,
                take_profit=input.take_profit_sol,
                budget=input.budget_sol,
            )
        )
        strategy = await info.context.services.martingale_desk.start(principal.sub, config)
        return MartingaleProgress.of(strategy)

    @strawberry.mutation(description="Stop one of your strategies.")
    async def stop_strategy(self, info: Info, strategy_id: strawberry.ID) -> MartingaleProgress:
        principal = limit_mutations(info)
        require_role(principal, Role.USER, Role.ADMIN, what="stopStrategy")
        return await _change(info, principal, str(strategy_id), lambda s: s.stop())

    @strawberry.mutation(
        description="Change a running strategy's limits (total rounds, stop-loss, take-profit, "
        "budget); validated like startStrategy."
    )
    async def configure_strategy(
        self, info: Info, input: ConfigureStrategyInput
    ) -> MartingaleProgress:
        principal = limit_mutations(info)
        require_role(principal, Role.USER, Role.ADMIN, what="configureStrategy")

        def configure(strategy: model.Strategy) -> model.Strategy:
            if strategy.status is not model.StrategyStatus.ACTIVE:
                raise model.StrategyNotActiveError(strategy.id, strategy.status)
            old = strategy.config
            config = _config(
                lambda: dataclasses.replace(
                    old,
                    total_rounds=old.total_rounds
                    if input.total_rounds is None
                    else input.total_rounds,
                    stop_loss=old.stop_loss if input.stop_loss_sol is None else input.stop_loss_sol,
                    take_profit=old.take_profit
                    if input.take_profit_sol is None
                    else input.take_profit_sol,
                    budget=old.budget if input.budget_sol is None else input.budget_sol,
                )
            )
            if config.total_rounds <= strategy.rounds_played:
                raise ClientError(
                    f"totalRounds must be above the {strategy.rounds_played} rounds already played",
                    code="INVALID_STRATEGY",
                    field="totalRounds",
                )
            return dataclasses.replace(strategy, config=config)

        return await _change(info, principal, str(input.strategy_id), configure)

    @strawberry.mutation(
        description="For the service role: settle an ended round with its real outcome; every "
        "strategy active in it is settled once, in one transaction."
    )
    async def settle_round(self, info: Info, input: SettleRoundInput) -> Round:
        principal = limit_mutations(info)
        require_role(principal, Role.SERVICE, what="settleRound")
        services = info.context.services
        try:
            result = RoundResult(input.round_number, input.won, input.reward_multiplier)
        except ValueError as exc:
            raise ClientError(str(exc), code="INVALID_ROUND") from None
        try:
            await services.martingale_desk.settle_reported(result)
        except RoundError as exc:
            raise ClientError(str(exc), code=exc.code) from None
        [settled] = await services.martingale_store.rounds(1, input.round_number + 1)
        return Round.of(settled)


async def _change(
    info: Info, principal: Principal, strategy_id: str, change: Any
) -> MartingaleProgress:
    desk = info.context.services.martingale_desk
    try:
        strategy = await desk.change(strategy_id, _owner_scope(principal), change)
    except StrategyNotFoundError:
        raise ClientError(
            f"you have no strategy {strategy_id!r}", code="UNKNOWN_STRATEGY"
        ) from None
    except model.StrategyNotActiveError as exc:
        raise ClientError(str(exc), code="STRATEGY_NOT_ACTIVE") from None
    return MartingaleProgress.of(strategy)
