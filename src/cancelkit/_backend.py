"""The few places where asyncio and trio differ, behind one small interface.

cancelkit's core runs on both event loops. Almost everything is written once, on
anyio; what is here is what must be written twice: finding out which loop runs the
current task, and a *waiter*, a one-shot event that any thread can set and that
wakes the task on its own loop safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import Literal, Protocol

__all__ = ("Backend", "Completion", "Waiter", "current_backend", "make_waiter")

Backend = Literal["asyncio", "trio"]

_get_running_loop = asyncio.events._get_running_loop  # noqa: SLF001 - the fast check


def current_backend() -> Backend:
    """Name the event loop running the current task.

    Raises:
        RuntimeError: when called outside asyncio and trio.
    """
    if _get_running_loop() is not None:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    raise RuntimeError("cancelkit needs a running asyncio or trio event loop here")


class Waiter(Protocol):
    """A one-shot event owned by one task: ``set()`` from anywhere, awaited there."""

    def set(self) -> None:
        """Wake the waiting task; safe from any thread, idempotent."""

    @property
    def is_set(self) -> bool:
        """Whether the waiter has been set (as seen from the owning loop)."""

    async def wait(self) -> None:
        """Wait until set; cancellable like any await."""

    async def wait_shielded(self, timeout: float, *, rearm: bool = True) -> bool:
        """Wait until set or ``timeout`` seconds pass, holding cancellation off.

        A cancellation that arrives meanwhile is delivered at the next await after
        this (``rearm``); a caller already re-raising a cancellation passes False.

        Returns:
            True if the waiter was set in time.
        """


class _AsyncioWaiter:
    __slots__ = ("_fut", "_is_set", "_loop", "_thread")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._is_set = False
        self._fut: asyncio.Future[None] | None = None

    def set(self) -> None:
        if threading.get_ident() == self._thread:
            self._wake()
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to wake
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._is_set = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    @property
    def is_set(self) -> bool:
        return self._is_set

    async def wait(self) -> None:
        if self._is_set:
            return
        self._fut = fut = self._loop.create_future()
        await fut

    async def wait_shielded(self, timeout: float, *, rearm: bool = True) -> bool:
        # asyncio cannot shield an await inside the current task: a cancel cancels
        # the future we wait on. So each cancel is absorbed and the wait goes on on a
        # fresh future; at the end the cancellation is re-armed, so it is delivered at
        # the task's next await, as a trio shield would deliver it.
        deadline = self._loop.time() + timeout
        absorbed: asyncio.CancelledError | None = None
        while not self._is_set:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            self._fut = fut = self._loop.create_future()
            timer = self._loop.call_later(remaining, _resolve, fut)
            try:
                await fut
            except asyncio.CancelledError as cancel:
                absorbed = cancel
            finally:
                timer.cancel()
        if absorbed is not None and rearm and _lost(absorbed):
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
                task.cancel(absorbed.args[0] if absorbed.args else None)
        return self._is_set


def _lost(absorbed: asyncio.CancelledError) -> bool:
    """Whether an absorbed cancellation would be lost unless re-armed.

    Not when a cancellation is already propagating through the awaiting frames (we
    are in its cleanup), nor when it came from an anyio cancel scope (anyio delivers
    it again at the next await while the scope stays cancelled).
    """
    if isinstance(sys.exc_info()[1], asyncio.CancelledError):
        return False
    message = absorbed.args[0] if absorbed.args else None
    return not (isinstance(message, str) and message.startswith("Cancelled via cancel scope"))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _TrioWaiter:
    __slots__ = ("_event", "_thread", "_token")

    def __init__(self) -> None:
        import trio  # noqa: PLC0415 - trio is optional; only imported on a trio loop

        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()

    def set(self) -> None:
        if threading.get_ident() == self._thread:
            self._event.set()
            return
        import trio  # noqa: PLC0415

        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._event.set)

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    async def wait_shielded(self, timeout: float, *, rearm: bool = True) -> bool:
        import trio  # noqa: PLC0415

        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            await self._event.wait()
        return self._event.is_set()


def make_waiter() -> Waiter:
    """A waiter for the current task's event loop."""
    if current_backend() == "asyncio":
        return _AsyncioWaiter()
    return _TrioWaiter()


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
