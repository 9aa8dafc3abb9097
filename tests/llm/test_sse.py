"""EventStream: Server-Sent Events off a response, however its bytes are cut, and
however broken: a malformed stream is the provider's failure, never unbounded memory.

The whole path (the adapters over a real HTTP response from a hostile server) is in
``test_sse_provider.py``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from cancelkit.llm import ModelServerError
from cancelkit.llm._sse import END, MAX_DRAIN_BYTES, MAX_EVENT_BYTES, EventStream, json_payload

if TYPE_CHECKING:
    from collections.abc import Iterable

pytestmark = pytest.mark.anyio


class Body:
    """An unencoded response's byte stream (``read`` counts the chunks it gave)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = chunks
        self.read = 0

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


class Response:
    """The part of an ``httpx2.Response`` an EventStream reads: its body, in chunks
    (an endless iterator of them, for a provider that never stops)."""

    def __init__(self, *chunks: bytes, endless: Iterable[bytes] = ()) -> None:
        self.chunks: Iterable[bytes] = itertools.chain(chunks, endless) if endless else chunks
        self.headers: dict[str, str] = {"request-id": "req_1"}
        self.stream = Body(self.chunks)
        self.closed = False

    async def aiter_bytes(self) -> Any:  # httpx2's decoding iteration
        for chunk in self.chunks:
            yield chunk

    def iter_bytes(self) -> Any:
        for chunk in self.chunks:
            self.stream.read += 1
            yield chunk

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
        raise ProviderSaid(data.decode())
    payload = json_payload(data)
    return None if payload is None else payload | {"name": name}


class ProviderSaid(Exception):  # noqa: N818 - what an SDK's error event is, here
    """An error event, as an adapter's ``decode`` raises the SDK's error."""


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
    events = EventStream(Response(*chunks), decode, "acme")
    assert [event async for event in events] == EXPECTED
    assert list(EventStream(Response(*chunks), decode, "acme")) == EXPECTED


async def test_nothing_after_the_end_marker_is_an_event() -> None:
    body = b'data: {"n": 1}\n\ndata: [DONE]\n\ndata: {"n": 2}\n\n'
    events = EventStream(Response(body), decode, "acme")
    assert [event async for event in events] == [{"n": 1, "name": None}]


async def test_an_error_event_is_raised_after_the_events_before_it() -> None:
    response = Response(b'data: {"n": 1}\n\nevent: error\ndata: overloaded\n\ndata: {"n": 2}\n\n')
    events = EventStream(response, decode, "acme")
    assert await events.__anext__() == {"n": 1, "name": None}
    with pytest.raises(ProviderSaid, match="overloaded"):
        await events.__anext__()
    await events.aclose()
    assert response.closed


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_after_an_error_the_iteration_is_over_and_reads_nothing(sync: bool) -> None:
    """A caller that goes on iterating after the error (an endless body behind it)
    gets the end of the iteration at once, as from a generator that raised."""
    body = b'data: {"n": 1}\n\nevent: error\ndata: overloaded\n\n'
    response = Response(body, endless=itertools.repeat(b'data: {"n": 2}\n\n'))
    events = EventStream(response, decode, "acme")
    seen, error = await read(events, sync, close=False)
    assert (seen, type(error)) == ([{"n": 1, "name": None}], ProviderSaid)
    read_then = response.stream.read
    assert await read(events, sync) == ([], None)  # over, not read again; then closed
    assert response.stream.read == read_then
    assert response.closed


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_after_the_end_marker_an_endless_body_is_read_only_so_far(sync: bool) -> None:
    """The body is read on after ``[DONE]`` (for the connection's reuse), but not for
    ever: past MAX_DRAIN_BYTES the iteration ends."""
    chunk = b"x" * 1024
    response = Response(b'data: {"n": 1}\n\ndata: [DONE]\n\n', endless=itertools.repeat(chunk))
    with anyio.fail_after(10):  # (before: read for ever)
        seen, error = await read(EventStream(response, decode, "acme"), sync)
    assert (seen, error) == ([{"n": 1, "name": None}], None)
    assert response.stream.read <= 2 + MAX_DRAIN_BYTES // len(chunk)
    assert response.closed


async def test_an_encoded_body_is_read_through_its_decoding() -> None:
    response = Response(b'data: {"n": 1}\n\n')
    response.headers["content-encoding"] = "gzip"
    response.stream = Body((b"\x1f\x8b not what the events are",))
    events = EventStream(response, decode, "acme")
    assert [event async for event in events] == [{"n": 1, "name": None}]


async def read(
    events: EventStream, sync: bool, *, close: bool = True
) -> tuple[list[dict[str, Any]], Exception | None]:
    """The events read from ``events`` (``for`` or ``async for``), and the error that
    ended the iteration, if one did; then ``events`` is closed, as a guard does."""
    seen: list[dict[str, Any]] = []
    error: Exception | None = None
    try:
        if sync:
            for item in events:
                seen.append(item)
        else:
            async for item in events:
                seen.append(item)
    except Exception as raised:
        error = raised
    if close and sync:
        events.close()
    elif close:
        await events.aclose()
    return seen, error


def malformed(error: Exception | None) -> ModelServerError:
    """``error`` is the provider's failure, as a malformed stream raises it."""
    assert type(error) is ModelServerError, repr(error)
    assert (error.provider, error.status, error.request_id) == ("acme", None, "req_1")
    assert str(error).startswith("acme: the provider sent a malformed event stream: ")
    assert len(str(error)) < 400  # a sample of the bytes, never all of them
    return error


FIRST = b'event: a\ndata: {"n": 1}\n\n'
AFTER = b'event: b\ndata: {"n": 2}\n\n'  # never read: nothing after an error is an event

ENDLESS = {
    "a line never ends": (b'data: {"n": ', itertools.repeat(b"x" * 65536)),
    "an event never ends": (b"", itertools.repeat(b"data: " + b"y" * 1000 + b"\n")),
    "empty data lines": (b"", itertools.repeat(b"data:\n" * 10000)),
    "a line dribbles": (b"data: ", itertools.repeat(b"z" * 4096)),
}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("case", ENDLESS)
async def test_what_never_ends_is_refused_at_the_limit(case: str, sync: bool) -> None:
    start, endless = ENDLESS[case]
    response = Response(FIRST + start, endless=endless)
    events = EventStream(response, decode, "acme")
    seen, error = await read(events, sync)
    assert seen == [{"n": 1, "name": "a"}]  # what came before, then the error
    assert "passed 4194304 bytes without ending" in str(malformed(error))
    # Refused once the limit is passed, not read further; nothing is held any more.
    chunk_size = len(next(iter(endless)))  # (a data line counts a little less)
    assert response.stream.read <= MAX_EVENT_BYTES / chunk_size * 1.01 + 3
    assert (events._partial, events._pieces, events._data) == (b"", [], [])
    assert response.closed


def event(*data_lines: bytes, crlf: bool = False, space: bool = True) -> bytes:
    """One named event with these data lines, as a provider may write it."""
    end = b"\r\n" if crlf else b"\n"
    field = b"data: " if space else b"data:"
    return end.join([b"event: big", *(field + line for line in data_lines), b"", b""])


def counted(*data_lines: bytes) -> int:
    """What an event counts against the limit (see MAX_EVENT_BYTES)."""
    return sum(len(line) + len(b"data:\n") for line in data_lines)


@pytest.mark.parametrize("space", [True, False], ids=["data-space", "data"])
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
async def test_the_limit_is_exact_however_the_event_is_cut(
    monkeypatch: pytest.MonkeyPatch, crlf: bool, space: bool
) -> None:
    monkeypatch.setattr("cancelkit.llm._sse.MAX_EVENT_BYTES", 64)
    fits = (b'{"s":', b'"' + b"x" * 44 + b'"}')
    over = (b'{"s":', b'"' + b"x" * 45 + b'"}')
    assert (counted(*fits), counted(*over)) == (64, 65)
    for lines, refused in ((fits, False), (over, True)):
        body = FIRST + event(*lines, crlf=crlf, space=space) + AFTER
        cuts = [[body[:i], body[i:]] for i in range(1, len(body))]
        cuts += [[body[i : i + size] for i in range(0, len(body), size)] for size in (1, 3)]
        for chunks in cuts:
            seen, error = await read(EventStream(Response(*chunks), decode, "acme"), sync=False)
            if refused:
                assert seen == [{"n": 1, "name": "a"}], chunks
                assert "over 64 bytes" in str(malformed(error)) or "passed 64" in str(error)
            else:
                assert error is None, (chunks, error)
                assert [e["name"] for e in seen] == ["a", "big", "b"]


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_huge_chunk_is_read_event_by_event(sync: bool) -> None:
    many = b'data: {"n": 0}\n\n' * 300_000  # 4.8 MB in one chunk, every event small
    seen, error = await read(EventStream(Response(many), decode, "acme"), sync)
    assert (len(seen), error) == (300_000, None)
    fits = b'{"s": "' + b"x" * (MAX_EVENT_BYTES - 15) + b'"}'
    assert counted(fits) == MAX_EVENT_BYTES
    response = Response(FIRST + event(fits) + AFTER)  # one chunk, the largest event that fits
    seen, error = await read(EventStream(response, decode, "acme"), sync)
    assert error is None
    assert [e["name"] for e in seen] == ["a", "big", "b"]
    response = Response(FIRST + event(b" " + fits) + AFTER)  # one byte more
    seen, error = await read(EventStream(response, decode, "acme"), sync)
    assert seen == [{"n": 1, "name": "a"}]
    assert "an event is over 4194304 bytes" in str(malformed(error))
    assert f"... ({MAX_EVENT_BYTES + 1 - 6} bytes)" in str(error)  # its size, 64 of its bytes


@pytest.mark.parametrize(
    "body",
    [b"", b"\n", b"\r\n" * 50, b"\n" * 1000, b": ping\n\n" * 10, b"event: ping\n\n\r\n"],
)
async def test_blank_lines_only_are_no_events(body: bytes) -> None:
    for size in (1, 2, max(len(body), 1)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        for sync in (False, True):
            events = EventStream(Response(*chunks), decode, "acme")
            assert await read(events, sync) == ([], None)


CRLF = (
    b'event: a\r\ndata: {"n":\r\ndata: 1}\r\n\r\n'  # one event in two data lines
    b": keep-alive\r\n\r\n"
    b'event: b\r\ndata:{"n": 2}\r\n\r\n'
)


CR = CRLF.replace(b"\r\n", b"\r")  # a line may end in CR alone, too
MIXED = b'event: a\rdata: {"n":\r\ndata: 1}\n\r: keep-alive\n\revent: b\r\ndata:{"n": 2}\r\r'


@pytest.mark.parametrize("body", [CR, MIXED], ids=["CR", "CR, LF and CRLF mixed"])
async def test_lines_ending_in_cr_alone_however_cut(body: bytes) -> None:
    cuts = [[body[:i], body[i:]] for i in range(1, len(body))]
    cuts.append([bytes([byte]) for byte in body])
    for chunks in cuts:
        for sync in (False, True):
            seen, error = await read(EventStream(Response(*chunks), decode, "acme"), sync)
            assert (seen, error) == ([{"n": 1, "name": "a"}, {"n": 2, "name": "b"}], None)


async def test_crlf_cut_between_its_cr_and_lf_anywhere() -> None:
    cuts = [[CRLF[:i], CRLF[i:]] for i in range(1, len(CRLF))]  # every \r|\n split
    cuts.append([bytes([byte]) for byte in CRLF])  # one byte a chunk
    cuts.append([CRLF[i : i + 2] for i in range(1, len(CRLF), 2)])  # \r ends each chunk
    cuts[-1].insert(0, CRLF[:1])
    for chunks in cuts:
        assert b"".join(chunks) == CRLF
        for sync in (False, True):
            seen, error = await read(EventStream(Response(*chunks), decode, "acme"), sync)
            assert (seen, error) == ([{"n": 1, "name": "a"}, {"n": 2, "name": "b"}], None)


MALFORMED = {
    "not JSON": (b"event: c\ndata: <html>502 Bad Gateway</html>\n\n", ValueError, "<html>502"),
    "not UTF-8 in JSON": (b'data: {"text": "caf\xe9"}\n\n', UnicodeDecodeError, "caf\\xe9"),
    "nested too deep": (b"data: " + b"[" * 100_000 + b"\n\n", RecursionError, "[[[["),
    "a name not UTF-8": (b"event: caf\xe9\ndata: {}\n\n", UnicodeDecodeError, "caf\\xe9"),
    "a lone surrogate": (b'data: {"text": "\\ud800!"}\n\n', ValueError, "surrogate '\\ud800'"),
}


def test_a_surrogate_pair_is_text_and_an_escaped_backslash_is_no_surrogate() -> None:
    assert json_payload(b'{"text": "\\ud83d\\ude00 \\uD83D\\uDE00"}') == {
        "text": "\U0001f600 \U0001f600"
    }
    assert json_payload(b'{"text": "\\\\ud800"}') == {"text": "\\ud800"}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("case", MALFORMED)
async def test_a_malformed_event_is_the_providers_failure(case: str, sync: bool) -> None:
    bad, cause, quoted = MALFORMED[case]
    for chunks in ([FIRST + bad + AFTER], [FIRST, bad[:7], bad[7:], AFTER]):
        response = Response(*chunks)
        events = EventStream(response, decode, "acme")
        seen, error = await read(events, sync, close=False)
        assert seen == [{"n": 1, "name": "a"}]
        message = str(malformed(error))
        assert isinstance(malformed(error).__cause__, cause)
        assert ("name is not UTF-8" if "name" in case else "data is not readable") in message
        assert quoted in message
        assert await read(events, sync) == ([], None)  # the rest is not an event
        assert response.closed
