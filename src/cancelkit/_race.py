"""``race``: the first awaitable to succeed wins; the rest are cancelled and awaited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._backends import current_backend
from ._exceptions import Cancelled, RunCancelled
from ._validate import awaitables, close_all, seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ("race",)

T = TypeVar("T")

_MISSING: Any = object()


async def race(*aws: Awaitable[T], timeout: float | None = None) -> T:
    """Return the result of the first awaitable to succeed.

    The others are cancelled and awaited before ``race`` returns. A failure does not
    end the race while another contestant may still succeed.

    Args:
        *aws: at least one coroutine or awaitable.
        timeout: seconds before giving up on all of them.

    Returns:
        The winner's result.

    Raises:
        ExceptionGroup: every contestant failed (their errors, in argument order).
        TimeoutError: nobody succeeded within ``timeout``.
        TypeError, ValueError: bad arguments; nothing has started then.
    """
    try:
        limit = seconds(timeout, "timeout")
        awaitables("race", aws)
        current_backend()
        if not aws:
            raise ValueError("race() needs at least one awaitable")
    except BaseException:
        close_all(aws)
        raise

    winner: Any = _MISSING
    errors: list[Exception | None] = [None] * len(aws)

    async def run(index: int, aw: Awaitable[T], group: anyio.abc.TaskGroup) -> None:
        nonlocal winner
        try:
            value = await aw
        except Cancelled as exc:
            errors[index] = RunCancelled(exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - the outcome is the caller's
            errors[index] = exc
            return
        if winner is _MISSING:
            winner = value
            group.cancel_scope.cancel()

    with anyio.move_on_after(limit if limit is not None else float("inf")) as deadline:
        async with anyio.create_task_group() as group:
            for index, aw in enumerate(aws):
                group.start_soon(run, index, aw, group)

    if winner is not _MISSING:
        return winner  # type: ignore[no-any-return]
    if deadline.cancelled_caught:
        raise TimeoutError(f"race() timed out after {limit}s")
    raise ExceptionGroup(
        f"all {len(aws)} contestants of race() failed",
        [error for error in errors if error is not None],
    )
