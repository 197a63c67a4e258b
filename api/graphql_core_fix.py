"""A fix for a memory leak in graphql-core 3.3's subscriptions, applied at start-up.

``Executor.build_per_event_executor`` makes each event's executor as a shallow copy of the
subscription's, so every event shares the subscription's memo of collected subfields
(``_relevant_sub_fields``). That memo is keyed by the identity of each event's own field lists and
keeps them alive, so it never hits across events and gains an entry per object field per event,
for as long as the subscription runs: about 1.3 KB per result of a price subscription, measured
with ``python -m bench.soak`` (about 20 MB a minute at 2500 results a second). Here each event's
executor gets a memo of its own, which still serves the lists within that one event and goes with
it.
"""

from __future__ import annotations

from typing import Any

from graphql.execution.executor import Executor

_original = Executor.build_per_event_executor


def _build_per_event_executor(self: Executor[Any], payload: Any) -> Executor[Any]:
    executor = _original(self, payload)
    if getattr(executor, "_relevant_sub_fields", None) is getattr(
        self, "_relevant_sub_fields", None
    ):
        executor._relevant_sub_fields = {}
    return executor


def apply() -> None:
    """Install the fix (once; later calls do nothing)."""
    Executor.build_per_event_executor = _build_per_event_executor  # type: ignore[method-assign]
