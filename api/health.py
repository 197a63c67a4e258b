"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from starlette.datastructures import State
    from starlette.requests import Request

    from api.services import Services

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
    """What this process is serving: open topics, shared executions and their subscribers."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    connections = request.app.state.view.connections
    leadership = getattr(request.app.state, "leadership", None)
    return JSONResponse(
        {
            "webSockets": len(connections),
            "webSocketsWrittenDirectly": sum(c.direct for c in connections),
            "pendingBytes": sum(c.pending_bytes for c in connections),
            "maxPendingBytes": max((c.pending_bytes for c in connections), default=0),
            "conflated": sum(c.conflated for c in connections),
            "topics": services.hub.topics,
            "groups": len(services.groups),
            "groupMembers": services.groups.members,
            "rabbitmq": None if services.consumer is None else services.consumer.stats(),
            "leader": leadership is not None and leadership.leader,
            "leaderTerms": 0 if leadership is None else leadership.terms,
            "workers": _workers(request.app.state),
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
