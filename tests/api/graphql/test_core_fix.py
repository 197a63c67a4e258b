"""The subscription memo leak of graphql-core 3.3 (api/graphql/core_fix.py): each event's
executor must not add to the subscription's memo."""

from __future__ import annotations

from graphql import build_schema, parse
from graphql.execution.executor import Executor

from api.graphql import core_fix as graphql_core_fix

SCHEMA = build_schema(
    """
    type Price { market: String sequence: Int }
    type Query { dummy: String }
    type Subscription { price: Price }
    """
)


def test_events_do_not_grow_the_subscriptions_memo() -> None:
    graphql_core_fix.apply()
    executor = Executor.build(SCHEMA, parse("subscription { price { market sequence } }"))
    assert isinstance(executor, Executor)
    for sequence in range(100):
        event = executor.build_per_event_executor(
            {"price": {"market": "BTC", "sequence": sequence}}
        )
        result = event.execute_operation(False)
        assert result.data == {"price": {"market": "BTC", "sequence": sequence}}  # type: ignore[union-attr]
    assert len(executor._relevant_sub_fields) == 0
