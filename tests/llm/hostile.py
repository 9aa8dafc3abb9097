"""A hostile provider on a socket of its own, and the real adapters over it.

Shared by the tests of what a caller sees when a provider's reply goes wrong
(``test_sse_provider``, ``test_reply_outcome``).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
import openai

from cancelkit.llm import AnthropicModel, Model, OpenAIModel

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

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


class HostileProvider:
    """A provider on 127.0.0.1: a thread that answers every request with a 200, a
    ``request-id`` and ``body()`` (chunked, one piece per chunk), one connection at
    a time; ``case`` names what ``body`` does wrong. ``ended`` says how each connection ended:
    ``"client went while sending"``, ``"client closed after the reply"``, ``"client
    kept the connection"`` (idle for 5 s: back in its pool), or ``"client sent
    more"``."""

    def __init__(self, case: str, protocol: str, body: Callable[[], Iterable[bytes]]) -> None:
        self.case, self.protocol = case, protocol
        self._body = body
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


def connect(
    provider: HostileProvider, *, sync: bool = False, keepalive: bool = True
) -> tuple[Model, Any]:
    """The protocol's real adapter over its SDK's client. Without keep-alive, a
    connection is closed the moment its response is: the server sees when."""
    limits = httpx2.Limits(max_connections=10, max_keepalive_connections=10 if keepalive else 0)
    http: Any = httpx2.Client(limits=limits) if sync else httpx2.AsyncClient(limits=limits)
    settings: dict[str, Any] = {"api_key": "x", "max_retries": 0, "http_client": http}
    model: Model
    if provider.protocol == "anthropic":
        sdk: Any = anthropic.Anthropic if sync else anthropic.AsyncAnthropic
        client = sdk(base_url=provider.url, **settings)
        model = AnthropicModel(client, "local")
    else:
        sdk = openai.OpenAI if sync else openai.AsyncOpenAI
        client = sdk(base_url=provider.url + "/v1", **settings)
        model = OpenAIModel(client, "local")
    return model, client
