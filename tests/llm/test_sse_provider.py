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
from typing import TYPE_CHECKING, Any

import pytest

from cancelkit.llm import Message, ModelServerError, TextDelta

from .hostile import ANTHROPIC_FIRST, OPENAI_FIRST, connect

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .hostile import HostileProvider

pytestmark = pytest.mark.anyio

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
    "text not Unicode": (
        {
            "anthropic": [b"event: content_block_delta\n" + DELTA + b'"\\ud800"}}\n\n'],
            "openai": [CHUNK + b'"choices":[{"index":0,"delta":{"content":"\\udfff"}}]}\n\n'],
        },
        "a string holds a lone surrogate",
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


def body_of(case: str, protocol: str) -> Callable[[], Iterator[bytes]]:
    first = ANTHROPIC_FIRST if protocol == "anthropic" else OPENAI_FIRST
    pieces, _ = HOSTILE[case]

    def body() -> Iterator[bytes]:
        yield first
        yield from pieces[protocol]
        yield from ENDLESS.get(case, ())

    return body


CASES = [
    pytest.param((case, protocol, body_of(case, protocol)), id=f"{protocol}-{case}")
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
    model, client = connect(provider)
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
    model, client = connect(provider, sync=True)
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
