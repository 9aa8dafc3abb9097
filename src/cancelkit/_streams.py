"""Guarded iteration: a stream is closed by whoever iterated it, promptly, always.

Breaking out of ``async for`` over an async generator or an SDK stream does not
close it: it is left to the garbage collector, which closes it later, in another
task, or never, while the provider goes on generating (and billing). Iterating
through :func:`guard_stream` closes the underlying stream when the block is left by
a ``break``, an exception or a cancellation, or when a token fires: in the iterating
task, shielded from further cancellation and bounded by a grace period.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from ._backends import loop_caller
from ._exceptions import RunCancelled
from ._receipt import record
from ._sync_streams import shutdown_http
from ._token import CancelHandle, CancelToken
from ._validate import seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable
    from types import TracebackType

    from ._exceptions import CancelReason

__all__ = ("GuardedStream", "guard_stream")

T = TypeVar("T")

logger = logging.getLogger("cancelkit")


class GuardedStream(Generic[T]):
    """The block returned by :func:`guard_stream`; iterate it inside ``async with``."""

    def __init__(
        self,
        stream: AsyncIterable[T],
        token: CancelToken | None,
        grace: float,
        *,
        close: Callable[[], object] | None = None,
        name: str | None = None,
        report: bool = True,
    ) -> None:
        self._stream = stream
        self._token = token
        self._grace = grace
        self._close_call = close
        self._name = name
        self._report = report
        self._exhausted = False
        self._iterator: AsyncIterator[T] | None = None
        self._scope: anyio.CancelScope | None = None
        self._handle: CancelHandle | None = None
        self._closed = False
        self._waiting = False

    @property
    def closed(self) -> bool:
        """Whether the underlying stream has been closed."""
        return self._closed

    async def __aenter__(self) -> GuardedStream[T]:
        if self._iterator is not None:
            raise RuntimeError("guard_stream() blocks cannot be entered twice")
        self._iterator = aiter(self._stream)
        if self._token is not None:
            # One scope for the whole block, not one per item: it is cancelled only
            # while __anext__ waits, so the rest of the block is never interrupted.
            self._scope = anyio.CancelScope()
            self._scope.__enter__()
            call = loop_caller()
            self._handle = self._token.on_cancel(lambda _reason: call.now_or_soon(self._interrupt))
        return self

    def _interrupt(self) -> None:
        """The token fired (on the loop's thread): an HTTP response's connection is
        shut down at once, so the provider stops generating before this task even
        runs again; the wait for an item, if the block is waiting, is interrupted
        (otherwise the next ``__anext__`` sees the token first). The stream is closed
        in the iterating task, as always."""
        if not self._closed:
            shutdown_http(self._stream)
        if self._waiting and self._scope is not None:
            self._scope.cancel()

    def __aiter__(self) -> GuardedStream[T]:
        return self

    async def __anext__(self) -> T:
        """The next item; after the token fired, the stream is closed and this raises.

        Raises:
            RunCancelled: the token was cancelled (``.reason`` says why).
            StopAsyncIteration: the stream is exhausted (it is closed first).
        """
        if self._iterator is None or self._closed:
            raise RuntimeError("iterate guard_stream() inside its `async with` block")
        self._raise_if_cancelled()
        self._waiting = True
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            self._exhausted = True
            await self._close()
            raise
        except anyio.get_cancelled_exc_class():
            if self._scope is None or not self._scope.cancel_called:
                raise  # a cancellation from outside: the block's exit closes the stream
        finally:
            self._waiting = False
        await self._close()  # reached only when the token interrupted the wait
        self._raise_if_cancelled()
        raise AssertionError("unreachable: the scope is only cancelled by the token")

    def _raise_if_cancelled(self) -> None:
        reason: CancelReason | None = self._token.reason if self._token else None
        if reason is not None:
            raise RunCancelled(reason)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._close()
        finally:
            scope, self._scope = self._scope, None
            # A cancellation of ours that reached the block's end (it awaited after the
            # RunCancelled) is the token's doing: say so, as the iteration did.
            swallowed = scope is not None and scope.__exit__(exc_type, exc, tb)
            if swallowed and exc is not None:  # (trio's scope says True for no error too)
                self._raise_if_cancelled()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._handle is not None:
            self._handle.remove()
        closers: list[Callable[[], object] | None] = []
        if self._close_call is not None:
            closers.append(self._close_call)  # first: it is what stops the producer
        if self._iterator is not None and self._iterator is not self._stream:
            closers.append(_closer(self._iterator))
        closers.append(_closer(self._stream))
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + self._grace) as scope:
            for close in closers:
                if close is not None:
                    outcome = close()
                    if inspect.isawaitable(outcome):
                        await outcome
        if self._report:
            record(
                "stream",
                self._name or type(self._stream).__name__,
                "finished" if self._exhausted else "closed",
                detail="gave up waiting for the close" if scope.cancelled_caught else "",
            )
        if scope.cancelled_caught:
            logger.warning(
                "cancelkit: closing %r took longer than %ss; gave up waiting",
                self._stream,
                self._grace,
            )


def _closer(obj: object) -> Callable[[], Any] | None:
    close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
    return close if callable(close) else None


def guard_stream(
    stream: AsyncIterable[T],
    *,
    token: CancelToken | None = None,
    grace: float = 1.0,
    close: Callable[[], object] | None = None,
    name: str | None = None,
) -> GuardedStream[T]:
    """Iterate ``stream`` so that it is always closed promptly, in this task.

    Usage::

        async with guard_stream(client.messages.stream(...), token=run_token) as events:
            async for event in events:
                ...

    Leaving the block for any reason closes the stream (``aclose()``, or ``close()``,
    sync or async) shielded from cancellation and bounded by ``grace``. If ``token``
    is cancelled while waiting for an item, the wait is interrupted, the stream is
    closed, and :class:`RunCancelled` is raised with the token's reason (an await of
    the block after that is cancelled too, and the block ends with the same
    :class:`RunCancelled`); fired while the body works, the body's awaits are left
    alone and the next item is not read. Inside a run, the close is reported to the
    run's receipt.

    Some streams must be stopped by another call than their own ``aclose()``: an
    openai-agents ``result.stream_events()`` waits for the whole run to finish when
    closed, while ``result.cancel()`` stops it at once. Pass that call as ``close``:
    it is called first, then the iterator is closed (both within ``grace``).

    Args:
        stream: an async iterable: an async generator, an SDK stream, a response.
        token: a token whose cancellation stops the iteration.
        grace: seconds allowed for closing the stream.
        close: called (sync or async) to stop the stream, instead of the
            stream's own ``aclose()``/``close()``.
        name: what the receipt calls the stream (default: its type's name).

    Raises:
        TypeError: ``stream`` is not async-iterable, ``token`` not a token, or
            ``close`` not callable.
        ValueError: a bad ``grace``.
    """
    if not hasattr(stream, "__aiter__"):
        raise TypeError(f"guard_stream(): {type(stream).__name__} is not async-iterable")
    if token is not None and not isinstance(token, CancelToken):
        raise TypeError(f"guard_stream(): token must be a CancelToken, not {type(token).__name__}")
    if close is not None and not callable(close):
        raise TypeError(f"guard_stream(): close must be callable, not {type(close).__name__}")
    limit = seconds(grace, "grace", allow_none=False)
    assert limit is not None
    return GuardedStream(stream, token, limit, close=close, name=name)
