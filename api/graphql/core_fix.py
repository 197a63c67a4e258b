"""Fixes for memory leaks in graphql-core 3.3's executor, applied at start-up.

1. ``Executor.build_per_event_executor`` makes each event's executor as a shallow copy of the
   subscription's, so every event shares the subscription's memo of collected subfields
   (``_relevant_sub_fields``). That memo is keyed by the identity of each event's own field lists
   and keeps them alive, so it never hits across events and gains an entry per object field per
   event, for as long as the subscription runs: about 1.3 KB per result of a price subscription,
   measured with ``python -m bench.soak`` (about 20 MB a minute at 2500 results a second). Here
   each event's executor gets a memo of its own, which still serves the lists within that one
   event and goes with it.

2. ``Executor.__init__`` gives resolvers ``async_helpers`` made of the executor's own bound
   methods, so every executor is in a reference cycle with itself, and with it everything it
   holds: the context value (for a WebSocket: the socket, its protocol and buffers), the
   variables, the document. Refcounting never frees it; the cyclic collector does, but an
   execution that lived through a collection of the middle generation (any subscription that
   ran for more than moments) is by then in the oldest, which the server's collector thresholds
   (api/cli.py) make rare: a few KB per ended subscription, growing without plateau. Here the
   helpers reach the executor through weak references, so it goes when its execution does.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from graphql.execution.executor import Executor
from graphql.type.definition import GraphQLResolveInfoHelpers

if TYPE_CHECKING:
    from collections.abc import Callable

_original = Executor.build_per_event_executor
_original_init = Executor.__init__


def _build_per_event_executor(self: Executor[Any], payload: Any) -> Executor[Any]:
    executor = _original(self, payload)
    if getattr(executor, "_relevant_sub_fields", None) is getattr(
        self, "_relevant_sub_fields", None
    ):
        executor._relevant_sub_fields = {}
    return executor


def _init(self: Executor[Any], *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    helpers = self.async_helpers
    if getattr(helpers.gather, "__self__", None) is self:  # as 3.3 makes them: bound methods
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=_weak(helpers.gather), track=_weak(helpers.track)
        )


def _weak(method: Callable[..., Any]) -> Callable[..., Any]:
    reference = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = reference()
        if bound is None:
            raise RuntimeError("the GraphQL execution these helpers belong to has ended")
        return bound(*args, **kwargs)

    return call


def apply() -> None:
    """Install the fixes (once; later calls do nothing)."""
    Executor.build_per_event_executor = _build_per_event_executor  # type: ignore[method-assign]
    Executor.__init__ = _init  # type: ignore[method-assign]
