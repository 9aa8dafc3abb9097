"""One timer per asyncio loop for the deadlines of every shielded wait.

A shielded wait is bounded (``Background.aclose``'s grace, a run's children's grace,
``Runs.shutdown``), and nearly always ends long before its bound. A timer of its own
per wait (``loop.call_later``, then ``cancel()``) costs about 1.5 us to make, and as
much again for the loop to sift out of its heap later: as much as the rest of a
``Background`` start and close together. Here every wait of a loop shares one timer,
armed for the earliest deadline: adding a wait is one push on a heap of our own,
and a wait that ended early leaves its entry to be dropped when its deadline comes
(or when the heap is pruned, if ended waits pile up).

An entry only resolves its future (``set_result(None)`` on a pending one): the
waiter then looks at the clock itself, so a timer that fires early, or an entry
whose future another wait has replaced, does no harm.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING

from ._per_loop import PerLoop

if TYPE_CHECKING:
    import asyncio

__all__ = ("wake_at",)

_PRUNE_FROM = 64
"""A heap at least this long is pruned of ended waits once it has doubled."""

_order = itertools.count()  # ties on a deadline are broken by arrival, never by future


class _Deadlines:
    """The deadlines of one loop's shielded waits, and the one timer for them."""

    __slots__ = ("__weakref__", "_armed", "_armed_at", "_heap", "_prune_at")

    def __init__(self, _loop: asyncio.AbstractEventLoop) -> None:
        # The loop holds this keeper (through its armed timer), not the other way
        # round; a timer that a newer one replaced fires and finds itself stale.
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._armed = 0  # which timer is the live one (0: none is armed)
        self._armed_at = 0.0
        self._prune_at = _PRUNE_FROM

    def add(self, loop: asyncio.AbstractEventLoop, when: float, fut: asyncio.Future[None]) -> None:
        heap = self._heap
        heapq.heappush(heap, (when, next(_order), fut))
        if len(heap) >= self._prune_at:
            self._prune()
        if not self._armed or when < self._armed_at:
            self._arm(loop, when)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._armed = timer = next(_order)
        self._armed_at = when
        loop.call_at(when, self._fire, loop, timer)

    def _prune(self) -> None:
        """Drop the entries of waits that have ended; in place, as amortized O(1)."""
        heap = self._heap
        heap[:] = [entry for entry in heap if not entry[2].done()]
        heapq.heapify(heap)
        self._prune_at = max(_PRUNE_FROM, 2 * len(heap))

    def _fire(self, loop: asyncio.AbstractEventLoop, timer: int) -> None:
        if timer != self._armed:
            return  # replaced by a timer for an earlier deadline
        self._armed = 0
        heap = self._heap
        now = loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_result(None)
        if heap:
            self._arm(loop, heap[0][0])


# Held weakly (see PerLoop): a keeper with waits to time has a timer armed, so its
# loop holds it; one with none is made again when next needed. Its heap holds its
# waits' futures, and they their loop.
_keepers: PerLoop[asyncio.AbstractEventLoop, _Deadlines] = PerLoop(_Deadlines)


def wake_at(loop: asyncio.AbstractEventLoop, when: float, fut: asyncio.Future[None]) -> None:
    """Resolve ``fut`` (if still pending) once ``loop.time()`` reaches ``when``; call
    in ``loop``'s thread. An infinite ``when`` is never reached: nothing is kept."""
    if when != math.inf:
        _keepers.get(loop).add(loop, when, fut)
