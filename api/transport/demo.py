"""The live demo page at ``/``: static HTML, CSS and ES modules from ``api/transport/static``, no
build step. The page talks to ``/graphql`` on its own origin over graphql-transport-ws."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from starlette.requests import Request

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page loads nothing but its own files and opens no connection but to its own origin
('self' covers ws: and wss: on it)."""


async def index(request: Request) -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


routes = [
    Route("/", index),
    Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
]
