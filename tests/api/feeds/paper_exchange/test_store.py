"""The wire format of the paper exchange store's live event (an operation's changes), pinned
byte for byte: stored events and processes of other versions read it. Its parts are the
domain's payloads (tests/domain/test_payloads.py pins them); this pins how the event holds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import pytest

from api.feeds.paper_exchange.store import changes_payload
from domain import paper_exchange

if TYPE_CHECKING:
    from collections.abc import Callable

ORDER = (
    '{"id":"7","clientOrderId":"c-1","symbol":"ETH-PERP","type":"TAKE_PROFIT","side":"SELL","'
    'status":"NEW","quantity":"1000","price":"0.00000001","filled":"0.500","averagePrice":"32'
    '00.1","reduceOnly":true,"parentId":"6","active":false,"reservedMargin":"12.000001","take'
    'Profit":"3300","stopLoss":"3100","createdAt":"2024-03-01T12:30:15.123456+00:00","updated'
    'At":"2024-03-01T14:00:00+02:00"}'
)
FILL = (
    '{"id":"3","orderId":"7","symbol":"ETH-PERP","side":"BUY","quantity":"1000","price":"3200'
    '.5","fee":"0.00000001","pnl":"-1.5","realizedPnl":"-1.50000001","at":"2024-03-01T12:35:1'
    '5.123456+00:00"}'
)
POSITION = (
    '{"symbol":"BTC-PERP","size":"-0.50","entryPrice":"65000.5","realizedPnl":"0.00000001","o'
    'penedAt":"2024-03-01T12:30:15.123456+00:00","updatedAt":"2024-03-01T12:35:15.123456+00:0'
    '0"}'
)


def changes() -> paper_exchange.Changes:
    return paper_exchange.Changes(
        (paper_exchange.Order.from_payload(orjson.loads(ORDER)),),
        (paper_exchange.Fill.from_payload(orjson.loads(FILL)),),
        (paper_exchange.PaperPosition.from_payload(orjson.loads(POSITION)),),
    )


CASES: dict[str, tuple[Callable[[], paper_exchange.Changes], str]] = {
    "account changed": (
        changes,
        f'{{"orders":[{ORDER}],"fills":[{FILL}],"positions":[{POSITION}]}}',
    ),
    "account changed, nothing": (paper_exchange.Changes, '{"orders":[],"fills":[],"positions":[]}'),
}


@pytest.mark.parametrize("name", list(CASES))
def test_payload_json_is_unchanged(name: str) -> None:
    make, golden = CASES[name]
    assert orjson.dumps(changes_payload(make())).decode() == golden
