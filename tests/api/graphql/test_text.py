"""The NUL check of a request's strings (api/graphql/text.py), without a server; through the server
in tests/e2e/test_input_faults.py."""

from __future__ import annotations

from graphql import parse

from api.graphql import text


def test_a_documents_literals_are_walked_once_and_a_refused_one_every_time() -> None:
    clean = parse('subscription { priceUpdates(market: "BTC-PERP") { price } }')
    assert text.nul_refusals(clean, {"m": "BTC-PERP"}) == []
    assert text._NUL_FREE.passed(id(clean), clean)
    # The variables are checked on every request, the document's literals once.
    [error] = text.nul_refusals(clean, {"m": "BTC\x00"})
    assert error.message == f"Variable '$m' has invalid value: {text.REASON}"
    refused = parse('subscription { priceUpdates(market: "BTC\\u0000") { price } }')
    for _ in range(2):
        [error] = text.nul_refusals(refused, None)
        assert error.extensions == {"code": text.INVALID_STRING}
    assert not text._NUL_FREE.passed(id(refused), refused)
    # Another document with the same text is another object: walked (and kept) for itself.
    twin = parse('subscription { priceUpdates(market: "BTC-PERP") { price } }')
    assert not text._NUL_FREE.passed(id(twin), twin)
