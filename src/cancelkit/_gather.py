"""``gather``: run awaitables concurrently, results in argument order, fail fast.

Semantics (DESIGN.md): on the first failure the others are cancelled and awaited,
then that exception is raised as itself, the other failures kept on it
(:func:`other_errors`). On timeout everything unfinished is cancelled and awaited,
then ``TimeoutError`` is raised, or, with ``return_exceptions=True``, the finished
results come back with a ``TimeoutError`` in each unfinished slot. If the caller is
cancelled, every child is cancelled and awaited first.

It is written once per event loop on purpose (see :mod:`cancelkit._backends`): on
asyncio it drives tasks with done-callbacks, as ``asyncio.gather`` does, so it costs
no more than it; on trio it is a nursery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar, overload

from ._backends import current
from ._validate import awaitables, seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ("gather",)

T = TypeVar("T")


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
        backend = current()
    except BaseException:
        from ._validate import close_all  # noqa: PLC0415 - error path only

        close_all(aws)
        raise
    if not aws:
        return []
    return await backend.gather(aws, limit, return_exceptions)
