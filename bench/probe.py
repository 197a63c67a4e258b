"""While the load runs, the calls an oracle adapter and a dashboard make over HTTP, on a schedule,
timed: does the server still answer while it is saturated?

Each ``Caller`` sends one GraphQL operation ``hz`` times a second, on an asyncio loop in a thread
of its own, without waiting for the previous answer (an oracle does not wait either). A call is
answered when it got HTTP 200 without errors within ``timeout_s``; its latency runs from the
moment it was sent. Percentiles count every call sent: one not answered counts as slower than
any answered, so a p99 that falls on one is reported as None (past the time-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64
"""HTTP connections the probe opens at most; calls past it wait for one (that wait is timed)."""


@dataclass(frozen=True)
class Caller:
    name: str
    what: str
    """The operation, as a reader sees it in the report."""
    hz: float
    body: Callable[[int], dict[str, Any]]
    """The JSON body of the k-th call."""
    token: str


@dataclass
class Call:
    sent: float
    """time.monotonic() when it was sent."""
    latency_s: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class CallStats:
    name: str
    what: str
    hz: float
    sent: int
    answered: int
    errors: int
    """Answered with an error or a status other than 200 (the rest of the unanswered timed out)."""
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def percentile_ms(latencies: Sequence[float | None], q: float) -> float | None:
    """The q-quantile of ``latencies`` in ms (as the load client takes it); None stands for a call
    not answered, slower than every answered one."""
    if not latencies:
        return None
    ordered = sorted(latencies, key=lambda s: math.inf if s is None else s)
    value = ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]
    return None if value is None else round(value * 1000, 1)


def summarize(caller: Caller, calls: Sequence[Call]) -> CallStats:
    latencies = [c.latency_s for c in calls]
    answered = [s for s in latencies if s is not None]
    return CallStats(
        name=caller.name,
        what=caller.what,
        hz=caller.hz,
        sent=len(calls),
        answered=len(answered),
        errors=sum(1 for c in calls if c.error is not None),
        p50_ms=percentile_ms(latencies, 0.5),
        p99_ms=percentile_ms(latencies, 0.99),
        max_ms=round(max(answered) * 1000, 1) if answered else None,
    )


@dataclass
class Probe:
    """The callers against ``url``, from ``start()`` until ``stop()``."""

    url: str
    callers: Sequence[Caller]
    timeout_s: float = TIMEOUT_S
    calls: dict[str, list[Call]] = field(default_factory=dict, init=False)
    error: BaseException | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _stopping: asyncio.Event | None = field(default=None, init=False)
    _started: threading.Event = field(default_factory=threading.Event, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="bench-probe", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self, window: tuple[float, float] | None = None) -> list[CallStats]:
        """Stop sending, give the calls in flight up to ``timeout_s`` to be answered, and sum up
        the calls sent within ``window`` (time.monotonic() bounds; None: all of them)."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(self.timeout_s + 10)
        stats = []
        for caller in self.callers:
            calls = self.calls.get(caller.name, [])
            if window is not None:
                calls = [c for c in calls if window[0] <= c.sent <= window[1]]
            stats.append(summarize(caller, calls))
        return stats

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the caller of stop(), not lost in a thread
            self.error = exc
        finally:
            self._started.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        in_flight: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as http:
            schedules = [
                asyncio.create_task(self._schedule(http, caller, in_flight))
                for caller in self.callers
            ]
            self._started.set()
            await self._stopping.wait()
            for task in schedules:
                task.cancel()
            await asyncio.gather(*schedules, return_exceptions=True)
            if in_flight:
                await asyncio.wait(in_flight, timeout=self.timeout_s + 1)
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _schedule(
        self, http: httpx.AsyncClient, caller: Caller, in_flight: set[asyncio.Task[None]]
    ) -> None:
        """Send the k-th call at k / hz seconds: late (this process starved of CPU on a loaded
        machine), the next ones go at once until it is back on schedule, so the server is
        offered hz calls a second over the run, as stated."""
        calls = self.calls.setdefault(caller.name, [])
        interval = 1.0 / caller.hz
        due = time.monotonic()
        k = 0
        while True:
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            call = Call(sent=time.monotonic())
            calls.append(call)
            task = asyncio.create_task(self._send(http, caller, caller.body(k), call))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            k += 1
            due += interval

    async def _send(
        self, http: httpx.AsyncClient, caller: Caller, body: dict[str, Any], call: Call
    ) -> None:
        headers = {"authorization": f"Bearer {caller.token}"}
        try:
            response = await http.post(self.url, json=body, headers=headers)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            call.error = None if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
            return
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if response.status_code != 200 or errors:
            call.error = str(errors[0].get("message")) if errors else f"HTTP {response.status_code}"
            return
        call.latency_s = time.monotonic() - call.sent
