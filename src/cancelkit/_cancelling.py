"""Cancelling tasks from anywhere: honouring anyio shields, batched, finalizer-safe.

Two facts shape this module. A plain ``task.cancel()`` on asyncio breaks through an
anyio shielded scope, so cancelling must first ask anyio whether the task is inside
one (as anyio's own task groups do). And a cancel may come from any thread, or from
a garbage-collector finalizer or a signal handler in the middle of the loop's own
code. So a cancel made by a task on the loop's own thread takes effect at once, as
``asyncio.Task.cancel()`` does (the cancelled task does not take another step first);
one from another thread, from a collection, or from between task steps is queued to
the loop's thread and applied there, many per wake-up.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from ._backend import current_backend

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("cancel_tasks", "loop_caller")


def _anyio_task_states() -> Any:
    """anyio's private table of asyncio task scope stacks (None if it ever moves)."""
    try:
        from anyio._backends._asyncio import _task_states  # noqa: PLC0415
    except ImportError:  # pragma: no cover - anyio reorganised
        return None
    return _task_states


_task_states: Any = _anyio_task_states()

_collecting = False


def _gc_phase(phase: str, _info: object) -> None:
    global _collecting  # one flag for the process, as the collector is one
    _collecting = phase == "start"


gc.callbacks.append(_gc_phase)


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
        "_in_task",
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
        in_task: Callable[[], bool],
    ) -> None:
        self._in_task = in_task
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

    def _may_act_now(self) -> bool:
        """Whether a callback may run right here: on the loop's thread, inside a task's
        step (not the loop's own bookkeeping), and not inside a garbage collection."""
        return threading.get_ident() == self._thread and not _collecting and self._in_task()

    def now_or_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` at once when that is safe (see :meth:`_may_act_now`), else
        queue it to the loop's thread."""
        if self._may_act_now():
            callback()
        else:
            self(callback)

    def cancel_soon(self, task: asyncio.Future[Any], _reason: object = None) -> None:
        """Cancel an asyncio task: at once from a task of its loop, else queued and
        batched with others (see :func:`cancel_tasks`)."""
        if self._may_act_now():
            cancel_tasks([task])
            return
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
                loop.call_soon,
                loop.call_soon_threadsafe,
                (RuntimeError,),
                lambda: asyncio.current_task(loop) is not None,
            )
        return caller

    import trio  # noqa: PLC0415

    token = trio.lowlevel.current_trio_token()
    caller = _callers.get(token)
    if caller is None:
        caller = _callers[token] = _LoopCaller(
            token.run_sync_soon, token.run_sync_soon, (trio.RunFinishedError,), _in_trio_task
        )
    return caller


def _in_trio_task() -> bool:
    import trio  # noqa: PLC0415

    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
