"""Tasks that no task's scope owns: started from any task, stopped from anywhere.

``Background.spawn`` and a run's ``spawn`` need tasks that outlive the call that
started them, yet must be cancellable and awaitable from any task (and cancellable
from any thread). A cancel scope or task group cannot do that: it must be exited by
the task that entered it. So each such task is a loose backend task (an asyncio
task, a trio system task) with its own :class:`CancelToken`; the token is the one
way to stop it, and cancellation honours anyio shielded cleanup on both backends.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from ._backends import running
from ._completion import (
    Completion,
    run_done_callbacks,
    set_ended,
    wait_ended,
    wait_ended_shielded,
)
from ._exceptions import Cancelled, CancelReason, RunCancelled
from ._token import CancelToken, _current

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ._backends import Finishing

__all__ = (
    "OwnedTask",
    "RunStatus",
    "TaskOwner",
    "decide_ending",
    "launch",
    "run_shielded",
    "start_task",
)

T = TypeVar("T")

logger = logging.getLogger("cancelkit")


RunStatus = Literal["running", "cancelling", "cancelled", "completed", "failed"]
"""The one status vocabulary of owned tasks and runs: ``running``, ``cancelling``
(asked to stop, still unwinding), then how it ended: ``cancelled``, ``completed``
or ``failed``."""

_Ending = Literal["running", "cancelled", "completed", "failed"]


class TaskOwner(Protocol):
    """Who started a task and hears of its end first (a run, a ``Background``).

    One owner object serves all its tasks, so a task costs no callback object.
    """

    def _task_ended(self, task: OwnedTask[Any], /) -> None:
        """``task`` has ended (in the loop's thread, before its other callbacks)."""
        ...


class OwnedTask(Generic[T]):
    """A task owned by a run or a :class:`Background`: its name, token, state, ending.

    Shaped like the tasks users know: ``done()``, ``cancel()`` (from any task or
    thread), ``await wait()`` and ``await result()`` (from any task of the task's
    event loop). Ending states: ``completed``, ``cancelled``, ``failed``.
    """

    __slots__ = (
        "_done_callbacks",
        "_ended",
        "_error",
        "_home",
        "_owner",
        "_state",
        "_value",
        "name",
        "token",
    )

    def __init__(self, name: str, token: CancelToken, owner: TaskOwner | None = None) -> None:
        self.name = name
        self.token = token
        self._owner = owner
        self._state: _Ending = "running"
        self._value: T | None = None
        self._error: BaseException | None = None
        self._ended: Completion | None = None  # made by the first waiter in another thread
        self._done_callbacks: list[Callable[[OwnedTask[T]], object]] | None = None  # on demand
        self._home: int | None = None  # the thread it ends in, once started on a loop

    def __repr__(self) -> str:
        return f"<OwnedTask {self.name!r} {self.status}>"

    @property
    def status(self) -> RunStatus:
        """``running``, ``cancelling`` (asked to stop, still unwinding), then how it
        ended: ``cancelled``, ``completed`` or ``failed`` (as a run's status)."""
        if self._state == "running" and self.token.cancelled:
            return "cancelling"
        return self._state

    def done(self) -> bool:
        """Whether the task has ended, for whatever cause (as ``asyncio.Task.done()``)."""
        return self._state != "running"

    @property
    def error(self) -> BaseException | None:
        """The exception the task failed with, if it failed."""
        return self._error

    def cancel(self, reason: CancelReason | None = None) -> bool:
        """Ask the task to stop; safe from any task or thread.

        Returns:
            True if this call cancelled it; False if it had already ended or been
            cancelled.
        """
        return self.token.cancel(reason)

    async def wait(self) -> None:
        """Wait until the task has ended.

        Raises:
            Exception: the error the task failed with (a cancelled task's ending is
                not an error here: see :meth:`result`).
        """
        if self._state == "running":
            await wait_ended(self)
        if self._error is not None:
            raise self._error

    async def wait_shielded(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds, not interrupted by cancellation.

        Returns:
            Whether the task has ended.
        """
        return await wait_ended_shielded(self, timeout)

    async def result(self) -> T:
        """Wait for the task and return its value.

        Raises:
            RunCancelled: the task was cancelled (with the token's reason).
            Exception: the task's own error.
        """
        if self._state == "running":
            await wait_ended(self)
        if self._state == "cancelled":
            assert self.token.reason is not None
            raise RunCancelled(self.token.reason)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def add_done_callback(self, callback: Callable[[OwnedTask[T]], object]) -> None:
        """Call ``callback(handle)`` in the loop's thread when the task ends."""
        if self.done():
            callback(self)
        elif self._done_callbacks is None:
            self._done_callbacks = [callback]
        else:
            self._done_callbacks.append(callback)

    def _finish(self, value: T | None, error: BaseException | None, cancelled: bool) -> None:
        # The usual Stop: decide_ending's answer, without the call.
        if cancelled and self.token._reason is not None:  # noqa: SLF001
            self._state = "cancelled"
        else:
            state, self._error = decide_ending(self.token, error, cancelled)
            if state == "completed":
                self._value = value
            self._state = state
        if self._ended is not None:  # a waiter in another thread
            set_ended(self)
        owner = self._owner
        try:
            if owner is not None:
                self._owner = None
                owner._task_ended(self)  # noqa: SLF001 - the owner's hook, see TaskOwner
        finally:  # waiters in this thread are among the callbacks
            if self._done_callbacks is not None:
                run_done_callbacks(self)


def decide_ending(
    token: CancelToken, error: BaseException | None, cancelled: bool
) -> tuple[_Ending, BaseException | None]:
    """How a task guarded by ``token`` ended, decided once against a racing cancel:
    its state, and the error it keeps (``None`` for a :class:`Cancelled` it raised).

    A cancel that won first makes it ``cancelled`` whatever it returned; a task the
    loop itself cancelled (at its end) gets a ``shutdown`` reason on its token.
    """
    if cancelled or isinstance(error, Cancelled) or not token._finish():  # noqa: SLF001
        if isinstance(error, Cancelled):
            token.cancel(error.reason)
            error = None
        elif token._reason is None:  # noqa: SLF001 - cancelled by the loop itself, at its end
            token.cancel(CancelReason("shutdown", "the event loop cancelled the task"))
        return "cancelled", error
    return ("failed" if error is not None else "completed"), error


def launch(
    coro: Coroutine[Any, Any, Any],
    *,
    name: str,
    token: CancelToken,
    ending: Finishing,
    context: contextvars.Context,
) -> int:
    """Start ``coro`` as a loose task of the current loop: ``token``'s cancel stops
    it, ``ending._finish()`` hears how it ended (see :class:`Finishing`).

    Returns:
        The ident of the loop's thread, where the task runs and ends (one object
        shared by the loop's tasks).
    """
    backend, loop = running()
    target = backend.spawn(loop, coro, name=name, context=context, ending=ending)
    caller = backend.loop_caller(loop)
    token._arm(caller, target)  # noqa: SLF001
    here = threading.get_ident()
    if caller.thread != here:  # an asyncio loop now run by another thread than before
        caller.thread = here
    return caller.thread


def start_task(
    coro: Coroutine[Any, Any, T],
    *,
    name: str,
    token: CancelToken,
    owner: TaskOwner | None = None,
    context: contextvars.Context | None = None,
) -> OwnedTask[T]:
    """Start ``coro`` as a loose task of the current event loop, stopped by ``token``.

    Inside the task, ``current_token()`` is ``token``; other context variables are
    copied from the caller.

    Args:
        coro: the task's coroutine.
        name: the task's name.
        token: cancelling it cancels the task.
        owner: told first when the task ends (see :class:`TaskOwner`).
        context: the context to run in, already holding ``token`` as the current
            token (a run sets its own variables in it); by default a copy of the
            caller's.

    Raises:
        TypeError: ``coro`` is not a coroutine.
    """
    if not inspect.iscoroutine(coro):
        raise TypeError(f"expected a coroutine, got {type(coro).__name__}")
    handle: OwnedTask[T] = OwnedTask(name, token, owner)
    if context is None:
        context = contextvars.copy_context()
        context.run(_current.set, token)
    handle._home = launch(coro, name=name, token=token, ending=handle, context=context)  # noqa: SLF001
    return handle


async def run_shielded(coro: Coroutine[Any, Any, T], *, name: str, timeout: float) -> T:
    """Await ``coro`` to its end in a task of its own, cancellation held off, bounded.

    The coroutine owns whatever it opens (a database connection, say) from start to
    end, in its own task; the caller waits shielded, so its cancellation cannot cut
    the work half-way (it is delivered at the caller's next await). After ``timeout``
    seconds the coroutine is cancelled (kind ``timeout``) and waited for until it
    has ended: whatever it did is over when this returns or raises, never left
    running behind the caller.

    Raises:
        TimeoutError: the coroutine ran past ``timeout`` and was cancelled.
        Exception: what the coroutine raised.
    """
    handle = start_task(coro, name=name, token=CancelToken())
    if not await handle.wait_shielded(timeout):
        handle.cancel(CancelReason("timeout", f"{name} took longer than {timeout}s"))
        waits = 0
        while not await handle.wait_shielded(1.0):
            waits += 1
            if waits == 3:
                logger.warning("cancelkit: %s is still ending after being cancelled", name)
        if handle.status == "cancelled":
            raise TimeoutError(f"{name} took longer than {timeout}s")
    return await handle.result()
