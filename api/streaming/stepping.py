"""Stepping a subscription's source stream from the hub's own loop: no task wake-up per event.

A fan-out group (:mod:`api.graphql.fanout`) whose subscription is private is a group of one, and
each of
its events used to cost a task wake-up: the hub put the event in the subscription's queue, set an
``asyncio.Event``, and the loop later resumed the group's task, which resumed the resolver's async
generator, which took the event. A :class:`Stepper` instead drives the group's source stream (the
resolver's generator) itself, synchronously, while the hub delivers: the hub's ``put`` calls the
stepper, which runs the generator to its next event, executes it and writes the frame, then
returns to the hub, which goes on with the next queue. One event of a topic reaches every group of
that topic in one pass of the hub's loop.

The generator cannot tell. It awaits a hub queue's :class:`Wakeup` as it always did; what the await
does depends on who runs it:

- in a task (the group's own, or any other reader of the hub): an ``asyncio.Event``, as before;
- in a stepper's synchronous step: the stepper *parks* there (the wakeup remembers it, the await
  yields :data:`PARKED` to the stepper, which returns), and the wakeup's next ``set`` resumes it.

Anything else the generator awaits during a step (a database read, a sleep) is handed to the
group's own task, which finishes that await there, as a task would have; the stepper then goes on
stepping. During a step ``asyncio.current_task()`` is the group's task (whatever task called the
hub), so ``asyncio.timeout`` and friends see the task that will own the rest of the work, and the
step runs in the group's context (its context variables).
"""

from __future__ import annotations

import asyncio
from asyncio.tasks import _enter_task, _leave_task
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Coroutine, Generator


class Steppable(Protocol):
    def resume(self) -> None:
        """Go on stepping: the wakeup this was parked on was set."""
        ...


class _Parked:
    """What an await yields to the stepper running it: "parked on a wakeup, resume me later"."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield self


PARKED = _Parked()

_stepping: list[Steppable | None] = [None]
"""The stepper whose synchronous step is running now, if any (one loop, one thread)."""


def current() -> Steppable | None:
    return _stepping[0]


class Stepping:
    """``with Stepping(stepper):`` marks a synchronous step of ``stepper`` (nested steps restore
    the outer one), with ``task`` as asyncio's current task for its duration."""

    __slots__ = ("_outer", "_previous_task", "loop", "stepper", "task")

    def __init__(
        self, stepper: Steppable, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]
    ) -> None:
        self.stepper = stepper
        self.loop = loop
        self.task = task
        self._outer: Steppable | None = None
        self._previous_task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        self._outer = _stepping[0]
        _stepping[0] = self.stepper
        current_task = asyncio.current_task(self.loop)
        if current_task is not self.task:
            if current_task is not None:
                _leave_task(self.loop, current_task)
            _enter_task(self.loop, self.task)
            self._previous_task = current_task
        else:
            self._previous_task = self.task

    def __exit__(self, *_: object) -> None:
        _stepping[0] = self._outer
        previous = self._previous_task
        if previous is not self.task:
            _leave_task(self.loop, self.task)
            if previous is not None:
                _enter_task(self.loop, previous)
        self._outer = self._previous_task = None


class Wakeup:
    """``asyncio.Event``'s ``set``/``clear``/``wait`` for hub queues, where a stepper may park.

    The ``asyncio.Event`` behind it is made only when a task waits: a parked stepper needs none.
    """

    __slots__ = ("_event", "_set", "parked")

    def __init__(self) -> None:
        self._set = False
        self._event: asyncio.Event | None = None
        self.parked: Steppable | None = None
        """The stepper parked here, resumed by the next ``set``."""

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        parked = self.parked
        if parked is not None:
            self.parked = None
            parked.resume()
        elif self._event is not None:
            self._event.set()

    def clear(self) -> None:
        self._set = False
        if self._event is not None:
            self._event.clear()

    async def wait(self) -> None:
        if self._set:
            return
        stepper = _stepping[0]
        if stepper is not None:
            self.parked = stepper
            await PARKED
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class Continue:
    """Awaited in a task: finishes a coroutine that a synchronous step started and that is now
    waiting for ``first`` (a future it yielded), as the task would have run it from the start:
    what the task is sent or thrown goes to the coroutine, what it yields goes to the task."""

    __slots__ = ("context", "coroutine", "first")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], first: Any, context: Any) -> None:
        self.coroutine = coroutine
        self.first = first
        self.context = context

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine = self.coroutine
        run = self.context.run
        pending = self.first
        self.first = None
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # cancellation, above all: the coroutine's to handle
                try:
                    pending = run(coroutine.throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = run(coroutine.send, sent)
                except StopIteration as stop:
                    return stop.value
