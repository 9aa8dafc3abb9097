"""A connection pool for the SDK clients that reads asyncio's sockets without churn.

The SDKs' HTTP layer (httpx2 over httpcore2) reads a socket on asyncio through anyio,
whose stream turns the socket's reading on before every read and off after it: two
``epoll_ctl`` calls and a selector update per read, and a cancel scope per read for
its timeout. A streamed reply is read one small chunk at a time (a token, at tens of
tokens a second per call), so under a few hundred streams that churn was a fifth of
the demo service's CPU. :func:`asyncio_transport` is httpx2's own transport with a
network backend of its own on asyncio: the socket keeps reading into a buffer (paused
only when the buffer is large), a read that must wait waits on one future, and the
reads' timeout is one timer per connection, moved on by each read rather than set and
cancelled per read. On any other event loop (trio) the pool uses httpcore2's own
backend, as before.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpcore2
import httpx2

if TYPE_CHECKING:
    from collections.abc import Iterable
    from ssl import SSLContext

__all__ = ("asyncio_transport",)

_HIGH = 1 << 20  # bytes buffered before the socket's reading is paused
_LOW = 1 << 16  # and resumed below this


class _Protocol(asyncio.Protocol):
    """What a connection has received and not yet read, and who waits for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended = False
        self.error: BaseException | None = None
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.deadline = 0.0  # of the read waiting now
        self.expired = False
        self._timer: asyncio.TimerHandle | None = None

    def wait(self, timeout: float | None) -> asyncio.Future[None]:
        """A future set when data, the end or an error arrives, or (with
        ``expired``) when ``timeout`` seconds pass first."""
        loop = asyncio.get_running_loop()
        self.expired = False
        waiter = self.waiter = loop.create_future()
        if timeout is not None:
            self.deadline = loop.time() + timeout
            # An armed timer due no later looks at the new deadline when it fires.
            if self._timer is None or self.deadline < self._timer.when():
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(self.deadline, self._expire)
        else:
            self.deadline = float("inf")
        return waiter

    def _expire(self) -> None:
        self._timer = None
        if self.waiter is None or self.waiter.done():
            return  # no read waits: the next one arms a timer again
        loop = asyncio.get_running_loop()
        if loop.time() < self.deadline:  # a later read moved the deadline on
            if self.deadline != float("inf"):
                self._timer = loop.call_at(self.deadline, self._expire)
            return
        self.expired = True
        self._wake()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _bounded(future: asyncio.Future[None], timeout: float | None) -> bool:
    """Wait for ``future``; False if ``timeout`` seconds passed first."""
    if timeout is None:
        await future
        return True
    expired = False

    def expire() -> None:
        nonlocal expired
        if not future.done():
            expired = True
            future.set_result(None)

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await future
    finally:
        timer.cancel()
    return not expired


class _Stream(httpcore2.AsyncNetworkStream):
    """One connection, as httpcore2 reads and writes it."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        while not protocol.buffer and not protocol.ended:
            try:
                await protocol.wait(timeout)
            finally:
                protocol.waiter = None
            if protocol.expired and not protocol.buffer and not protocol.ended:
                raise httpcore2.ReadTimeout(f"no data within {timeout}s")
        if protocol.buffer:
            data = bytes(protocol.buffer[:max_bytes])
            del protocol.buffer[:max_bytes]
            if protocol.paused and len(protocol.buffer) < _LOW:
                protocol.paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore2.ReadError(str(protocol.error)) from protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(buffer)
        drained = self._protocol.drained
        if drained is not None and not await _bounded(drained, timeout):
            raise httpcore2.WriteTimeout(f"could not write within {timeout}s")
        if self._protocol.error is not None:
            raise httpcore2.WriteError(str(self._protocol.error)) from self._protocol.error

    async def aclose(self) -> None:
        self._transport.abort()  # nothing is left to send: drop it now, unlike close()

    async def start_tls(
        self,
        ssl_context: SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> _Stream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                upgraded = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            self._transport.abort()
            raise httpcore2.ConnectError(str(exc)) from exc
        assert isinstance(upgraded, asyncio.Transport)
        self._protocol.transport = upgraded
        return _Stream(upgraded, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the server closed, or wrote to
            return bool(self._protocol.buffer) or self._protocol.ended
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info in ("ssl_object", "socket"):
            return self._transport.get_extra_info(info)
        return None


class _Backend(httpcore2.AsyncNetworkBackend):
    """Connections as :class:`_Stream` on asyncio; httpcore2's own elsewhere."""

    def __init__(self) -> None:
        self._other = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio
            return await self._other.connect_tcp(host, port, timeout, local_address, socket_options)
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=local
                )
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        return await self._other.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._other.sleep(seconds)


class _Transport(httpx2.AsyncHTTPTransport):
    """httpx2's transport (HTTP/1.1, certificates verified as by default), its pool
    reading asyncio's sockets with :class:`_Stream`."""

    def __init__(self, limits: httpx2.Limits, verify: SSLContext | bool) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )


def asyncio_transport(
    limits: httpx2.Limits, *, verify: SSLContext | bool = True
) -> httpx2.AsyncHTTPTransport:
    """A transport for an SDK's async client (``http_client=httpx2.AsyncClient(
    transport=...)``) that reads asyncio's sockets without churn (see above);
    ``verify`` as httpx2's (``True``: the default certificates)."""
    return _Transport(limits, verify)
