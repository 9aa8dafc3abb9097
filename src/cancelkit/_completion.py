"""``Completion``: a one-shot "it has ended" that tasks await, plainly or shielded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backends import make_waiter

if TYPE_CHECKING:
    from ._backends import Waiter

__all__ = ("Completion",)


class Completion:
    """A one-shot "it has ended" that any number of tasks can await.

    ``set()`` is called once, in the loop's thread; waiting may be plain or shielded
    from cancellation with a bound. Used by tasks and runs for their endings.
    """

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[Waiter] = []

    @property
    def is_set(self) -> bool:
        """Whether ``set()`` has been called."""
        return self._is_set

    def set(self) -> None:
        """Mark it ended and wake every waiter."""
        self._is_set = True
        for waiter in self._waiters:
            waiter.set()

    async def wait(self) -> None:
        """Wait until set; cancellable."""
        if self._is_set:
            return
        waiter = make_waiter()
        self._waiters.append(waiter)
        try:
            await waiter.wait()
        finally:
            self._waiters.remove(waiter)

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait until set or ``timeout`` seconds, ignoring cancellation; whether set."""
        if not self._is_set:
            waiter = make_waiter()
            self._waiters.append(waiter)
            try:
                await waiter.wait_shielded(timeout)
            finally:
                self._waiters.remove(waiter)
        return self._is_set
