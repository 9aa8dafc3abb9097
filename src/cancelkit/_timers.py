"""Deadlines for tokens: one daemon thread and a heap, not a thread per token.

A token with a timeout must fire even when no event loop runs (a sync tool in a
worker thread checks it), so deadlines cannot live on an event loop. One thread
sleeps until the earliest deadline. Entries hold the token weakly: a dropped token
is not kept alive by its deadline, and dead entries are purged once they are the
majority, so memory stays flat under millions of short-lived tokens.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from typing import Protocol

__all__ = ("Deadline", "Expiring", "schedule")


class Expiring(Protocol):
    """What a deadline fires: a token, as far as this module needs to know."""

    def _expire(self) -> None:
        """The deadline passed (called in the timer thread)."""


class Deadline:
    """A scheduled expiry; ``discard()`` it when the token is cancelled earlier."""

    __slots__ = ("__weakref__", "_ref", "at", "seq")

    def __init__(self, at: float, seq: int, token: Expiring) -> None:
        self.at = at
        self.seq = seq
        self._ref: weakref.ref[Expiring] | None = weakref.ref(token, self._on_token_dropped)

    def __lt__(self, other: Deadline) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)

    def token(self) -> Expiring | None:
        ref = self._ref
        return None if ref is None else ref()

    def discard(self) -> None:
        """Mark the entry dead; the timer thread skips and later purges it."""
        if self._ref is not None:
            self._ref = None
            _timers.dead += 1

    def _on_token_dropped(self, _ref: weakref.ref[Expiring]) -> None:
        # Runs inside garbage collection, possibly while the timer lock is held by
        # this very thread: it must not take the lock. A rough count is enough.
        self._ref = None
        _timers.dead += 1


class _Timers:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[Deadline] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self.dead = 0

    def schedule(self, token: Expiring, at: float) -> Deadline:
        with self._cond:
            entry = Deadline(at, next(self._seq), token)
            if self.dead > 1024 and self.dead * 2 > len(self._heap):
                self._purge()
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="cancelkit-deadlines", daemon=True
                )
                self._thread.start()
            return entry

    def _purge(self) -> None:
        self._heap = [entry for entry in self._heap if entry.token() is not None]
        heapq.heapify(self._heap)
        self.dead = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0].token() is None:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0].at - time.monotonic()
                    if delay <= 0:
                        entry = heapq.heappop(self._heap)
                        break
                    self._cond.wait(delay)
            token = entry.token()
            entry._ref = None  # noqa: SLF001 - fired: neither purge nor count it again
            if token is not None:
                token._expire()  # noqa: SLF001 - the timer is the token's own helper
            # Not held while waiting for the next deadline, which may never come.
            del token, entry


_timers = _Timers()


def schedule(token: Expiring, timeout: float) -> Deadline:
    """Expire ``token`` after ``timeout`` seconds (monotonic clock)."""
    return _timers.schedule(token, time.monotonic() + timeout)
