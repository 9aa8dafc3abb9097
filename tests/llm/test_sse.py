"""EventStream: Server-Sent Events off a response, however its bytes are cut."""

from __future__ import annotations

from typing import Any

import pytest

from cancelkit.llm._sse import END, EventStream, json_payload

pytestmark = pytest.mark.anyio


class Body:
    """An unencoded response's byte stream."""

    def __init__(self, chunks: tuple[bytes, ...]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk


class Response:
    """The part of an ``httpx2.Response`` an EventStream reads: its body, in chunks."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.headers: dict[str, str] = {}
        self.stream = Body(chunks)
        self.closed = False

    async def aiter_bytes(self) -> Any:  # httpx2's decoding iteration
        for chunk in self.chunks:
            yield chunk

    def iter_bytes(self) -> Any:
        yield from self.chunks

    async def aclose(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True


def decode(name: str | None, data: bytes, _response: Any) -> dict[str, Any] | None:
    if data == b"[DONE]":
        return END
    if name == "ping":
        return None
    if name == "error":
        raise ValueError(data.decode())
    payload = json_payload(data)
    return None if payload is None else payload | {"name": name}


BODY = (
    b'event: a\ndata: {"n": 1}\n\n'
    b": a comment\r\nevent: ping\r\ndata: {}\r\n\r\n"
    b'data: {"n":\ndata: 2}\n\n'
    b'event: b\ndata: {"n": 3}'  # the last event, without its blank line
)
EXPECTED = [{"n": 1, "name": "a"}, {"n": 2, "name": None}, {"n": 3, "name": "b"}]


@pytest.mark.parametrize("size", [1, 2, 7, len(BODY)])
async def test_events_whatever_the_chunks(size: int) -> None:
    chunks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    events = EventStream(Response(*chunks), decode)
    assert [event async for event in events] == EXPECTED
    assert list(EventStream(Response(*chunks), decode)) == EXPECTED


async def test_nothing_after_the_end_marker_is_an_event() -> None:
    events = EventStream(Response(b'data: {"n": 1}\n\ndata: [DONE]\n\ndata: {"n": 2}\n\n'), decode)
    assert [event async for event in events] == [{"n": 1, "name": None}]


async def test_an_error_event_is_raised_after_the_events_before_it() -> None:
    response = Response(b'data: {"n": 1}\n\nevent: error\ndata: overloaded\n\ndata: {"n": 2}\n\n')
    events = EventStream(response, decode)
    assert await events.__anext__() == {"n": 1, "name": None}
    with pytest.raises(ValueError, match="overloaded"):
        await events.__anext__()
    await events.aclose()
    assert response.closed


async def test_an_encoded_body_is_read_through_its_decoding() -> None:
    response = Response(b'data: {"n": 1}\n\n')
    response.headers["content-encoding"] = "gzip"
    response.stream = Body((b"\x1f\x8b not what the events are",))
    assert [event async for event in EventStream(response, decode)] == [{"n": 1, "name": None}]
