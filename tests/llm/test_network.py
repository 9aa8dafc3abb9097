"""asyncio_transport: the SDK clients' pool reading asyncio's sockets, same behaviour.

Every test runs on asyncio (the transport's own connections) and on trio (where the
pool uses httpcore2's backend): a call, its connection's reuse, a Stop that reaches
the server at once, a lost connection and a read timeout.
"""

from __future__ import annotations

import asyncio
import pathlib
import ssl
import threading
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import httpx2
import pytest

from cancelkit import CancelReason, CancelToken, RunCancelled
from cancelkit.llm import AnthropicModel, Done, Message, ModelUnavailable
from cancelkit.llm._network import _Backend, asyncio_transport

from .conftest import ended

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from cancelkit.llm.local import LocalModelServer

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "Stop pressed")


@pytest.fixture
async def model(server: LocalModelServer) -> AsyncIterator[AnthropicModel]:
    client = anthropic.AsyncAnthropic(
        base_url=server.base_url,
        api_key="local",
        max_retries=0,
        timeout=5,
        http_client=httpx2.AsyncClient(transport=asyncio_transport(httpx2.Limits())),
    )
    yield AnthropicModel(client, "local")
    await client.close()


async def test_calls_complete_and_share_one_connection(
    model: AnthropicModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    original = _Backend.connect_tcp

    async def counting(self: _Backend, *args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(_Backend, "connect_tcp", counting)
    for _ in range(3):
        async with model.stream([Message.user("hi [[tokens:20]]")]) as events:
            kinds = [type(event) async for event in events]
        assert kinds[-1] is Done
        assert events.usage is not None
        assert events.usage.output_tokens == 20
    assert len(opened) == 1


async def test_a_stop_from_another_thread_reaches_the_server(
    model: AnthropicModel, server: LocalModelServer
) -> None:
    token = CancelToken()
    with pytest.raises(RunCancelled):
        async with model.stream(
            [Message.user("[[tokens:5000]] [[rate:200]]")], token=token
        ) as stream:
            threading.Timer(0.05, token.cancel, args=(USER,)).start()
            async for _ in stream:
                pass
    record = await ended(server, stream.request_id)
    assert record.outcome == "disconnected"
    assert record.tokens_after_disconnect <= 1


async def test_the_server_sees_the_stop_before_the_stream_is_read_again(
    model: AnthropicModel, server: LocalModelServer
) -> None:
    token = CancelToken()
    async with model.stream([Message.user("[[tokens:5000]] [[rate:200]]")], token=token) as stream:
        await stream.__anext__()
        token.cancel(USER)
        assert (await ended(server, stream.request_id)).outcome == "disconnected"


async def test_a_lost_connection_is_unavailable(model: AnthropicModel) -> None:
    with pytest.raises(ModelUnavailable):
        async with model.stream([Message.user("[[tokens:30]] [[fault:cut-after=5]]")]) as stream:
            async for _ in stream:
                pass


async def test_a_silent_server_is_a_read_timeout(server: LocalModelServer) -> None:
    """Also on a connection whose earlier reads had a longer timeout."""
    client = anthropic.AsyncAnthropic(
        base_url=server.base_url,
        api_key="local",
        max_retries=0,
        timeout=30,
        http_client=httpx2.AsyncClient(transport=asyncio_transport(httpx2.Limits())),
    )
    model = AnthropicModel(client, "local")
    try:
        async with model.stream([Message.user("[[tokens:5]]")]) as stream:
            async for _ in stream:
                pass
        model = AnthropicModel(client.with_options(timeout=0.3), "local")
        with anyio.fail_after(10), pytest.raises(ModelUnavailable):
            async with model.stream([Message.user("[[tokens:5]] [[rate:1]]")]) as stream:
                async for _ in stream:
                    pass
    finally:
        await client.close()


# A self-signed certificate for 127.0.0.1 and its key, for these tests only (made once
# with: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes
# -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 36500 ...).
TLS = pathlib.Path(__file__).parent / "tls"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the transport's own connections
async def test_https_through_the_transports_own_connections() -> None:
    cert_file, key_file = TLS / "cert.pem", TLS / "key.pem"
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert_file, key_file)

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    trusted = ssl.create_default_context(cafile=str(cert_file))
    try:
        transport = asyncio_transport(httpx2.Limits(), verify=trusted)
        async with httpx2.AsyncClient(transport=transport) as client:
            answer = await client.get(f"https://127.0.0.1:{port}/")
        assert (answer.status_code, answer.text) == (200, "hello")
        assert answer.extensions["network_stream"].get_extra_info("ssl_object") is not None
    finally:
        server.close()
        await server.wait_closed()
