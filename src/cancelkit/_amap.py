"""``amap``: apply an async function to many items, bounded, rate-limited, in order.

Items are pulled from the iterable only when a slot is free, so an iterator of a
million (or infinitely many) items never holds more than ``limit`` coroutines at
once. Failure is fail-fast, as in :func:`gather`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sized
from typing import Any, Literal, TypeVar, overload

import anyio
import anyio.abc
import anyio.lowlevel

from ._backends import current_backend
from ._exceptions import Cancelled, RunCancelled, attach_other_errors
from ._validate import positive_int, seconds

__all__ = ("amap",)

T = TypeVar("T")
R = TypeVar("R")

_PENDING: Any = object()
_CHECKPOINT_EVERY = 64  # without a limit, let the loop breathe while items are pulled


@overload
async def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int | None = None,
    per_second: float | None = None,
    timeout: float | None = None,
    return_exceptions: Literal[False] = False,
) -> list[R]: ...
@overload
async def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int | None = None,
    per_second: float | None = None,
    timeout: float | None = None,
    return_exceptions: Literal[True],
) -> list[R | BaseException]: ...
async def amap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int | None = None,
    per_second: float | None = None,
    timeout: float | None = None,
    return_exceptions: bool = False,
) -> list[R] | list[R | BaseException]:
    """Run ``fn(item)`` for every item, at most ``limit`` at once, results in input order.

    Args:
        fn: an async function of one item.
        items: an iterable or async iterable, consumed lazily.
        limit: the most calls in flight at once (unbounded if ``None``).
        per_second: the most calls started per second.
        timeout: seconds for the whole map.
        return_exceptions: put failures (and, on timeout, ``TimeoutError``) in their
            slots instead of failing fast. On timeout the result has a slot per item
            taken from ``items``, padded to ``len(items)`` when it has a length.

    Returns:
        One result per item, in input order.

    Raises:
        TimeoutError: ``timeout`` passed (without ``return_exceptions``).
        TypeError, ValueError: bad arguments, before any item is taken.
        Exception: the first failure, as itself, others kept on it (:func:`other_errors`).
    """
    if not callable(fn):
        raise TypeError(f"amap(): fn must be an async callable, not {type(fn).__name__}")
    if not isinstance(items, Iterable | AsyncIterable):
        raise TypeError(f"amap(): items must be iterable, not {type(items).__name__}")
    slots_count = positive_int(limit, "limit")
    if per_second is not None and (
        isinstance(per_second, bool)
        or not isinstance(per_second, int | float)
        or not 0 < per_second < float("inf")
    ):
        raise ValueError(f"amap(): per_second must be a positive number, not {per_second!r}")
    limit_seconds = seconds(timeout, "timeout")
    current_backend()

    results: list[Any] = []
    errors: list[BaseException] = []
    first: BaseException | None = None
    source_error: BaseException | None = None
    slots = anyio.Semaphore(slots_count) if slots_count is not None else None
    interval = 1.0 / per_second if per_second else 0.0
    deadline = anyio.CancelScope(
        deadline=anyio.current_time() + limit_seconds if limit_seconds is not None else float("inf")
    )

    async def run(index: int, item: T, group: anyio.abc.TaskGroup) -> None:
        nonlocal first
        try:
            aw = fn(item)
            if not inspect.isawaitable(aw):
                raise TypeError(f"amap(): fn returned {type(aw).__name__}, not an awaitable")
            results[index] = await aw
        except (Exception, Cancelled) as exc:  # noqa: BLE001 - the outcome is the caller's
            failure: BaseException = RunCancelled(exc.reason) if isinstance(exc, Cancelled) else exc
            results[index] = failure
            if return_exceptions:
                return
            if first is not None or deadline.cancel_called:
                errors.append(failure)
            else:
                first = failure
                group.cancel_scope.cancel()
        finally:
            if slots is not None:
                slots.release()

    async def feed(group: anyio.abc.TaskGroup) -> None:
        nonlocal source_error
        next_start = anyio.current_time()
        async_source = aiter(items) if isinstance(items, AsyncIterable) else None
        sync_source = iter(items) if isinstance(items, Iterable) and async_source is None else None
        while True:
            if slots is not None:
                await slots.acquire()
            try:
                if sync_source is not None:
                    item = next(sync_source)
                else:
                    assert async_source is not None
                    item = await async_source.__anext__()
            except BaseException as exc:
                if slots is not None:
                    slots.release()
                if isinstance(exc, StopIteration | StopAsyncIteration):
                    return
                if isinstance(exc, Exception):
                    source_error = exc  # raised as itself after the group has closed
                    group.cancel_scope.cancel()
                    return
                raise
            if interval:
                now = anyio.current_time()
                if next_start > now:
                    await anyio.sleep(next_start - now)
                    now = anyio.current_time()
                # From the actual start, not the planned one: a late wake-up on a busy
                # machine must not be made up by a burst above the rate.
                next_start = now + interval
            results.append(_PENDING)
            group.start_soon(run, len(results) - 1, item, group)
            if slots is None and len(results) % _CHECKPOINT_EVERY == 0:
                await anyio.lowlevel.checkpoint()

    with deadline:
        async with anyio.create_task_group() as group:
            await feed(group)

    if source_error is not None:
        attach_other_errors(source_error, [first, *errors] if first is not None else errors)
        raise source_error
    if first is not None:
        attach_other_errors(first, errors)
        raise first
    if deadline.cancelled_caught:
        message = f"amap() timed out after {limit_seconds}s"
        if not return_exceptions:
            error = TimeoutError(message)
            attach_other_errors(error, errors)
            raise error
        if isinstance(items, Sized):
            results.extend([_PENDING] * (len(items) - len(results)))
        results[:] = [TimeoutError(message) if r is _PENDING else r for r in results]
    return results
