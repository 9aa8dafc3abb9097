"""The few places where asyncio and trio differ, behind one small interface.

cancelkit's core runs on both event loops. Almost everything is written once, on
anyio; what is here is what must be written twice: finding out which loop runs the
current task, and a *waiter*, a one-shot event that any thread can set and that
wakes the task on its own loop safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("Backend", "Waiter", "cancel_tasks", "current_backend", "loop_caller", "make_waiter")

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


def _anyio_task_states() -> Any:
    """anyio's private table of asyncio task scope stacks (None if it ever moves)."""
    try:
        from anyio._backends._asyncio import _task_states  # noqa: PLC0415
    except ImportError:  # pragma: no cover - anyio reorganised
        return None
    return _task_states


_task_states: Any = _anyio_task_states()


def _in_anyio_shield(task: asyncio.Future[Any], state: Any) -> bool:
    """Whether ``task`` is inside a shielded anyio ``CancelScope`` of its own.

    anyio's task groups never cancel a task inside such a scope; a plain
    ``task.cancel()`` would break right through it. ``state`` is the task's entry in
    anyio's private table of scope stacks; if that table ever moves, tasks count as
    not shielded, and the test suite's shield tests say so.
    """
    scope = state.cancel_scope
    while scope is not None and getattr(scope, "_host_task", None) is task:
        if scope.shield:
            return True
        scope = getattr(scope, "_parent_scope", None)
    return False


def cancel_tasks(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel asyncio tasks the way a task group would: honouring anyio shields.

    A task inside a shielded scope is cancelled as soon as it leaves the shield: the
    check is repeated once per loop iteration until then, as anyio itself does.
    """
    states = _task_states.data if _task_states is not None else {}
    ref = weakref.ref
    deferred = []
    for task in tasks:
        if task.done():
            continue
        state = states.get(ref(task)) if states else None
        if state is not None and _in_anyio_shield(task, state):
            deferred.append(task)
        else:
            task.cancel()
    if deferred:
        deferred[0].get_loop().call_soon(cancel_tasks, deferred)


class _LoopCaller:
    """Runs callbacks in one event loop's thread, in order, batched.

    Callbacks are always queued, never run inline: a cancel may come from a garbage
    collector finalizer in the middle of the loop's own code, where touching tasks
    is not safe. Queueing is lock-free (a finalizer may interrupt this very object),
    and one wake-up carries any number of callbacks, so cancelling 1,000 tasks costs
    one loop iteration, not 1,000 self-pipe writes.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_pending",
        "_same_thread",
        "_scheduled",
        "_thread",
        "_threadsafe",
        "_to_cancel",
    )

    def __init__(
        self,
        same_thread: Callable[[Callable[[], None]], object],
        threadsafe: Callable[[Callable[[], None]], object],
        closed: tuple[type[BaseException], ...],
    ) -> None:
        self._pending: deque[Callable[[], object]] = deque()
        self._to_cancel: deque[asyncio.Future[Any]] = deque()
        self._scheduled = False
        self._thread = threading.get_ident()
        self._same_thread = same_thread
        self._threadsafe = threadsafe
        self._closed = closed

    def __call__(self, callback: Callable[[], object]) -> None:
        self._pending.append(callback)
        self._schedule()

    def cancel_soon(self, task: asyncio.Future[Any], _reason: object = None) -> None:
        """Cancel an asyncio task soon, batched with others (see :func:`cancel_tasks`)."""
        self._to_cancel.append(task)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        schedule = self._same_thread if threading.get_ident() == self._thread else self._threadsafe
        try:
            schedule(self._drain)
        except self._closed:  # the loop is gone: nothing is left to act on
            self._pending.clear()
            self._scheduled = False

    def _drain(self) -> None:
        self._scheduled = False
        if self._to_cancel:
            to_cancel = self._to_cancel
            cancel_tasks([to_cancel.popleft() for _ in range(len(to_cancel))])
        pending = self._pending
        while pending:
            callback = pending.popleft()
            try:
                callback()
            except Exception:
                logging.getLogger("cancelkit").exception("cancelkit: callback %r failed", callback)


_callers: weakref.WeakKeyDictionary[object, _LoopCaller] = weakref.WeakKeyDictionary()


def loop_caller() -> _LoopCaller:
    """A function that runs a callback soon in the current loop's thread, from anywhere.

    Safe from any thread, from code with no event loop, and from finalizers. Once
    the loop is gone the callback is dropped.
    """
    if current_backend() == "asyncio":
        loop = asyncio.get_running_loop()
        caller = _callers.get(loop)
        if caller is None:
            caller = _callers[loop] = _LoopCaller(
                loop.call_soon, loop.call_soon_threadsafe, (RuntimeError,)
            )
        return caller

    import trio  # noqa: PLC0415

    token = trio.lowlevel.current_trio_token()
    caller = _callers.get(token)
    if caller is None:
        caller = _callers[token] = _LoopCaller(
            token.run_sync_soon, token.run_sync_soon, (trio.RunFinishedError,)
        )
    return caller
