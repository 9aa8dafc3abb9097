"""Guarded iteration for sync streams: a Stop from any thread wakes the reader at once.

A sync SDK stream (``anthropic.Anthropic``, ``openai.OpenAI``) is read by a thread
blocked in ``recv()``. Closing the response from another thread does not wake it:
``Response.close()`` ends in ``socket.close()``, and on Linux a ``close()`` of a
descriptor another thread is reading leaves that read blocked (and the connection
open, so the provider goes on generating) until the next bytes arrive; it also
mutates the HTTP state machine that the reader is using. ``shutdown()`` is the call
that is safe and prompt from another thread: it wakes the blocked read with an end of
file and sends the FIN at once, touching no Python-level state.

So :func:`guard_sync_stream` splits the Stop in two. In the thread that calls
``cancel()``: shut down the response's socket (or call the ``close`` given). In the
iterating thread, the owner: the read returns, the guard raises
:class:`~cancelkit.Cancelled` with the token's reason, and leaving the block closes
the stream there, as the SDK expects, and reports it to the run's receipt.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ._exceptions import Cancelled
from ._receipt import record
from ._token import CancelHandle, CancelToken, current_token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType

    from ._exceptions import CancelReason

__all__ = ("SyncGuardedStream", "guard_sync_stream", "http_socket", "shutdown_http")

T = TypeVar("T")

logger = logging.getLogger("cancelkit")


class ConnectionSocket(Protocol):
    """A connection's socket as the transports hand it out: a ``socket.socket``, or
    a wrapper of one (asyncio's ``TransportSocket``, trio's socket); all shut down."""

    def shutdown(self, how: int, /) -> object: ...


def http_socket(stream: object) -> ConnectionSocket | None:
    """The socket an SDK stream or an ``httpx``/``httpx2`` response reads from.

    Found through the response's ``network_stream`` extension (httpcore's), on the
    stream itself or its ``response``: a ``socket.socket`` (sync clients), asyncio's
    ``TransportSocket`` or trio's socket (async clients). ``None`` when there is none, when
    the connection is HTTP/2 (its socket carries other requests' streams too), or when
    the response is closed (its connection may already serve another request).
    """
    for candidate in (stream, getattr(stream, "response", None)):
        extensions = getattr(candidate, "extensions", None)
        if not isinstance(extensions, dict):
            continue
        if getattr(candidate, "is_closed", False):
            return None
        if getattr(candidate, "http_version", "HTTP/1.1") == "HTTP/2":
            return None
        network = extensions.get("network_stream")
        get_info = getattr(network, "get_extra_info", None)
        found = get_info("socket") if callable(get_info) else None
        return found if callable(getattr(found, "shutdown", None)) else None
    return None


def shutdown_http(stream: object) -> bool:
    """Shut the connection of an HTTP/1.1 response (an SDK stream's) down, from any
    thread, without closing it: the server sees the client gone at once, and a reader
    blocked on it wakes. Its owner closes it as usual. False: no socket to shut down.
    """
    sock = http_socket(stream)
    if sock is None:
        return False
    with contextlib.suppress(OSError):  # already closed: nothing is reading from it
        if isinstance(sock, socket.socket):
            # socket.socket's own method, also for an ssl.SSLSocket: its override
            # drops the TLS object the reader is using; this only tells the kernel.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        else:
            sock.shutdown(socket.SHUT_RDWR)
    return True


class SyncGuardedStream(Generic[T]):
    """The block returned by :func:`guard_sync_stream`; iterate it inside ``with``."""

    def __init__(
        self,
        stream: Iterable[T],
        token: CancelToken | None,
        *,
        close: Callable[[], object] | None = None,
        name: str | None = None,
        report: bool = True,
    ) -> None:
        self._stream = stream
        self._token = token
        self._close_call = close
        self._name = name
        self._report = report
        self._iterator: Iterator[T] | None = None
        self._handle: CancelHandle | None = None
        self._lock = threading.Lock()  # the owner's close against the canceller's interrupt
        self._closed = False
        self._exhausted = False
        self.interrupted = False
        """Whether a Stop interrupted the stream from the cancelling thread."""

    @property
    def token(self) -> CancelToken:
        """The token that stops the iteration (``current_token()`` by default)."""
        assert self._token is not None, "enter the block first"
        return self._token

    @property
    def closed(self) -> bool:
        """Whether the underlying stream has been closed."""
        return self._closed

    def __enter__(self) -> SyncGuardedStream[T]:
        if self._iterator is not None:
            raise RuntimeError("guard_sync_stream() blocks cannot be entered twice")
        if self._token is None:
            self._token = current_token()
        self._iterator = iter(self._stream)
        self._handle = self._token.on_cancel(self._interrupt)
        return self

    def _interrupt(self, _reason: CancelReason) -> None:
        """In the cancelling thread: wake the reader (never blocks, never raises)."""
        if not self._lock.acquire(False):
            return  # the owner is closing it right now
        try:
            if self._closed:
                return
            self.interrupted = True
            if self._close_call is not None:
                self._close_call()
                return
            shutdown_http(self._stream)
        finally:
            self._lock.release()

    def __iter__(self) -> SyncGuardedStream[T]:
        return self

    def __next__(self) -> T:
        """The next item; once the token fired, the stream is closed and this raises.

        Raises:
            Cancelled: the token was cancelled (``.reason`` says why); an error the
                interrupted read raised (a connection closed mid-body) is this too.
            StopIteration: the stream is exhausted (it is closed first).
        """
        if self._iterator is None or self._closed:
            raise RuntimeError("iterate guard_sync_stream() inside its `with` block")
        self._raise_if_cancelled()
        try:
            return next(self._iterator)
        except StopIteration:
            if self.interrupted:  # cut short by the Stop, not finished
                self._raise_if_cancelled()
            self._exhausted = True
            self.close()
            raise
        except Exception:
            self._raise_if_cancelled()
            raise

    def _raise_if_cancelled(self) -> None:
        assert self._token is not None
        reason = self._token.reason
        if reason is not None:
            self.close()
            raise Cancelled(reason) from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the stream now, in this thread (leaving the block does it too)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._handle is not None:
            self._handle.remove()
        errors: list[BaseException] = []
        closers: list[object] = [] if self._close_call is None else [self._close_call]
        if self._iterator is not None and self._iterator is not self._stream:
            closers.append(getattr(self._iterator, "close", None))
        closers.append(getattr(self._stream, "close", None))
        for close in closers:
            if callable(close):
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - the others must still be closed
                    errors.append(exc)
        if self._report:
            record(
                "stream",
                self._name or type(self._stream).__name__,
                "finished" if self._exhausted else "closed",
                detail="interrupted from the cancelling thread" if self.interrupted else "",
            )
        if errors:
            logger.warning("cancelkit: closing %r failed: %r", self._stream, errors[0])


def guard_sync_stream(
    stream: Iterable[T],
    *,
    token: CancelToken | None = None,
    close: Callable[[], object] | None = None,
    name: str | None = None,
) -> SyncGuardedStream[T]:
    """Iterate a sync ``stream`` so that a Stop from any thread ends it at once.

    Usage::

        stream = client.chat.completions.create(..., stream=True)  # openai.OpenAI
        with cancelkit.guard_sync_stream(stream) as chunks:
            for chunk in chunks:
                ...

    When ``token`` is cancelled, from whichever thread: the HTTP response's socket is
    shut down in that thread (an SDK stream, or an ``httpx2``/``httpx`` response), so
    a read blocked in this thread returns at once and the provider sees the client
    go; iterating then raises :class:`~cancelkit.Cancelled` with the token's reason.
    Leaving the block for any reason closes the stream in this thread, and inside a
    run reports it to the run's receipt (layer ``stream``).

    A stream with no socket to shut down (a generator, an HTTP/2 response) is
    stopped at its next item unless ``close`` is given: then ``close()`` is what the
    cancelling thread calls, and it must be safe from another thread.

    Args:
        stream: a sync iterable: an SDK stream, an ``httpx2`` response's
            ``iter_lines()``... (pass the stream itself, not ``iter(stream)``, so the
            socket can be found).
        token: the token that stops it; by default ``current_token()``.
        close: a thread-safe call that stops the producer, instead of shutting
            down the socket; also called when the block is left.
        name: what the receipt calls the stream (default: its type's name).

    Raises:
        TypeError: ``stream`` is not iterable, ``token`` not a token, or ``close``
            not callable.
    """
    if not hasattr(stream, "__iter__"):
        raise TypeError(f"guard_sync_stream(): {type(stream).__name__} is not iterable")
    if token is not None and not isinstance(token, CancelToken):
        raise TypeError(
            f"guard_sync_stream(): token must be a CancelToken, not {type(token).__name__}"
        )
    if close is not None and not callable(close):
        raise TypeError(f"guard_sync_stream(): close must be callable, not {type(close).__name__}")
    return SyncGuardedStream(stream, token, close=close, name=name)
