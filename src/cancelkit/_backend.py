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

__all__ = ("Backend", "Waiter", "current_backend", "make_waiter")

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

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait until set or ``timeout`` seconds pass, ignoring cancellation.

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

    async def wait_shielded(self, timeout: float) -> bool:
        # asyncio cannot shield an await inside the current task: a cancel cancels
        # the future we wait on. So we absorb each cancel and wait on a fresh future;
        # the caller re-raises the cancellation it got in the first place.
        deadline = self._loop.time() + timeout
        while not self._is_set:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            self._fut = fut = self._loop.create_future()
            timer = self._loop.call_later(remaining, _resolve, fut)
            try:
                await fut
            except asyncio.CancelledError:
                continue
            finally:
                timer.cancel()
        return True


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

    async def wait_shielded(self, timeout: float) -> bool:
        import trio  # noqa: PLC0415

        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            await self._event.wait()
        return self._event.is_set()


def make_waiter() -> Waiter:
    """A waiter for the current task's event loop."""
    if current_backend() == "asyncio":
        return _AsyncioWaiter()
    return _TrioWaiter()


def _in_anyio_shield(task: asyncio.Task[object]) -> bool:
    """Whether ``task`` is inside a shielded anyio ``CancelScope`` of its own.

    anyio's task groups never cancel a task inside such a scope; a plain
    ``task.cancel()`` would break right through it. anyio keeps the scope stack of each
    asyncio task in a private table; if that ever moves, we fall back to "not
    shielded", and the test suite's shield tests say so.
    """
    try:
        from anyio._backends._asyncio import _task_states  # noqa: PLC0415
    except ImportError:  # pragma: no cover - anyio reorganised
        return False
    state = _task_states.get(task)
    scope = getattr(state, "cancel_scope", None)
    while scope is not None and getattr(scope, "_host_task", None) is task:
        if scope.shield:
            return True
        scope = getattr(scope, "_parent_scope", None)
    return False


def cancel_tasks(tasks: list[asyncio.Task[object]]) -> None:
    """Cancel asyncio tasks the way a task group would: honouring anyio shields.

    A task inside a shielded scope is cancelled as soon as it leaves the shield: the
    check is repeated once per loop iteration until then, as anyio itself does.
    """
    deferred = []
    for task in tasks:
        if task.done():
            continue
        if _in_anyio_shield(task):
            deferred.append(task)
        else:
            task.cancel()
    if deferred:
        deferred[0].get_loop().call_soon(cancel_tasks, deferred)
