"""One browser tab a test drives (Playwright on Debian's chromium): what the page logged as an
error or warning, and the frames its WebSockets sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page, WebSocket


class Tab:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        """Page errors, and console errors and warnings (chromium reports CSP violations there)."""
        self.sockets: list[WebSocket] = []
        self.sent: list[dict[str, Any]] = []
        """Every frame a WebSocket of the page sent, with ``socket``: which one (from 1)."""
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)
        page.on("websocket", self._socket)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def _socket(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        n = len(self.sockets)
        ws.on("framesent", lambda frame: self.sent.append({**orjson.loads(frame), "socket": n}))
