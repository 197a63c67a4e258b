"""Which media type a GraphQL response gets for a request's Accept header (RFC 9110 weights, the
GraphQL-over-HTTP spec's type only when the client asks for it)."""

from __future__ import annotations

import pytest

from api.transport.media_types import GRAPHQL_RESPONSE_JSON, JSON, response_media_type


@pytest.mark.parametrize(
    "accept",
    [
        "application/graphql-response+json",
        "Application/GraphQL-Response+JSON",
        "application/graphql-response+json; charset=utf-8",
        # What the spec tells a client to send when it does not know the server.
        "application/graphql-response+json, application/json;q=0.9",
        "application/json;q=0.9, application/graphql-response+json",
        # Named both at the same weight: the client reads either, and names the spec's.
        "application/graphql-response+json, application/json",
        "application/json, application/graphql-response+json",
        # urql's default.
        "application/graphql-response+json, application/graphql+json, application/json, "
        "text/event-stream, multipart/mixed",
        # application/json refused, anything else welcome.
        "application/json;q=0, */*",
        "application/*;q=0.5, application/graphql-response+json;q=0.6",
    ],
)
def test_the_spec_type_when_the_client_prefers_it(accept: str) -> None:
    assert response_media_type(accept) == GRAPHQL_RESPONSE_JSON


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "application/json",
        "*/*",
        "application/*",
        "application/json, */*",
        "application/json, application/graphql-response+json;q=0.5",
        "application/graphql-response+json;q=0",
        "application/graphql-response+json;q=0, */*",
        "application/graphql-response+json;q=0.4, */*;q=0.5",
        # Neither named: the server's choice, as before.
        "text/html",
        "text/event-stream",
        # A malformed weight leaves its range out.
        "application/graphql-response+json;q=high",
        "application/graphql-response+json;q=2",
        "not a media type",
    ],
)
def test_application_json_otherwise(accept: str | None) -> None:
    assert response_media_type(accept) == JSON


def test_the_most_specific_range_sets_the_weight() -> None:
    # */* says 1, but the type itself is named with 0.1: application/json (0.8 via application/*)
    assert response_media_type("*/*, application/*;q=0.8, " + GRAPHQL_RESPONSE_JSON + ";q=0.1") == (
        JSON
    )
