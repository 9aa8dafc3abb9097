"""The demo reads the model server's counters through one kept client.

``/api/stats`` reads them on every poll of every open page: a client per read cost
the event loop about 18 ms each (a TLS context loading the CA bundle). Here a small
HTTP/1.1 server that counts its connections answers ``/stats`` as the model server does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import pytest

from cancelkit.demo._model_process import ModelCounters

if TYPE_CHECKING:
    from anyio.abc import SocketStream

pytestmark = pytest.mark.anyio

COUNTERS = {"tokens_generated": 7, "tokens_after_disconnect": 0}


class CountingServer:
    """Answers every request with :data:`COUNTERS`, keeping connections alive."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0

    async def serve(self, stream: SocketStream) -> None:
        self.connections += 1
        body = json.dumps(COUNTERS).encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        buffer += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                _, _, buffer = buffer.partition(b"\r\n\r\n")  # a GET: no body
                self.requests += 1
                await stream.send(head % len(body) + body)


async def test_reads_share_one_connection_and_a_closed_reader_says_none() -> None:
    server = CountingServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    counters = ModelCounters(f"http://127.0.0.1:{port}")
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, server.serve)
        try:
            for _ in range(20):
                assert await counters.read() == COUNTERS
            assert (server.requests, server.connections) == (20, 1)
        finally:
            await counters.aclose()
        assert await counters.read() is None  # closed for good: no new client
        assert server.requests == 20
        group.cancel_scope.cancel()
    await listener.aclose()


async def test_a_server_that_is_not_there_reads_as_none() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # the port is free: nothing answers there
    counters = ModelCounters(f"http://127.0.0.1:{port}")
    try:
        assert await counters.read() is None
        assert await counters.read() is None  # and again, on the same client
    finally:
        await counters.aclose()
