"""The asyncio backend: waiters, loose tasks, cancelling them, and ``gather``.

``gather`` drives tasks with done-callbacks, as ``asyncio.gather`` does, so it costs
no more than it. Cancelling a task asks anyio first whether the task is inside a
shielded anyio scope (a plain ``task.cancel()`` would break right through it): that
needs anyio's private table of scope stacks, used here and nowhere else
(``tests/test_backends.py`` pins it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import threading
import weakref
from types import MethodType
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import (
    CancelReason,
    RunCancelled,
    as_failure,
    attach_other_errors,
    gather_timeout,
)
from .._loop_caller import LoopCaller
from .._receipt import record
from .._token import _current
from ._asyncio_adopt import adopter, install_factory
from ._asyncio_deadlines import wake_at
from ._per_loop import PerLoop, weak_method

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Awaitable, Callable, Coroutine

    from .._adopt import Adopted
    from . import Finishing

__all__ = ("BACKEND", "AsyncioWaiter", "cancel_task", "task_states")

_get_running_loop = asyncio.events._get_running_loop  # noqa: SLF001 - the fast check


class AsyncioWaiter:
    """A waiter on asyncio: a future of the loop, set from any thread."""

    __slots__ = ("_fut", "_is_set", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop  # the running loop
        self._thread = threading.get_ident()
        self._is_set = False
        self._fut: asyncio.Future[None] | None = None

    def set(self) -> None:
        if threading.get_ident() == self._thread:
            self._wake()
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to wake
            self._loop.call_soon_threadsafe(self._wake)

    def wake(self, _cause: object, /) -> None:
        self.set()

    shareable = False

    def here(self) -> bool:
        return _get_running_loop() is self._loop

    def _wake(self) -> None:
        self._is_set = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    @property
    def is_set(self) -> bool:
        return self._is_set

    def wait(self) -> asyncio.Future[None]:
        # The loop's future itself, awaited by the caller: no coroutine of our own.
        fut = self._loop.create_future()
        if self._is_set:
            fut.set_result(None)
        else:
            self._fut = fut
        return fut

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
            wake_at(self._loop, deadline, fut)  # the loop's one timer, not one per wait
            try:
                await fut
            except asyncio.CancelledError as cancel:
                absorbed = cancel
        if absorbed is not None and rearm and _lost(absorbed):
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
                task.cancel(absorbed.args[0] if absorbed.args else None)
        return self._is_set


def _resolve(fut: asyncio.Future[None], thread: int, _cause: object) -> None:
    """End a local wait (see ``local_wait``), unless its task was cancelled out of it;
    through the loop from another thread (a loop moved to another thread ends what
    it started before the move there)."""
    if threading.get_ident() == thread:
        if not fut.done():
            fut.set_result(None)
        return
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to wake
        fut.get_loop().call_soon_threadsafe(_resolve_here, fut)


def _resolve_here(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


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


def _anyio_task_states() -> Any:
    """anyio's private table of asyncio task scope stacks (None if it ever moves)."""
    try:
        from anyio._backends._asyncio import _task_states  # noqa: PLC0415
    except ImportError:  # pragma: no cover - anyio reorganised
        return None
    return _task_states


task_states: Any = _anyio_task_states()
"""anyio's table, or ``None`` if a new anyio moved it (then no task counts as shielded)."""


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


def cancel_task(task: asyncio.Future[Any], reason: CancelReason | None) -> None:
    """Cancel an asyncio task the way a task group would: honouring anyio shields.

    The reason travels as the cancellation's message (``task.cancel(reason)``), so
    whoever catches the ``CancelledError`` can say why. A task inside a shielded
    scope is cancelled as soon as it leaves the shield: the check is repeated once
    per loop iteration until then, as anyio itself does.
    """
    if task.done():
        return
    states = task_states.data if task_states is not None else None
    if states:
        state = states.get(weakref.ref(task))
        if state is not None and _in_anyio_shield(task, state):
            task.get_loop().call_soon(cancel_task, task, reason)
            return
    task.cancel(reason)


_current_tasks = asyncio.tasks._current_tasks  # type: ignore[attr-defined]  # noqa: SLF001


def _task_of(loop_ref: weakref.ref[asyncio.AbstractEventLoop]) -> object:
    """The task the loop is running a step of *in this thread*, or None:
    ``asyncio.current_task()`` without asking for the running loop (a ``getpid()``
    system call on every lookup) where the loop says which thread runs it."""
    loop = loop_ref()
    if loop is None:
        return None
    thread = getattr(loop, "_thread_id", _UNKNOWN)  # asyncio's own loops keep it
    if thread is _UNKNOWN:
        if _get_running_loop() is not loop:
            return None
    elif thread != threading.get_ident():
        return None
    return _current_tasks.get(loop)


_UNKNOWN: Any = object()


def _new_caller(loop: asyncio.AbstractEventLoop) -> LoopCaller[Any]:
    """A loop's caller, holding the loop only weakly (see :class:`PerLoop`)."""
    return LoopCaller(
        weak_method(loop, "call_soon", RuntimeError),
        weak_method(loop, "call_soon_threadsafe", RuntimeError),
        (RuntimeError,),
        functools.partial(_task_of, weakref.ref(loop)),
        cancel_task,
    )


# Held weakly (see PerLoop): the tokens it stops hold it while they need it. A loop
# that closes with a Stop still queued (its drain dropped unrun) is not kept by the
# tasks in that queue through its own caller.
_callers: PerLoop[asyncio.AbstractEventLoop, LoopCaller[Any]] = PerLoop(_new_caller)


def _done(ending: Finishing, task: Any) -> None:
    if task.cancelled():
        ending._finish(None, None, True)  # noqa: SLF001 - see Finishing
        return
    error = task.exception()
    ending._finish(None if error else task.result(), error, False)  # noqa: SLF001


def _foreign_cancel(exc: asyncio.CancelledError, index: int) -> RunCancelled:
    for arg in exc.args:
        if isinstance(arg, CancelReason):
            return RunCancelled(arg)
    return RunCancelled(CancelReason("user", f"argument {index} was cancelled outside gather"))


class _AsyncioGather:
    """The state of one gather on asyncio; ``on_done`` is every task's callback."""

    __slots__ = (
        "failed",
        "first",
        "ours",
        "pending",
        "return_exceptions",
        "tasks",
        "timed_out",
        "waiter",
    )

    def __init__(self, tasks: list[asyncio.Future[Any]], return_exceptions: bool) -> None:
        self.tasks = tasks
        self.pending = len(tasks)
        self.return_exceptions = return_exceptions
        self.failed = False
        self.timed_out = False
        self.first: asyncio.Future[Any] | None = None
        self.ours: set[int] = set()
        self.waiter: asyncio.Future[None] = tasks[0].get_loop().create_future()

    def on_done(self, task: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if (
            not self.return_exceptions
            and not self.failed
            and not self.timed_out
            and (task.cancelled() or task.exception() is not None)
        ):
            self.failed = True
            self.first = task
            self.cancel_all()
        if self.pending == 0 and not self.waiter.done():
            self.waiter.set_result(None)

    def on_timeout(self) -> None:
        if not self.failed and self.pending:
            self.timed_out = True
            self.cancel_all()

    def cancel_all(self) -> None:
        if not self.ours:
            self.ours = {i for i, task in enumerate(self.tasks) if not task.done()}
        for task in self.tasks:
            cancel_task(task, None)

    async def wait_all(self) -> None:
        """Wait for every task to end; further cancels of the caller are held off."""
        while self.pending:
            try:
                await asyncio.wait(self.tasks)
            except asyncio.CancelledError:
                continue


async def _gather(
    aws: tuple[Awaitable[Any], ...], timeout: float | None, return_exceptions: bool
) -> list[Any]:
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[Any]] = [
        loop.create_task(aw) if asyncio.iscoroutine(aw) else asyncio.ensure_future(aw) for aw in aws
    ]
    state = _AsyncioGather(tasks, return_exceptions)
    on_done = state.on_done
    for task in tasks:
        task.add_done_callback(on_done)
    timer = loop.call_later(timeout, state.on_timeout) if timeout is not None else None
    try:
        await state.waiter
    except asyncio.CancelledError as cancel:
        state.cancel_all()
        await state.wait_all()
        _note_lost(cancel, [t.exception() for t in tasks if not t.cancelled()])
        raise
    finally:
        if timer is not None:
            timer.cancel()

    if state.failed:
        assert state.first is not None
        first = state.first
        others = [
            as_failure(exc)
            for t in tasks
            if t is not first and not t.cancelled() and (exc := t.exception()) is not None
        ]
        error = (
            _foreign_cancel(_cancel_exc(first), tasks.index(first))
            if first.cancelled()
            else as_failure(first.exception())  # type: ignore[arg-type]
        )
        attach_other_errors(error, others)
        raise error

    results: list[Any] = []
    errors: list[BaseException] = []
    for index, task in enumerate(tasks):
        if task.cancelled():
            slot: Any = (
                gather_timeout(timeout)
                if state.timed_out and index in state.ours
                else _foreign_cancel(_cancel_exc(task), index)
            )
            results.append(slot)
            if not state.timed_out or index not in state.ours:
                errors.append(slot)
        elif (exc := task.exception()) is not None:
            failure = as_failure(exc)
            results.append(failure)
            errors.append(failure)
        else:
            results.append(task.result())
    if state.timed_out and not return_exceptions:
        error = gather_timeout(timeout)
        attach_other_errors(error, errors)
        raise error
    return results


def _cancel_exc(task: asyncio.Future[Any]) -> asyncio.CancelledError:
    try:
        task.result()
    except asyncio.CancelledError as exc:
        return exc
    raise AssertionError("task was not cancelled")  # pragma: no cover


def _note_lost(cancel: BaseException, errors: list[BaseException | None]) -> None:
    """Failures during the caller's cancellation are named on it, not dropped."""
    for error in errors:
        if error is not None:
            cancel.add_note(f"cancelkit: a child failed while being cancelled: {error!r}")


class _Asyncio:
    """The backend object: what :mod:`cancelkit._backends` asks of a loop."""

    name: Literal["asyncio"] = "asyncio"

    def make_waiter(self, loop: asyncio.AbstractEventLoop) -> AsyncioWaiter:
        return AsyncioWaiter(loop)

    def loop_caller(self, loop: asyncio.AbstractEventLoop) -> LoopCaller[Any]:
        return _callers.get(loop)

    def local_wait(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.Future[None], Callable[[object], None]]:
        fut = loop.create_future()
        return fut, functools.partial(_resolve, fut, threading.get_ident())

    def spawn(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str,
        context: contextvars.Context,
        ending: Finishing,
    ) -> asyncio.Task[Any]:
        task = loop.create_task(coro, name=name, context=context)
        # _done bound to the ending: one object (a partial would be two, with its
        # arguments), run in the task's own context (the default copies the caller's).
        task.add_done_callback(MethodType(_done, ending), context=context)
        return task

    async def gather(
        self, aws: tuple[Awaitable[Any], ...], timeout: float | None, return_exceptions: bool
    ) -> list[Any]:
        return await _gather(aws, timeout, return_exceptions)

    def adopt_new_tasks(self, adopted: Adopted) -> Callable[[], None]:
        install_factory(asyncio.get_running_loop())
        adopting = [True]

        def adopt(task: asyncio.Task[Any]) -> None:
            if adopting[0]:
                adopted.running.add(task)
                adopted.count += 1
                task.add_done_callback(functools.partial(_adopted_done, adopted))

        reset = adopter.set(adopt)

        def stop() -> None:
            adopting[0] = False
            adopter.reset(reset)

        return stop

    async def end_adopted(self, adopted: Adopted, reason: CancelReason, grace: float) -> list[str]:
        import anyio  # noqa: PLC0415 - only here: the shield around waiting

        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for task in list(adopted.running):
            cancel_task(task, reason)
        # The cancelled tasks may start others as they unwind (a stream's close in
        # the background, a framework's cleanup): those are adopted too, and waited
        # for, not cancelled, so the cleanup they do is not cut short.
        with anyio.CancelScope(shield=True):
            while running := [task for task in adopted.running if not task.done()]:
                left = deadline - loop.time()
                if left <= 0:
                    for task in running:
                        cancel_task(task, reason)
                    return [task.get_name() for task in running]
                await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        return []


def _adopted_done(adopted: Adopted, task: asyncio.Task[Any]) -> None:
    """An adopted task ended: out of the running set, into the run's receipt (this
    runs in the task's own context, so the receipt is its run's). A framework starts
    dozens of short tasks; one that simply completed before any Stop says nothing
    about the Stop, so only the others are recorded."""
    adopted.running.discard(task)
    if task.cancelled():
        record("task", task.get_name(), "cancelled", detail="adopted")
        return
    error = task.exception()  # retrieved: reported here, never "never retrieved"
    if error is None:
        token = _current.get()
        if token is not None and token.cancelled:
            record("task", task.get_name(), "completed", detail="adopted")
    else:
        record("task", task.get_name(), "failed", detail=f"adopted; {error!r:.200}")


BACKEND = _Asyncio()
