"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from domain.topics import kind_of

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from starlette.datastructures import State
    from starlette.requests import Request

    from api.runtime.services import Services

CHECK_TIMEOUT_S = 2.0


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """PostgreSQL, the broadcast backend and (when configured) RabbitMQ answer: 200 if so, 503
    naming what fails if not."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    checks = {
        "postgres": await _check(services.pool.fetchval("SELECT 1")),
        "broadcast": await _check(services.broadcast.ping()),
    }
    if services.consumer is not None:
        checks["rabbitmq"] = await _check(services.consumer.ping())
    ready = all(result == "ok" for result in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


async def _check(probe: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"timed out after {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    return "ok"


async def stats(request: Request) -> JSONResponse:
    """What this process is serving: connections, open topics, shared executions and their
    subscribers. It takes no token, so it names no user, wallet or marathon: topics are counted
    by kind."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    view = request.app.state.view
    connections = view.connections
    slots = view.slots
    leadership = getattr(request.app.state, "leadership", None)
    return JSONResponse(
        {
            "connections": {
                **slots.by_transport,
                "open": slots.open,
                "clients": slots.clients,
                "max": slots.max_total,
                "maxPerClient": slots.max_per_client,
            },
            "webSockets": len(connections),
            "webSocketsWrittenDirectly": sum(c.direct for c in connections),
            "pendingBytes": sum(c.pending_bytes for c in connections),
            "maxPendingBytes": max((c.pending_bytes for c in connections), default=0),
            "conflated": sum(c.conflated for c in connections),
            "topics": topics_by_kind(services.hub.topics),
            "groups": len(services.groups),
            "groupMembers": services.groups.members,
            "rabbitmq": None if services.consumer is None else services.consumer.stats(),
            "leader": leadership is not None and leadership.leader,
            "leaderTerms": 0 if leadership is None else leadership.terms,
            "workers": _workers(request.app.state),
            "tasks": len(asyncio.all_tasks()),
        }
    )


def _workers(state: State) -> list[str]:
    """Every worker running in this process: its own, and the cluster's while it leads."""
    names: list[str] = []
    own = getattr(state, "workers", None)
    if own is not None:
        names += own.names
    leadership = getattr(state, "leadership", None)
    if leadership is not None and leadership.workers is not None:
        names += leadership.workers.names
    return sorted(names)


def topics_by_kind(topics: dict[str, int]) -> dict[str, dict[str, int]]:
    """``{kind: {"topics": open topics, "subscriptions": hub subscriptions}}``: a topic's key is
    a user, a wallet or a marathon (``positions:<user>``), which anonymous callers must not
    learn."""
    kinds: dict[str, dict[str, int]] = {}
    for name, subscriptions in topics.items():
        try:
            kind = kind_of(name).value
        except ValueError:
            kind = "other"
        counted = kinds.setdefault(kind, {"topics": 0, "subscriptions": 0})
        counted["topics"] += 1
        counted["subscriptions"] += subscriptions
    return dict(sorted(kinds.items()))
