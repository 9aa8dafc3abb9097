"""The few places where asyncio and trio differ, behind one small interface.

cancelkit's core runs on both event loops. Almost everything is written once, on
anyio; what differs is here, the way anyio splits its own (``anyio/_backends/``):
one :class:`Backend` interface, one implementation per loop
(:mod:`._asyncio`, :mod:`._trio`), chosen once per call by :func:`current`. No
other module branches on the loop or imports trio.

A backend gives: a *waiter* (a one-shot event any thread can set, that wakes the
task on its own loop), a *loop caller* (acts on the loop's tasks from anywhere, see
:mod:`cancelkit._loop_caller`), *loose tasks* (started from any task, stopped from
anywhere: asyncio tasks, trio system tasks) and ``gather``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Awaitable, Callable, Coroutine

    from .._adopt import Adopted
    from .._exceptions import CancelReason
    from .._loop_caller import LoopCaller

__all__ = (
    "Backend",
    "BackendName",
    "Finishing",
    "Waiter",
    "current",
    "current_backend",
    "local_wait",
    "loop_caller",
    "make_waiter",
    "running",
)

BackendName = Literal["asyncio", "trio"]

_get_running_loop = asyncio.events._get_running_loop  # noqa: SLF001 - the fast check


class Waiter(Protocol):
    """A one-shot event owned by one task: ``set()`` from anywhere, awaited there."""

    def set(self) -> None:
        """Wake the waiting task; safe from any thread, idempotent."""

    def wake(self, cause: object, /) -> None:
        """``set()``, as a callback that is passed why (a token's ``on_cancel``, a
        run's done callback)."""

    @property
    def shareable(self) -> bool:
        """Whether several tasks of its loop may wait on it at once (trio's events);
        asyncio's may not: a cancelled waiter cancels the future it waits on."""

    def here(self) -> bool:
        """Whether it belongs to the event loop running the current task."""

    @property
    def is_set(self) -> bool:
        """Whether the waiter has been set (as seen from the owning loop)."""

    def wait(self) -> Awaitable[None]:
        """Wait until set (await what it returns); cancellable like any await."""

    async def wait_shielded(self, timeout: float, *, rearm: bool = True) -> bool:
        """Wait until set or ``timeout`` seconds pass, holding cancellation off.

        A cancellation that arrives meanwhile is delivered at the next await after
        this (``rearm``); a caller already re-raising a cancellation passes False.

        Returns:
            True if the waiter was set in time.
        """


class Finishing(Protocol):
    """What a loose task reports its end to (an :class:`~cancelkit.OwnedTask`): the
    object itself, not a bound method of it, so a task costs one object less."""

    def _finish(self, value: Any, error: BaseException | None, cancelled: bool, /) -> None:
        """The task ended: with ``value``, with ``error``, or ``cancelled``."""
        ...


class Backend(Protocol):
    """What cancelkit asks of an event loop."""

    @property
    def name(self) -> BackendName:
        """``asyncio`` or ``trio``."""
        ...

    # ``loop``, below: what :func:`running` found (the running asyncio loop, ``None``
    # on trio), so that one call that needs several of these asks for it once (on
    # asyncio every lookup of the running loop is a ``getpid()`` system call).

    def make_waiter(self, loop: Any) -> Waiter:
        """A waiter owned by the current task."""
        ...

    def loop_caller(self, loop: Any) -> LoopCaller[Any]:
        """The current loop's caller (one per loop)."""
        ...

    def local_wait(self, loop: Any) -> tuple[Awaitable[None], Callable[[object], None]]:
        """A wait for the current task, and the call that ends it (with any one
        argument), made *in this thread only*: a :class:`Waiter` without its
        cross-thread hand-over, for an end that happens in this very thread."""
        ...

    def spawn(
        self,
        loop: Any,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str,
        context: contextvars.Context,
        ending: Finishing,
    ) -> Any:
        """Start ``coro`` as a loose task; ``ending._finish(value, error, cancelled)``
        runs in the loop's thread when it ends. Returns what ``loop_caller().cancel()``
        takes to stop it (a task, a cancel scope)."""
        ...

    async def gather(
        self, aws: tuple[Awaitable[Any], ...], timeout: float | None, return_exceptions: bool
    ) -> list[Any]:
        """``cancelkit.gather`` on this loop, arguments already checked."""
        ...

    def adopt_new_tasks(self, adopted: Adopted) -> Callable[[], None]:
        """From now on, in this context, tasks created go into ``adopted.running``
        (and leave it when they end). Returns the call that stops adopting."""
        ...

    async def end_adopted(self, adopted: Adopted, reason: CancelReason, grace: float) -> list[str]:
        """Cancel the adopted tasks still running and wait up to ``grace``, shielded;
        tasks they start meanwhile are adopted and waited for too (then cancelled at
        ``grace``).

        Returns:
            The names of those still running after ``grace``.
        """
        ...


_loaded: dict[BackendName, Backend] = {}


def _load(name: BackendName) -> Backend:
    if name == "asyncio":
        from ._asyncio import BACKEND  # noqa: PLC0415 - loaded on first use
    else:
        from ._trio import BACKEND  # type: ignore[assignment]  # noqa: PLC0415 - trio is optional
    _loaded[name] = BACKEND
    return BACKEND


def running() -> tuple[Backend, Any]:
    """The backend of the event loop running the current task, and the loop as the
    backend's calls take it (the asyncio loop; ``None`` on trio): looked up once.

    Raises:
        RuntimeError: when called outside asyncio and trio.
    """
    loop = _get_running_loop()
    if loop is not None:
        return _loaded.get("asyncio") or _load("asyncio"), loop
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return _loaded.get("trio") or _load("trio"), None
    raise RuntimeError("cancelkit needs a running asyncio or trio event loop here")


def current() -> Backend:
    """The backend of the event loop running the current task.

    Raises:
        RuntimeError: when called outside asyncio and trio.
    """
    return running()[0]


def current_backend() -> BackendName:
    """Name the event loop running the current task.

    Raises:
        RuntimeError: when called outside asyncio and trio.
    """
    return current().name


def make_waiter() -> Waiter:
    """A waiter for the current task's event loop."""
    backend, loop = running()
    return backend.make_waiter(loop)


def local_wait() -> tuple[Awaitable[None], Callable[[object], None]]:
    """A wait for the current task, and the call that ends it, from this thread
    only (see :meth:`Backend.local_wait`); await the first exactly once."""
    backend, loop = running()
    return backend.local_wait(loop)


def loop_caller() -> LoopCaller[Any]:
    """Acts on the current loop's tasks from anywhere (see :class:`LoopCaller`).

    Safe to use from any thread, from code with no event loop, and from
    finalizers. Once the loop is gone, requests are dropped.
    """
    backend, loop = running()
    return backend.loop_caller(loop)
