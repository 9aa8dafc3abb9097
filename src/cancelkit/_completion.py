"""``Completion``: a one-shot "it has ended" that tasks await, plainly or shielded."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ._backends import make_waiter

if TYPE_CHECKING:
    from ._backends import Waiter

__all__ = ("Completion",)


class Completion:
    """A one-shot "it has ended" that any number of tasks can await.

    ``set()`` is called once, in the loop's thread or, for a sync run, in the thread
    that drives it (a waiter is woken on its own loop); waiting may be plain or
    shielded from cancellation with a bound. Used by tasks and runs for their endings.
    """

    __slots__ = ("_is_set", "_lock", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._lock = threading.Lock()  # a waiter added as another thread sets it
        self._waiters: list[Waiter] = []

    @property
    def is_set(self) -> bool:
        """Whether ``set()`` has been called."""
        return self._is_set

    def set(self) -> None:
        """Mark it ended and wake every waiter."""
        with self._lock:
            self._is_set = True
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.set()

    def _add(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiters.append(waiter)
            if self._is_set:
                waiter.set()

    async def wait(self) -> None:
        """Wait until set; cancellable."""
        if self._is_set:
            return
        waiter = make_waiter()
        self._add(waiter)
        try:
            await waiter.wait()
        finally:
            self._waiters.remove(waiter)

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait until set or ``timeout`` seconds, ignoring cancellation; whether set."""
        if not self._is_set:
            waiter = make_waiter()
            self._add(waiter)
            try:
                await waiter.wait_shielded(timeout)
            finally:
                self._waiters.remove(waiter)
        return self._is_set
