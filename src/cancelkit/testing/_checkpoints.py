"""Cancel an async function at its 1st, 2nd, 3rd ... suspension point, in turn.

The function's coroutine is driven through a thin wrapper that forwards every value
it yields to the event loop (asyncio futures or trio traps alike) and counts them.
At the k-th one the wrapper cancels the surrounding cancel scope just before
suspending, so the loop delivers the cancellation exactly there. Nothing is mocked:
the code under test runs on the real loop, with real I/O.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

__all__ = ("cancel_at_each_checkpoint",)


class _Counted:
    """Awaits a coroutine, counting its suspensions and cancelling at the k-th."""

    def __init__(self, coro: Awaitable[Any], cancel_at: int, scope: anyio.CancelScope) -> None:
        self.coro = coro
        self.cancel_at = cancel_at
        self.scope = scope
        self.count = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self.coro.__await__()
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    yielded = inner.throw(exc)
                else:
                    yielded = inner.send(to_send)
            except StopIteration as stop:
                return stop.value
            self.count += 1
            if self.count == self.cancel_at:
                self.scope.cancel()
            try:
                to_send = yield yielded
            except BaseException as exc:  # forwarded to the coroutine, as await does  # noqa: BLE001
                to_throw = exc


async def cancel_at_each_checkpoint(
    fn: Callable[[], Awaitable[object]],
    check: Callable[[], object] | None = None,
    *,
    max_checkpoints: int = 10_000,
) -> int:
    """Run ``fn`` again and again, cancelling run k at its k-th suspension point.

    After every run, cancelled or not, ``check()`` is called (and awaited if it
    returns an awaitable): it asserts the invariant, for example that nothing was
    left running and nothing half-written. The loop ends with the first run that
    completes before its cancellation point is reached.

    Args:
        fn: an async function of no arguments; called once per run.
        check: the invariant to assert after each run.
        max_checkpoints: a safety bound on the number of runs.

    Returns:
        The number of suspension points of the uncancelled run.

    Raises:
        RuntimeError: ``fn`` still had not completed after ``max_checkpoints`` runs.
    """
    for cancel_at in range(1, max_checkpoints + 1):
        with anyio.CancelScope() as scope:
            counted = _Counted(fn(), cancel_at, scope)
            await counted
        if check is not None:
            outcome = check()
            if inspect.isawaitable(outcome):
                await outcome
        if counted.count < cancel_at:
            return counted.count
    raise RuntimeError(f"fn did not complete within {max_checkpoints} checkpoints")
