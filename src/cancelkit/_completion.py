"""``Completion``: a one-shot "it has ended" that tasks await, plainly or shielded.

Every task and run has one, and most are never awaited, so it is built to cost
nothing until somebody waits: no lock, and no list of waiters until the first one.
``set()`` may run in another thread than the waiters (a sync run finished by the
thread that drives it, awaited from async code), and it never takes a lock, so the
two sides hand over without one: ``set()`` marks the flag *before* it reads the
waiters, a waiter is added *before* it reads the flag. Whichever side comes second
sees the other, so every waiter is woken at least once (a waiter's ``set()`` is
idempotent, so twice does no harm).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ._backends import make_waiter

if TYPE_CHECKING:
    from ._backends import Waiter

__all__ = ("Completion",)

# Only for making a completion's list of waiters, once, if two loops in two threads
# wait for the same (sync) run at the same moment; ``set()`` never takes it.
_first_waiter = threading.Lock()


class Completion:
    """A one-shot "it has ended" that any number of tasks can await.

    ``set()`` is called once, in the loop's thread or, for a sync run, in the thread
    that drives it (a waiter is woken on its own loop); waiting may be plain or
    shielded from cancellation with a bound. Used by tasks and runs for their endings.
    """

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[Waiter] | None = None  # made by the first waiter

    @property
    def is_set(self) -> bool:
        """Whether ``set()`` has been called."""
        return self._is_set

    def set(self) -> None:
        """Mark it ended and wake every waiter."""
        self._is_set = True  # first: a waiter added from now on sees it (see _add)
        waiters = self._waiters
        if waiters:
            for waiter in waiters.copy():  # a C-level copy: a concurrent add is safe
                waiter.set()

    def _add(self, waiter: Waiter) -> list[Waiter]:
        waiters = self._waiters
        if waiters is None:
            with _first_waiter:
                waiters = self._waiters
                if waiters is None:
                    waiters = self._waiters = []
        waiters.append(waiter)
        if self._is_set:  # set() may have read the waiters before this one was in
            waiter.set()
        return waiters

    async def wait(self) -> None:
        """Wait until set; cancellable."""
        if self._is_set:
            return
        waiter = make_waiter()
        waiters = self._add(waiter)
        try:
            await waiter.wait()
        finally:
            waiters.remove(waiter)

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait until set or ``timeout`` seconds, ignoring cancellation; whether set."""
        if not self._is_set:
            waiter = make_waiter()
            waiters = self._add(waiter)
            try:
                await waiter.wait_shielded(timeout)
            finally:
                waiters.remove(waiter)
        return self._is_set


DONE = Completion()
"""A completion already set, shared by whatever starts out ended (never awaited on
a waiter: ``wait()`` returns at once)."""
DONE.set()
