"""The trio backend: waiters, loose tasks (system tasks), and ``gather`` (a nursery).

Imported only once a trio loop runs (trio is an optional dependency).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._exceptions import Cancelled, as_failure, attach_other_errors, gather_timeout
from .._loop_caller import LoopCaller, cancel_scope, reason_text
from ._per_loop import PerLoop, weak_method


def _trio_reason_type() -> Any:
    """trio's own reason record, private (None if it ever moves: then scopes are
    cancelled through the public ``cancel()``)."""
    try:
        from trio._core._run import CancelReason  # noqa: PLC0415
    except ImportError:  # pragma: no cover - trio reorganised
        return None
    return CancelReason


_TrioReason: Any = _trio_reason_type()

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Awaitable, Callable, Coroutine

    from .._adopt import Adopted
    from .._exceptions import CancelReason
    from . import Finishing

__all__ = ("BACKEND", "TrioWaiter", "cancel_trio_scope")

_MISSING: Any = object()


class TrioWaiter:
    """A waiter on trio: an Event, set from any thread through the trio token."""

    __slots__ = ("_event", "_thread", "_token")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()

    def set(self) -> None:
        if threading.get_ident() == self._thread:
            self._event.set()
            return
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._event.set)

    def wake(self, _cause: object, /) -> None:
        self.set()

    shareable = True

    def here(self) -> bool:
        try:
            return trio.lowlevel.current_trio_token() is self._token
        except RuntimeError:
            return False

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self) -> Coroutine[Any, Any, None]:
        # The event's own coroutine, not one around it: a frame less for every
        # task a cancel wakes.
        return self._event.wait()

    async def wait_shielded(self, timeout: float, *, rearm: bool = True) -> bool:
        # One scope, shielded from outer cancellation yet bounded by its own
        # deadline (a shield blocks only outer scopes' cancels): a second scope per
        # wait (move_on_after) would cost as much again.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout):
            await self._event.wait()
        return self._event.is_set()


def _set_event(
    event: trio.Event, thread: int, token: trio.lowlevel.TrioToken, _cause: object
) -> None:
    """End a local wait (see ``local_wait``); through the trio token from another
    thread (an asyncio loop moved to another thread ends there what it started)."""
    if threading.get_ident() == thread:
        event.set()
        return
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(event.set)


def _in_task() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _new_caller(token: trio.lowlevel.TrioToken) -> LoopCaller[Any]:
    """A trio run's caller, holding its token only weakly (see :class:`PerLoop`)."""
    run_sync_soon = weak_method(token, "run_sync_soon", trio.RunFinishedError)
    return LoopCaller(
        run_sync_soon, run_sync_soon, (trio.RunFinishedError,), _in_task, cancel_trio_scope
    )


_callers: PerLoop[trio.lowlevel.TrioToken, LoopCaller[Any]] = PerLoop(_new_caller)

# The last trio reason made, for (our reason, the cancelling task's id and name):
# the task's repr is exactly its name and id, so the key never names another task.
_last_reason: tuple[object, int, str, Any] = (None, 0, "", None)


@trio.lowlevel.enable_ki_protection  # as CancelScope.cancel: Ctrl-C waits until it is done
def cancel_trio_scope(scope: trio.CancelScope, reason: CancelReason | None) -> None:
    """``cancel_one`` for trio's own scopes (the loose tasks'): ``scope.cancel(text)``
    without what it repeats for every scope of a cancelled tree, formatting the
    current task and making trio's reason record: one record is made per reason
    and cancelling task, and shared by the scopes it cancels. Needs trio's private
    ``CancelScope._cancel`` (``tests/test_backends.py`` pins it); without it, the
    public ``cancel()``.
    """
    private = getattr(scope, "_cancel", None)
    if _TrioReason is None or private is None:
        cancel_scope(scope, reason)
        return
    global _last_reason  # a cache of one: the tuple is replaced whole, thread-safe
    try:
        task = trio.lowlevel.current_task()
        task_id, task_name = id(task), task.name
    except RuntimeError:  # between task steps: trio records no task either
        task_id, task_name = 0, ""
    last, last_id, last_name, made = _last_reason
    if last is not reason or last_id != task_id or last_name != task_name:
        made = _TrioReason(
            source="explicit",
            source_task=f"<Task {task_name!r} at {task_id:#x}>" if task_id else None,
            reason=None if reason is None else reason_text(reason),
        )
        _last_reason = (reason, task_id, task_name, made)
    private(made)


async def _body(
    ending: Finishing,
    coro: Coroutine[Any, Any, Any],
    scope: trio.CancelScope,
) -> None:
    value: Any = None
    error: BaseException | None = None
    cancelled = True
    try:
        with scope:
            value = await coro
            cancelled = False
    except trio.Cancelled:
        raise  # the whole run is ending: trio cancels system tasks last
    except BaseException as exc:  # a system task must not crash trio  # noqa: BLE001
        error, cancelled = exc, False
    finally:
        ending._finish(value, error, cancelled)  # noqa: SLF001 - see Finishing


async def _gather(
    aws: tuple[Awaitable[Any], ...], timeout: float | None, return_exceptions: bool
) -> list[Any]:
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
        failure = as_failure(exc)
        results[index] = failure
        if return_exceptions:
            return
        if failed or deadline.cancel_called:
            errors.append(failure)
        else:
            failed, first = True, failure
            scope.cancel()

    async def run(index: int, aw: Awaitable[Any]) -> None:
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
                results[index] = gather_timeout(timeout)
        if not return_exceptions:
            error = gather_timeout(timeout)
            attach_other_errors(error, errors)
            raise error
    return results


class _Trio:
    """The backend object: what :mod:`cancelkit._backends` asks of a loop."""

    name: Literal["trio"] = "trio"

    def make_waiter(self, _loop: None) -> TrioWaiter:
        return TrioWaiter()

    def local_wait(self, _loop: None) -> tuple[Coroutine[Any, Any, None], Callable[[object], None]]:
        event = trio.Event()
        wake = functools.partial(
            _set_event, event, threading.get_ident(), trio.lowlevel.current_trio_token()
        )
        return event.wait(), wake

    def loop_caller(self, _loop: None) -> LoopCaller[Any]:
        return _callers.get(trio.lowlevel.current_trio_token())

    def spawn(
        self,
        _loop: None,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str,
        context: contextvars.Context,
        ending: Finishing,
    ) -> trio.CancelScope:
        scope = trio.CancelScope()
        trio.lowlevel.spawn_system_task(_body, ending, coro, scope, name=name, context=context)
        return scope

    async def gather(
        self, aws: tuple[Awaitable[Any], ...], timeout: float | None, return_exceptions: bool
    ) -> list[Any]:
        return await _gather(aws, timeout, return_exceptions)

    def adopt_new_tasks(self, adopted: Adopted) -> Callable[[], None]:
        return _nothing  # every trio task lives in a nursery: nothing is loose

    async def end_adopted(self, adopted: Adopted, reason: CancelReason, grace: float) -> list[str]:
        return []


def _nothing() -> None:
    return None


BACKEND = _Trio()
