"""The two media types of a GraphQL response over HTTP, and which one a request's ``Accept`` asks
for.

``application/graphql-response+json`` is the GraphQL-over-HTTP spec's own: its status code says
what happened (400 and no ``data`` entry for a request that could not run), so proxies, logs and
clients can rely on it. ``application/json`` is what older clients read, and is answered as it
always was: 200 for every GraphQL response, a request error included (``"data": null``).

The choice follows RFC 9110's content negotiation (section 12.5.1): each type gets the weight
(``q``) of the most specific media range in ``Accept`` that matches it. The spec's type is chosen
when it weighs more than ``application/json``, or as much when the client names it (``Accept:
application/graphql-response+json, application/json`` from a client that knows both). Anything
else is ``application/json``: no ``Accept``, ``*/*``, ``application/*``, or a header that names
neither (the spec lets a server answer in a type of its choosing then).
"""

from __future__ import annotations

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"

_NAMED = 2
"""The specificity of a media range that names the type (``type/*`` is 1, ``*/*`` is 0)."""


def response_media_type(accept: str | None) -> str:
    """The media type of the GraphQL response to a request with this ``Accept`` header."""
    if not accept:
        return JSON
    ranges = list(_media_ranges(accept))
    spec_q, spec_specificity = _weight(GRAPHQL_RESPONSE_JSON, ranges)
    json_q, _ = _weight(JSON, ranges)
    if spec_q > json_q or (spec_q > 0 and spec_q == json_q and spec_specificity == _NAMED):
        return GRAPHQL_RESPONSE_JSON
    return JSON


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """``(media range, q)`` for each element of ``Accept``; one with a malformed ``q`` is left
    out."""
    ranges = []
    for element in accept.split(","):
        media_range, *parameters = (part.strip() for part in element.split(";"))
        if "/" not in media_range:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0 <= q <= 1:
            ranges.append((media_range.lower(), q))
    return ranges


def _weight(media_type: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """The ``q`` of the most specific range matching ``media_type`` and that range's
    specificity; ``(0, -1)`` when none matches."""
    kind = media_type.split("/")[0]
    matches = {media_type: _NAMED, f"{kind}/*": 1, "*/*": 0}
    weight, specificity = 0.0, -1
    for media_range, q in ranges:
        found = matches.get(media_range, -1)
        if found > specificity:
            weight, specificity = q, found
    return weight, specificity
