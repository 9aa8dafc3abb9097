"""The trio backend: waiters, loose tasks (system tasks), and ``gather`` (a nursery).

Imported only once a trio loop runs (trio is an optional dependency).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import TYPE_CHECKING, Any, Literal

import trio

from .._exceptions import Cancelled, as_failure, attach_other_errors, gather_timeout
from .._loop_caller import LoopCaller, cancel_scope

if TYPE_CHECKING:
    import contextvars
    from collections.abc import Awaitable, Callable, Coroutine

    from .._adopt import Adopted
    from .._exceptions import CancelReason
    from . import Finishing

__all__ = ("BACKEND", "TrioWaiter")

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

    def wake(self, _reason: CancelReason, /) -> None:
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
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            await self._event.wait()
        return self._event.is_set()


def _in_task() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


_callers: weakref.WeakKeyDictionary[Any, LoopCaller[Any]] = weakref.WeakKeyDictionary()


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

    def make_waiter(self) -> TrioWaiter:
        return TrioWaiter()

    def loop_caller(self) -> LoopCaller[Any]:
        token = trio.lowlevel.current_trio_token()
        caller = _callers.get(token)
        if caller is None:
            caller = _callers[token] = LoopCaller(
                token.run_sync_soon,
                token.run_sync_soon,
                (trio.RunFinishedError,),
                _in_task,
                cancel_scope,
            )
        return caller

    def spawn(
        self,
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
