from __future__ import annotations

import pytest

from api.auth import ANONYMOUS, Principal, Role
from api.graphql.permissions import (
    ForbiddenError,
    UnauthenticatedError,
    require_owner,
    require_role,
)

ALICE = Principal(sub="alice", role=Role.USER)
BOB = Principal(sub="bob", role=Role.USER)
ADMIN = Principal(sub="root", role=Role.ADMIN)
INDEXER = Principal(sub="indexer", role=Role.SERVICE)


def test_owners_and_admins_see_private_streams() -> None:
    require_owner(ALICE, "alice", "positions")
    require_owner(ADMIN, "alice", "positions")


@pytest.mark.parametrize("caller", [BOB, INDEXER])
def test_others_are_forbidden_with_the_refusal_named(caller: Principal) -> None:
    with pytest.raises(ForbiddenError, match="positions of 'alice' are not yours to see") as e:
        require_owner(caller, "alice", "positions")
    assert e.value.extensions == {"code": "FORBIDDEN"}


def test_anonymous_callers_are_asked_to_sign_in() -> None:
    with pytest.raises(UnauthenticatedError, match="positions needs a signed-in caller") as e:
        require_owner(ANONYMOUS, "alice", "positions")
    assert e.value.extensions == {"code": "UNAUTHENTICATED"}


def test_roles() -> None:
    require_role(INDEXER, Role.SERVICE, what="ingesting positions")
    with pytest.raises(ForbiddenError, match="ingesting positions needs the role service"):
        require_role(ALICE, Role.SERVICE, what="ingesting positions")
    with pytest.raises(UnauthenticatedError):
        require_role(ANONYMOUS, Role.SERVICE, what="ingesting positions")
