"""``gather``: run awaitables concurrently, results in argument order, fail fast.

Semantics (DESIGN.md): on the first failure the others are cancelled and awaited,
then that exception is raised as itself, the other failures kept on it
(:func:`other_errors`). On timeout everything unfinished is cancelled and awaited,
then ``TimeoutError`` is raised, or, with ``return_exceptions=True``, the finished
results come back with a ``TimeoutError`` in each unfinished slot. If the caller is
cancelled, every child is cancelled and awaited first.

It is written twice on purpose: on asyncio it drives tasks with done-callbacks, as
``asyncio.gather`` does, so it costs no more than it; on trio it is a nursery.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._backend import current_backend
from ._cancelling import cancel_tasks
from ._exceptions import Cancelled, CancelReason, RunCancelled, attach_other_errors
from ._validate import awaitables, seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ("gather",)

T = TypeVar("T")

_MISSING: Any = object()


@overload
async def gather(
    *aws: Awaitable[T], timeout: float | None = None, return_exceptions: Literal[False] = False
) -> list[T]: ...
@overload
async def gather(
    *aws: Awaitable[T], timeout: float | None = None, return_exceptions: Literal[True]
) -> list[T | BaseException]: ...
async def gather(
    *aws: Awaitable[T], timeout: float | None = None, return_exceptions: bool = False
) -> list[T] | list[T | BaseException]:
    """Run ``aws`` concurrently and return their results in argument order.

    Args:
        *aws: coroutines or other awaitables (futures and tasks on asyncio).
        timeout: seconds for the whole gather.
        return_exceptions: put failures in their slots instead of failing fast.

    Returns:
        One result per awaitable, in argument order.

    Raises:
        TimeoutError: ``timeout`` passed (without ``return_exceptions``).
        RunCancelled: a child was cancelled by something other than this gather.
        TypeError, ValueError: bad arguments; nothing has started then.
        Exception: the first child failure, as itself.
    """
    try:
        limit = seconds(timeout, "timeout")
        awaitables("gather", aws)
        backend = current_backend()
    except BaseException:
        from ._validate import close_all  # noqa: PLC0415 - error path only

        close_all(aws)
        raise
    if not aws:
        return []
    if backend == "asyncio":
        return await _gather_asyncio(aws, limit, return_exceptions)
    return await _gather_trio(aws, limit, return_exceptions)


def _as_failure(exc: BaseException) -> BaseException:
    """What a child's ending means to the caller of gather."""
    if isinstance(exc, Cancelled):
        error = RunCancelled(exc.reason)
        error.__cause__ = exc
        return error
    return exc


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
        cancel_tasks(self.tasks)

    async def wait_all(self) -> None:
        """Wait for every task to end; further cancels of the caller are held off."""
        while self.pending:
            try:
                await asyncio.wait(self.tasks)
            except asyncio.CancelledError:
                continue


async def _gather_asyncio(
    aws: tuple[Awaitable[T], ...], timeout: float | None, return_exceptions: bool
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
            _as_failure(exc)
            for t in tasks
            if t is not first and not t.cancelled() and (exc := t.exception()) is not None
        ]
        error = (
            _foreign_cancel(_cancel_exc(first), tasks.index(first))
            if first.cancelled()
            else _as_failure(first.exception())  # type: ignore[arg-type]
        )
        attach_other_errors(error, others)
        raise error

    results: list[Any] = []
    errors: list[BaseException] = []
    for index, task in enumerate(tasks):
        if task.cancelled():
            slot: Any = (
                _timeout_error(timeout)
                if state.timed_out and index in state.ours
                else _foreign_cancel(_cancel_exc(task), index)
            )
            results.append(slot)
            if not state.timed_out or index not in state.ours:
                errors.append(slot)
        elif (exc := task.exception()) is not None:
            failure = _as_failure(exc)
            results.append(failure)
            errors.append(failure)
        else:
            results.append(task.result())
    if state.timed_out and not return_exceptions:
        error = _timeout_error(timeout)
        attach_other_errors(error, errors)
        raise error
    return results


def _cancel_exc(task: asyncio.Future[Any]) -> asyncio.CancelledError:
    try:
        task.result()
    except asyncio.CancelledError as exc:
        return exc
    raise AssertionError("task was not cancelled")  # pragma: no cover


def _timeout_error(timeout: float | None) -> TimeoutError:
    return TimeoutError(f"gather() timed out after {timeout}s")


def _note_lost(cancel: BaseException, errors: list[BaseException | None]) -> None:
    """Failures during the caller's cancellation are named on it, not dropped."""
    for error in errors:
        if error is not None:
            cancel.add_note(f"cancelkit: a child failed while being cancelled: {error!r}")


async def _gather_trio(
    aws: tuple[Awaitable[T], ...], timeout: float | None, return_exceptions: bool
) -> list[Any]:
    import trio  # noqa: PLC0415 - only on a trio loop

    n = len(aws)
    results: list[Any] = [_MISSING] * n
    errors: list[BaseException] = []
    failed = False
    first: BaseException | None = None

    deadline = trio.CancelScope(
        deadline=trio.current_time() + timeout if timeout is not None else float("inf")
    )

    def record(index: int, exc: BaseException, scope: trio.CancelScope) -> None:
        nonlocal failed, first
        failure = _as_failure(exc)
        results[index] = failure
        if return_exceptions:
            return
        if failed or deadline.cancel_called:
            errors.append(failure)
        else:
            failed, first = True, failure
            scope.cancel()

    async def run(index: int, aw: Awaitable[T]) -> None:
        try:
            results[index] = await aw
        except (Exception, Cancelled) as exc:  # noqa: BLE001 - the outcome is the caller's
            record(index, exc, nursery.cancel_scope)

    with deadline:
        async with trio.open_nursery() as nursery:
            start = nursery.start_soon
            for index, aw in enumerate(aws):
                # A constant name spares trio formatting one per task (~5% of its cost).
                start(run, index, aw, name="cancelkit.gather")

    if failed:
        assert first is not None
        attach_other_errors(first, errors)
        raise first
    if deadline.cancelled_caught:
        for index in range(n):
            if results[index] is _MISSING:
                results[index] = _timeout_error(timeout)
        if not return_exceptions:
            error = _timeout_error(timeout)
            attach_other_errors(error, errors)
            raise error
    return results
