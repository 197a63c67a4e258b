"""Queries and mutations over HTTP as the GraphQL-over-HTTP spec writes them, through a real
server: the ``application/graphql-response+json`` media type for clients that ask for it (400 and
no ``data`` for a request that cannot run), ``application/json`` as before for the others, GET
never running a mutation, and graphql-http's own server audits (the spec's reference suite, pinned
in tests/http_audit/package-lock.json) with no warning and no error.

The audits need Node 20+ and npm; without them that test is skipped, unless
TRADESTREAM_REQUIRE_EXAMPLES=1 (``.ci/run`` sets it), which makes that a failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import isolated_server
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, node_packages, parse_multipart, token

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support import ServerProcess

AUDIT_DIR = Path(__file__).resolve().parents[1] / "http_audit"

SPEC = "application/graphql-response+json"
SPEC_CONTENT_TYPE = "application/graphql-response+json; charset=utf-8"
LEGACY_ACCEPTS = ["application/json", None, "*/*"]
"""What older clients send (or leave out): each is answered in application/json, as before."""
SPEC_ACCEPTS = [SPEC, f"{SPEC}, application/json;q=0.9"]
"""The spec's type alone, and the Accept the spec tells a client to send to an unknown server."""

REQUEST_ERRORS: dict[str, tuple[dict[str, Any], str]] = {
    "parse": ({"query": "{ markets { id "}, "Syntax Error: Expected Name, found <EOF>."),
    "validation": (
        {"query": "{ markets { nope } }"},
        "Cannot query field 'nope' on type 'Market'.",
    ),
    "variable coercion": (
        {"query": "query($m: String!) { price(market: $m) { price } }", "variables": {"m": 5}},
        "Variable '$m' has invalid value: String cannot represent a non string value: 5",
    ),
}
"""A request that cannot run, by why: its body and the message of its one error."""

PUBLISH = 'mutation($p: Decimal!) { publishPrice(market: "SOL-PERP", price: $p) { sequence } }'
PRICE = '{ price(market: "SOL-PERP") { price } }'


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server alone on its database with no simulated feed: a price exists only once a test
    publishes it."""
    with isolated_server(
        database_url,
        {"SIMULATED_FEEDS": "0"},
        tmp_path_factory.mktemp("graphql-over-http") / "server.log",
    ) as process:
        yield process


def post(
    server: ServerProcess, body: dict[str, Any], accept: str | None, bearer: str | None = None
) -> httpx.Response:
    headers = {} if accept is None else {"accept": accept}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    return httpx.post(server.url, json=body, headers=headers, timeout=10)


def get(server: ServerProcess, body: dict[str, Any], accept: str | None) -> httpx.Response:
    params = {k: json.dumps(v) if k == "variables" else v for k, v in body.items()}
    headers = {} if accept is None else {"accept": accept}
    return httpx.get(server.url, params=params, headers=headers, timeout=10)


@pytest.mark.parametrize("accept", SPEC_ACCEPTS)
@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("why", REQUEST_ERRORS)
def test_a_request_that_cannot_run_is_400_without_data_in_the_spec_media_type(
    server: ServerProcess, why: str, method: str, accept: str
) -> None:
    body, message = REQUEST_ERRORS[why]
    response = (post if method == "POST" else get)(server, body, accept)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == SPEC_CONTENT_TYPE
    assert list(response.json()) == ["errors"], "no data entry: nothing ran"
    assert [e["message"] for e in response.json()["errors"]] == [message]


@pytest.mark.parametrize("accept", LEGACY_ACCEPTS)
@pytest.mark.parametrize("why", REQUEST_ERRORS)
def test_a_request_that_cannot_run_is_200_with_null_data_in_application_json_as_before(
    server: ServerProcess, why: str, accept: str | None
) -> None:
    body, message = REQUEST_ERRORS[why]
    response = post(server, body, accept)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["data"] is None
    assert [e["message"] for e in response.json()["errors"]] == [message]


def test_no_request_error_is_logged_as_a_fault(server: ServerProcess) -> None:
    for body, _ in REQUEST_ERRORS.values():
        post(server, body, SPEC)
    assert "ERROR" not in server.log(), server.log()


@pytest.mark.parametrize("accept", SPEC_ACCEPTS)
def test_a_query_in_the_spec_media_type_is_200_with_its_data(
    server: ServerProcess, accept: str
) -> None:
    for response in (
        post(server, {"query": "{ markets { id } }"}, accept),
        get(server, {"query": "{ markets { id } }"}, accept),
    ):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == SPEC_CONTENT_TYPE
        assert response.json() == {
            "data": {"markets": [{"id": "BTC-PERP"}, {"id": "ETH-PERP"}, {"id": "SOL-PERP"}]}
        }


@pytest.mark.parametrize("accept", [*SPEC_ACCEPTS, *LEGACY_ACCEPTS])
def test_field_errors_are_200_with_data_in_either_media_type(
    server: ServerProcess, accept: str | None
) -> None:
    expected_type = SPEC_CONTENT_TYPE if accept in SPEC_ACCEPTS else "application/json"
    # A nullable field fails: the rest of the data is there.
    unknown = post(server, {"query": '{ markets { id } price(market: "X") { price } }'}, accept)
    # A non-null field needs a token: data is null, but the operation ran.
    private = post(server, {"query": "{ markets { id } positions { id } }"}, accept)
    for response, code in ((unknown, "UNKNOWN_MARKET"), (private, "UNAUTHENTICATED")):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == expected_type
        assert "data" in response.json()
        assert [e["extensions"]["code"] for e in response.json()["errors"]] == [code]
    assert unknown.json()["data"]["price"] is None
    assert len(unknown.json()["data"]["markets"]) == 3
    assert private.json()["data"] is None


@pytest.mark.parametrize("accept", [*SPEC_ACCEPTS, *LEGACY_ACCEPTS])
def test_a_refused_token_is_401_in_the_negotiated_media_type(
    server: ServerProcess, accept: str | None
) -> None:
    response = post(server, {"query": "{ markets { id } }"}, accept, bearer="not-a-token")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    error = {
        "message": "Unauthenticated: malformed token: Not enough segments",
        "extensions": {"code": "UNAUTHENTICATED"},
    }
    if accept in SPEC_ACCEPTS:
        assert response.headers["content-type"] == SPEC_CONTENT_TYPE
        assert response.json() == {"errors": [error]}
    else:
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"data": None, "errors": [error]}


@pytest.mark.parametrize(
    ("accept", "price"),
    [(accept, f"{101 + i}.5") for i, accept in enumerate([*SPEC_ACCEPTS, *LEGACY_ACCEPTS])],
)
def test_a_mutation_over_get_is_refused_with_405_and_does_not_run(
    server: ServerProcess, accept: str | None, price: str
) -> None:
    service = token("oracle", role="service")
    published = post(server, {"query": PUBLISH, "variables": {"p": price}}, accept, service)
    assert published.status_code == 200, published.text

    headers = {"authorization": f"Bearer {service}"}
    if accept is not None:
        headers["accept"] = accept
    params = {"query": PUBLISH, "variables": json.dumps({"p": "1.00"})}
    refused = httpx.get(server.url, params=params, headers=headers, timeout=10)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert refused.text == "mutations are not allowed when using GET"
    assert post(server, {"query": PRICE}, accept).json()["data"] == {"price": {"price": price}}


def test_any_other_method_is_405_naming_get_and_post(server: ServerProcess) -> None:
    response = httpx.put(server.url, json={"query": "{ markets { id } }"}, timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


async def test_subscriptions_keep_their_transports_when_the_spec_type_is_accepted_too(
    server: ServerProcess,
) -> None:
    """SSE and multipart answer in their own media types whatever else Accept lists, and a
    WebSocket subscriber open across the requests that cannot run hears the next price."""
    service = token("oracle", role="service")
    body = {"query": PRICE_SUBSCRIPTION, "variables": {"m": "BTC-PERP"}}
    async with httpx.AsyncClient(timeout=10) as http:

        async def publish(price: str) -> None:
            mutation = PUBLISH.replace("SOL-PERP", "BTC-PERP")
            headers = {"authorization": f"Bearer {service}"}
            response = await http.post(
                server.url, json={"query": mutation, "variables": {"p": price}}, headers=headers
            )
            assert response.status_code == 200, response.text

        await publish("100.5")
        async with GraphQLWS.connect(server.ws_url) as bystander:
            await bystander.subscribe("b", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
            assert (await bystander.next_data("b", "priceUpdates"))["price"] == "100.5"

            sse = {"accept": f"{SPEC}, text/event-stream"}
            async with aconnect_sse(http, "POST", server.url, json=body, headers=sse) as source:
                assert source.response.headers["content-type"] == "text/event-stream"
                event = await anext(source.aiter_sse())
            assert event.event == "next"
            assert json.loads(event.data)["data"]["priceUpdates"]["price"] == "100.5"

            # As Apollo Client 4 asks for a subscription over HTTP.
            multipart = {
                "accept": f'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,{SPEC},'
                "application/json;q=0.9"
            }
            text = ""
            async with http.stream("POST", server.url, json=body, headers=multipart) as response:
                assert response.headers["content-type"].startswith("multipart/mixed")
                async for chunk in response.aiter_text():
                    text += chunk
                    if any("payload" in part for part in parse_multipart(text)):
                        break
            [part] = [part["payload"] for part in parse_multipart(text) if "payload" in part]
            assert part["data"]["priceUpdates"]["price"] == "100.5"

            for request_error, _ in REQUEST_ERRORS.values():
                response = await http.post(server.url, json=request_error, headers={"accept": SPEC})
                assert response.status_code == 400
            await publish("100.6")
            assert (await bystander.next_data("b", "priceUpdates"))["price"] == "100.6"


def test_graphql_http_server_audits_find_no_warning_and_no_error(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    node = node_packages(AUDIT_DIR)
    audit = subprocess.run(
        [node, "audit.mjs", server.url], cwd=AUDIT_DIR, capture_output=True, text=True, timeout=120
    )
    *report, last = audit.stdout.splitlines() or [""]
    with capsys.disabled():  # the tally, on the terminal even when the test passes
        print("\n" + "\n".join(report))
    tally = json.loads(last)
    assert (tally["warn"], tally["error"]) == (0, 0), audit.stdout
    assert audit.returncode == 0, audit.stdout + audit.stderr
