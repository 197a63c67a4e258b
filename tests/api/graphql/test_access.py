"""Access decisions recorded per task and asked again for new credentials."""

from __future__ import annotations

import asyncio
import contextvars

from api.auth import Principal, Role
from api.graphql.access import AccessChangedError, Check, checked, record_checks, refusal
from api.graphql.permissions import ForbiddenError, require_owner, require_role

ADMIN = Principal("carol", Role.ADMIN)
USER = Principal("carol", Role.USER)


def _wallet(principal: Principal) -> str | None:
    return None if principal.role is Role.ADMIN else principal.sub


def test_nothing_is_recorded_where_no_one_asked() -> None:
    def run() -> None:
        assert checked(ADMIN, _wallet) is None
        require_owner(ADMIN, "heidi", "positions")

    contextvars.copy_context().run(run)  # no record_checks: nothing to append to, no error


async def test_each_task_records_its_own_decisions_with_their_outcomes() -> None:
    first: list[tuple[Check, object]] = []
    second: list[tuple[Check, object]] = []

    async def operation(into: list[tuple[Check, object]], owner: str) -> None:
        record_checks(into)
        require_owner(ADMIN, owner, "positions")
        checked(ADMIN, _wallet)

    await asyncio.gather(operation(first, "heidi"), operation(second, "carol"))
    assert [outcome for _, outcome in first] == [None, None]
    assert len(second) == 2
    assert refusal(first, ADMIN) is None
    refused = refusal(first, USER)
    assert isinstance(refused, ForbiddenError)
    assert "'heidi'" in refused.message
    # the caller's own positions: a user sees them too, but everyone's wallets become its own
    own = [second[0]]
    assert refusal(own, USER) is None
    changed = refusal(second, USER)
    assert isinstance(changed, AccessChangedError)
    assert changed.extensions == {"code": "FORBIDDEN"}


async def test_asking_again_records_nothing_in_the_asking_task() -> None:
    kept: list[tuple[Check, object]] = []
    asking: list[tuple[Check, object]] = []

    async def subscription() -> None:
        record_checks(kept)
        require_role(ADMIN, Role.ADMIN, what="everything")

    await asyncio.create_task(subscription())
    record_checks(asking)
    assert isinstance(refusal(kept, USER), ForbiddenError)
    assert asking == []
    checked(USER, _wallet)
    assert len(asking) == 1  # recording goes on after the replay
