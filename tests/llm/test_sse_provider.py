"""A hostile provider, through the real adapters and SDK clients, over real HTTP.

A server on a socket of its own answers every call with a 200 and a reply that goes
wrong after its first words: data that is not JSON, JSON that is not UTF-8, an event
name that is not UTF-8, a line or an event that never ends. The caller sees the words
that came first, then :class:`~cancelkit.llm.ModelServerError` naming what was wrong;
the connection is dropped at once (not read on, not reused), and nothing is left
running.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest

from cancelkit.llm import (
    AnthropicModel,
    Message,
    Model,
    ModelServerError,
    OpenAIModel,
    TextDelta,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

pytestmark = pytest.mark.anyio

ANTHROPIC_FIRST = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","content":[],"model":"local","stop_reason":null,'
    b'"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hello"}}\n\n'
)
OPENAI_FIRST = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":0,"model":"local",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},'
    b'"finish_reason":null}]}\n\n'
)
DELTA = b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","created":0,"model":"local",'

# What goes wrong after the first words, for each protocol; what the error then says.
HOSTILE: dict[str, tuple[dict[str, Iterable[bytes]], str]] = {
    "not JSON": (
        {
            "anthropic": [b"event: content_block_delta\ndata: <html>502 Bad Gateway</html>\n\n"],
            "openai": [b"data: <html>502 Bad Gateway</html>\n\n"],
        },
        "data is not readable UTF-8 JSON (Expecting value",
    ),
    "JSON not UTF-8": (
        {
            "anthropic": [b"event: content_block_delta\n" + DELTA + b'"caf\xe9"}}\n\n'],
            "openai": [
                CHUNK + b'"choices":[{"index":0,"delta":{"content":"caf\xe9"}}]}\n\n',
            ],
        },
        "data is not readable UTF-8 JSON ('utf-8' codec can't decode byte 0xe9",
    ),
    "a name not UTF-8": (
        {
            "anthropic": [b"event: content_block_\xe9\n" + DELTA + b'"!"}}\n\n'],
            "openai": [b"event: chunk\xe9\n" + CHUNK + b'"choices":[]}\n\n'],
        },
        "an event's name is not UTF-8",
    ),
    "a line never ends": (
        {
            "anthropic": [b"event: content_block_delta\n" + DELTA + b'"'],
            "openai": [CHUNK],
        },
        "passed 4194304 bytes without ending",
    ),
    "an event never ends": (
        {"anthropic": [b"event: content_block_delta\n"], "openai": []},
        "passed 4194304 bytes without ending",
    ),
}
ENDLESS = {  # what the last two cases send on, until the client goes
    "a line never ends": itertools.repeat(b"x" * 16384),
    "an event never ends": itertools.repeat(b'data: {"x": "' + b"x" * 16000 + b'",\n'),
}


class HostileProvider:
    """A provider on 127.0.0.1: a thread that answers every request with a 200, a
    ``request-id`` and ``body()`` (chunked, one piece per chunk; the body of ``case``
    by default), one connection at a time. ``ended`` says how each connection ended:
    ``"client went while sending"``, ``"client closed after the reply"``, ``"client
    kept the connection"`` (idle for 5 s: back in its pool), or ``"client sent
    more"``."""

    def __init__(
        self, case: str, protocol: str, body: Callable[[], Iterable[bytes]] | None = None
    ) -> None:
        self.case, self.protocol = case, protocol
        self._body = body if body is not None else body_of(case, protocol)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.ended: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hostile provider")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)  # a bound for a client that hangs on to it
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with connection, connection.makefile("rb") as reader:
                self.ended.append(self._answer(connection, reader))

    def _answer(self, connection: socket.socket, reader: Any) -> str:
        try:
            return self._reply(connection, reader)
        except TimeoutError:
            return "client kept the connection"
        except OSError:
            return "client went while sending"

    def _reply(self, connection: socket.socket, reader: Any) -> str:
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        reader.read(length)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"request-id: req_hostile\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        for piece in self._body():
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.sent += len(piece)
        connection.sendall(b"0\r\n\r\n")
        try:
            more = reader.read(1)
        except ConnectionResetError:  # it went without reading all that was sent
            more = b""
        return "client sent more" if more else "client closed after the reply"

    def wait_ended(self, timeout: float = 10.0) -> str:
        """How the (only) connection ended, once it has."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            assert time.monotonic() < deadline, "the connection was never closed"
            time.sleep(0.005)
        return self.ended[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()


def body_of(case: str, protocol: str) -> Callable[[], Iterator[bytes]]:
    first = ANTHROPIC_FIRST if protocol == "anthropic" else OPENAI_FIRST
    pieces, _ = HOSTILE[case]

    def body() -> Iterator[bytes]:
        yield first
        yield from pieces[protocol]
        yield from ENDLESS.get(case, ())

    return body


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> Iterator[HostileProvider]:
    hostile = HostileProvider(*request.param)
    yield hostile
    hostile.close()


CASES = [
    pytest.param((case, protocol), id=f"{protocol}-{case}")
    for case in HOSTILE
    for protocol in ("anthropic", "openai")
]


def check(error: ModelServerError, protocol: str, case: str, stream: Any) -> None:
    """What the caller has: the words before, an error that says what went wrong."""
    assert type(error) is ModelServerError
    assert (error.provider, error.status, error.request_id) == (protocol, None, "req_hostile")
    message = str(error)
    assert message.startswith(f"{protocol}: the provider sent a malformed event stream: ")
    assert HOSTILE[case][1] in message
    assert len(message) < 400  # a sample of the bytes, not all of them
    assert stream.text == "Hello"
    assert stream.request_id == "req_hostile"
    assert stream.stop_reason == "error"  # the provider failed: nobody cancelled
    assert stream.usage is not None
    assert stream.usage.estimated


@pytest.mark.parametrize("provider", CASES, indirect=True)
async def test_a_malformed_reply_is_a_server_error_and_the_connection_goes(
    provider: HostileProvider,
) -> None:
    case, protocol = provider.case, provider.protocol
    model: Model
    if protocol == "anthropic":
        client: Any = anthropic.AsyncAnthropic(base_url=provider.url, api_key="x", max_retries=0)
        model = AnthropicModel(client, "local")
    else:
        client = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="x", max_retries=0)
        model = OpenAIModel(client, "local")
    seen: list[Any] = []
    try:
        with pytest.raises(ModelServerError) as info:
            async with model.stream([Message.user("hi")], max_tokens=50) as stream:
                async for event in stream:
                    seen.append(event)
        check(info.value, protocol, case, stream)
        assert seen == [TextDelta("Hello")]
        # Closed by the block, before the client is: not read on, not back in the pool.
        expected = "client went while sending" if case in ENDLESS else "client closed after"
        assert provider.wait_ended().startswith(expected)
        if case in ENDLESS:  # read up to the limit, then no further (a socket's buffers)
            assert provider.sent < 4 * 4194304
    finally:
        await client.close()


@pytest.mark.parametrize(
    "provider",
    [p for p in CASES if p.id in ("anthropic-not JSON", "openai-a line never ends")],
    indirect=True,
)
def test_a_sync_client_sees_the_same(provider: HostileProvider) -> None:
    case, protocol = provider.case, provider.protocol
    model: Model
    if protocol == "anthropic":
        client: Any = anthropic.Anthropic(base_url=provider.url, api_key="x", max_retries=0)
        model = AnthropicModel(client, "local")
    else:
        client = openai.OpenAI(base_url=provider.url + "/v1", api_key="x", max_retries=0)
        model = OpenAIModel(client, "local")
    seen: list[Any] = []
    try:
        with (
            pytest.raises(ModelServerError) as info,
            model.stream([Message.user("hi")], max_tokens=50) as stream,
        ):
            for event in stream:
                seen.append(event)
        check(info.value, protocol, case, stream)
        assert seen == [TextDelta("Hello")]
        assert provider.wait_ended().startswith("client")
        assert provider.ended[0] != "client kept the connection"
    finally:
        client.close()
