"""``as_completed``: results in completion order, in a block that owns the children.

Leaving the block (a ``break``, an exception, a cancel) cancels and awaits whatever
is still running, in the task that entered it: this is why it is a context manager
rather than a bare iterator, which would be finalised later, in another task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from ._backends import current_backend
from ._exceptions import Cancelled, RunCancelled
from ._validate import awaitables, close_all, seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ("as_completed",)

T = TypeVar("T")

_Outcome = tuple[bool, Any]  # (ok, value or exception)


class AsCompleted(Generic[T]):
    """The block returned by :func:`as_completed`; iterate it inside ``async with``."""

    def __init__(self, aws: tuple[Awaitable[T], ...], timeout: float | None) -> None:
        self._aws = aws
        self._timeout = timeout
        self._remaining = len(aws)
        self._group: anyio.abc.TaskGroup | None = None
        self._deadline = float("inf")
        self._send: MemoryObjectSendStream[_Outcome] | None = None
        self._receive: MemoryObjectReceiveStream[_Outcome] | None = None

    async def __aenter__(self) -> AsCompleted[T]:
        if self._group is not None:
            raise RuntimeError("as_completed() blocks cannot be entered twice")
        # One buffered outcome per child: a child never waits for the body to read.
        self._send, self._receive = anyio.create_memory_object_stream[_Outcome](len(self._aws))
        if self._timeout is not None:
            self._deadline = anyio.current_time() + self._timeout
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        for aw in self._aws:
            self._group.start_soon(self._run, aw)
        self._aws = ()
        return self

    async def _run(self, aw: Awaitable[T]) -> None:
        try:
            outcome: _Outcome = (True, await aw)
        except Cancelled as exc:
            outcome = (False, RunCancelled(exc.reason))
        except Exception as exc:  # noqa: BLE001 - the outcome is the caller's
            outcome = (False, exc)
        assert self._send is not None
        self._send.send_nowait(outcome)

    def __aiter__(self) -> AsCompleted[T]:
        return self

    async def __anext__(self) -> T:
        """The next result to complete; a child's failure is raised here, as itself.

        Raises:
            TimeoutError: the block's ``timeout`` passed before the next result.
        """
        if self._group is None or self._receive is None:
            raise RuntimeError("iterate as_completed() inside its `async with` block")
        if self._remaining == 0:
            raise StopAsyncIteration
        with anyio.move_on_after(self._deadline - anyio.current_time()) as scope:
            ok, value = await self._receive.receive()
        if scope.cancelled_caught:
            raise TimeoutError(f"as_completed() timed out after {self._timeout}s")
        self._remaining -= 1
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        assert group is not None
        group.cancel_scope.cancel()
        try:
            # The block's own exception is not fed to the group: it would come back
            # wrapped in an ExceptionGroup. It propagates as itself after this returns.
            await group.__aexit__(None, None, None)
        finally:
            assert self._send is not None
            assert self._receive is not None
            self._send.close()
            self._receive.close()


def as_completed(*aws: Awaitable[T], timeout: float | None = None) -> AsCompleted[T]:
    """Iterate results in completion order; leaving the block cancels the rest.

    Usage::

        async with as_completed(fetch(a), fetch(b), timeout=5) as results:
            async for result in results:
                ...

    Args:
        *aws: coroutines or awaitables.
        timeout: seconds for the whole block; past it, the next ``__anext__`` raises
            ``TimeoutError``.

    Raises:
        TypeError, ValueError: bad arguments; nothing has started then.
    """
    try:
        limit = seconds(timeout, "timeout")
        awaitables("as_completed", aws)
        current_backend()
    except BaseException:
        close_all(aws)
        raise
    return AsCompleted(aws, limit)
