"""A fault inside a resolver never shows its message to the client; the log keeps it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from strawberry.types import ExecutionResult

from api.graphql.context import Context
from api.graphql.fanout import Groups
from api.schema import build_schema
from api.settings import Settings

if TYPE_CHECKING:
    import pytest


class _BrokenMarkets:
    def __iter__(self) -> Any:
        raise RuntimeError('relation "markets" does not exist at /srv/secret/path')


class _Services:
    markets = _BrokenMarkets()


async def test_faults_are_masked_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    schema = build_schema(Settings())
    context = Context(services=_Services(), request=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="api.graphql.execution"):
        result = await schema.execute("{ markets { id } }", context_value=context)
    assert result.errors is not None
    [error] = result.errors
    assert error.message == "Unexpected error."
    assert "secret" not in str(error.formatted)
    [record] = [r for r in caplog.records if r.exc_info]
    assert 'relation "markets" does not exist' in record.getMessage()


async def test_client_errors_are_not_masked() -> None:
    schema = build_schema(Settings())
    result = await schema.execute("{ nope }")
    assert result.errors is not None
    assert "Cannot query field 'nope'" in result.errors[0].message


async def test_variables_that_do_not_coerce_are_the_clients_error_not_a_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = build_schema(Settings())
    with caplog.at_level(logging.DEBUG, logger="api.graphql.execution"):
        result = await schema.execute(
            "query($m: String!) { price(market: $m) { price } }", variable_values={"m": 5}
        )
    assert result.errors is not None
    [error] = result.errors
    assert (
        error.message
        == "Variable '$m' has invalid value: String cannot represent a non string value: 5"
    )
    assert [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "api.graphql.execution"
    ] == [(logging.DEBUG, f"invalid request: {error.message}")]


class _BrokenCatalog:
    def get(self, market: str) -> Any:
        raise RuntimeError(f"lookup of {market} failed at /srv/secret/path")


class _NoExpiry:
    def deadline(self, principal: object) -> None:
        return None


class _SubscriptionServices:
    """What a subscription's execution reads: the market catalog (broken here), the fan-out
    groups and the token verifier."""

    markets = _BrokenCatalog()
    groups = Groups(queue_size=4)
    verifier = _NoExpiry()


async def test_a_fault_in_a_subscription_is_masked_too() -> None:
    schema = build_schema(Settings())
    context = Context(services=_SubscriptionServices(), request=None)  # type: ignore[arg-type]
    results = await schema.subscribe(
        'subscription { priceUpdates(market: "BTC-PERP") { price } }', context_value=context
    )
    assert not isinstance(results, ExecutionResult)
    result = await anext(results)
    assert result.errors is not None
    assert [e.message for e in result.errors] == ["Unexpected error."]
