"""A reply's outcome is what happened: cut short, it failed; stopped, it was cancelled.

A provider, or a proxy before it, can end a reply's HTTP body cleanly before the
reply's end: no stop reason, no ``finish_reason``, no event at all. Nobody cancelled
it, so it is :class:`~cancelkit.llm.ModelServerError`, the run fails with it and the
receipt says ``failed``: never a quiet end that reads like a Stop. An event of the
wrong shape (a key missing, a value of the wrong type, tool arguments that are not a
JSON object) is that error too, with the translator's own as its cause. A real Stop
still reports ``cancelled``. The real adapters and SDK clients, over real HTTP, against
the hostile provider of :mod:`.test_sse_provider`.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from cancelkit import CancelReason, CancelToken, RunCancelled, Runs
from cancelkit.llm import (
    Done,
    Message,
    Model,
    ModelServerError,
    ModelStream,
    TextDelta,
    ToolCall,
    Usage,
)

from .hostile import ANTHROPIC_FIRST, OPENAI_FIRST, HostileProvider, connect

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from cancelkit import LayerStop, RunOutcome

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "Stop pressed")
FIRST = {"anthropic": ANTHROPIC_FIRST, "openai": OPENAI_FIRST}


def event(name: str | None, data: object) -> bytes:
    """One Server-Sent Event (Anthropic's are named, OpenAI's are not)."""
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def chunk(choices: list[Any], **extra: Any) -> bytes:
    """A Chat Completions chunk."""
    fields = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "local"}
    return event(None, {**fields, "choices": choices, **extra})


def delta(body: dict[str, Any]) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": 0, **body})


BLOCK_STOP = event("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_DELTA = event(
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
)
FINISH = chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
USAGE = chunk([], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
TOOL_START = event(
    "content_block_start",
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "t1", "name": "search", "input": {}},
    },
)


def tool_args(partial: str) -> bytes:
    arguments = {"type": "input_json_delta", "partial_json": partial}
    return event(
        "content_block_delta", {"type": "content_block_delta", "index": 1, "delta": arguments}
    )


TOOL_STOP = event("content_block_stop", {"type": "content_block_stop", "index": 1})


def openai_tool(call: dict[str, Any]) -> bytes:
    return chunk([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}])


HELLO = [TextDelta("Hello")]
# Bodies that end cleanly before the reply does: (protocol, case) -> what follows the
# headers, and the events the caller has by then (no Usage, no Done).
CUT: dict[tuple[str, str], tuple[list[bytes], list[Any]]] = {
    ("anthropic", "after the first words"): ([ANTHROPIC_FIRST], HELLO),
    ("openai", "after the first words"): ([OPENAI_FIRST], HELLO),
    ("anthropic", "blank lines only"): ([b"\n\n\r\n", b"\n"], []),
    ("openai", "blank lines only"): ([b"\n\n\r\n", b"\n"], []),
    ("openai", "[DONE] without a finish_reason"): ([OPENAI_FIRST, b"data: [DONE]\n\n"], HELLO),
    ("anthropic", "after a tool call"): (
        [ANTHROPIC_FIRST, BLOCK_STOP, TOOL_START, tool_args('{"q": 1}'), TOOL_STOP],
        [*HELLO, ToolCall("t1", "search", {"q": 1})],
    ),
}
MISSING = {
    "anthropic": "a stop_reason (message_delta) or a message_stop",
    "openai": "a finish_reason",
}

# Events of the wrong shape after the first words: what the error names and quotes,
# and the translator's exception (the cause).
UNREADABLE: dict[tuple[str, str], tuple[list[bytes], type[Exception], list[str]]] = {
    ("anthropic", "a delta without its delta"): (
        [event("content_block_delta", {"type": "content_block_delta", "index": 0})],
        KeyError,
        ["(KeyError: 'delta'); the event: {'type': 'content_block_delta', 'index': 0}"],
    ),
    ("anthropic", "text that is not a string"): (
        [delta({"delta": {"type": "text_delta", "text": ["word"] * 300}})],
        TypeError,
        ["(TypeError: a text_delta's text is not a string: ['word', ", " characters)"],
    ),
    ("anthropic", "tool arguments that are not JSON"): (
        [BLOCK_STOP, TOOL_START, tool_args('{"query": '), tool_args("nope"), BLOCK_STOP],
        json.JSONDecodeError,
        ["(JSONDecodeError: Expecting value", """the JSON: '{"query": nope'"""],
    ),
    ("anthropic", "a token count that is not a number"): (
        [MESSAGE_DELTA.replace(b'"output_tokens": 2', b'"output_tokens": "2"')],
        TypeError,
        ["(TypeError: a token count is not an int >= 0: '2')"],
    ),
    ("openai", "a tool call without its index"): (
        [openai_tool({"id": "t1", "function": {"name": "search", "arguments": ""}})],
        KeyError,
        ["(KeyError: 'index'); the event: {'id': 'c1', "],
    ),
    ("openai", "tool arguments that are not an object"): (
        [
            openai_tool({"index": 0, "id": "t1", "function": {"name": "f", "arguments": "[1, 2]"}}),
            FINISH,
        ],
        TypeError,
        ["(TypeError: the arguments of tool call 'f' are not a JSON object: '[1, 2]')"],
    ),
    ("openai", "a choice that is not an object"): (
        [chunk(["Hello"])],
        AttributeError,
        ["(AttributeError: 'str' object has no attribute 'get'); the event: "],
    ),
    ("openai", "a token count that is not a number"): (
        [chunk([], usage={"prompt_tokens": "3", "completion_tokens": 2})],
        TypeError,
        ["(TypeError: a token count is not an int >= 0: '3')"],
    ),
}


def pings() -> Iterator[bytes]:
    """Keep-alive comments, until the client goes (10 s at most)."""
    for _ in range(1000):
        time.sleep(0.01)
        yield b": ping\n\n"


def serve(pieces: list[bytes], then: Callable[[], Iterator[bytes]] | None = None) -> Any:
    def body() -> Iterator[bytes]:
        yield from pieces
        if then is not None:
            yield from then()

    return body


def cases(table: dict[tuple[str, str], Any], *, first: bool = False, then: Any = None) -> list[Any]:
    """The hostile provider's parameters for each case of ``table``: its pieces, after
    the first words if ``first``, then ``then()``."""
    params = []
    for protocol, case in table:
        pieces = [FIRST[protocol]] if first else []
        body = serve([*pieces, *table[protocol, case][0]], then)
        params.append(pytest.param((case, protocol, body), id=f"{protocol}-{case}"))
    return params


async def call(model: Model, streams: list[ModelStream], seen: list[Any]) -> None:
    async with model.stream([Message.user("hi")], max_tokens=50) as stream:
        streams.append(stream)
        async for item in stream:
            seen.append(item)


async def call_in_a_run(
    provider: HostileProvider, ended: str, *, keepalive: bool = True
) -> tuple[RunOutcome[Any], ModelStream, list[Any]]:
    """One streamed call, in a run, over the protocol's real adapter: its outcome, its
    stream and what it yielded; the provider saw its connection end as ``ended``."""
    model, client = connect(provider, keepalive=keepalive)
    streams: list[ModelStream] = []
    seen: list[Any] = []
    try:
        outcome = await Runs().start(call, model, streams, seen).wait()
        assert provider.wait_ended() == ended
    finally:
        await client.close()
    return outcome, streams[0], seen


def call_sync(model: Model, streams: list[ModelStream], seen: list[Any]) -> None:
    with model.stream([Message.user("hi")], max_tokens=50) as stream:
        streams.append(stream)
        seen.extend(stream)


def stream_layer(outcome: RunOutcome[Any]) -> LayerStop:
    (layer,) = [layer for layer in outcome.receipt.layers if layer.layer == "stream"]
    return layer


def check_failed(
    outcome: RunOutcome[Any], stream: ModelStream, protocol: str, text: str
) -> ModelServerError:
    """The run failed with the provider's error; the stream kept what came before it."""
    error = outcome.error
    assert type(error) is ModelServerError
    assert (error.provider, error.status, error.request_id) == (protocol, None, "req_hostile")
    assert outcome.status == "failed"
    assert outcome.reason == CancelReason("error", f"ModelServerError: {error}")
    assert (stream.text, stream.stop_reason) == (text, "error")  # not "cancelled"
    assert stream.usage is not None
    assert stream.usage.estimated
    layer = stream_layer(outcome)
    assert (layer.name, layer.outcome, layer.estimated) == ("local", "failed", True)
    assert layer.detail == f"ModelServerError: {error}"
    return error


@pytest.mark.parametrize("provider", cases(CUT), indirect=True)
async def test_a_reply_cut_short_is_a_server_error_not_a_stop(provider: HostileProvider) -> None:
    protocol = provider.protocol
    _, events = CUT[protocol, provider.case]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = " and 1 tool call" if any(isinstance(e, ToolCall) for e in events) else ""
    tasks = len(anyio.get_running_tasks())
    # Read to its end and closed by the block: the connection is gone, at once.
    outcome, stream, seen = await call_in_a_run(
        provider, "client closed after the reply", keepalive=False
    )
    error = check_failed(outcome, stream, protocol, text)
    assert str(error) == (
        f"{protocol}: the reply ended before its end: the response ended without "
        f"{MISSING[protocol]}, after {len(text)} characters of text{calls}; it is "
        "incomplete (cut short by the provider or a proxy)"
    )
    assert error.__cause__ is None
    assert seen == events
    assert stream.tool_calls == [e for e in events if isinstance(e, ToolCall)]
    assert len(anyio.get_running_tasks()) == tasks


@pytest.mark.parametrize("provider", cases(CUT), indirect=True)
def test_a_sync_client_sees_a_reply_cut_short_the_same(provider: HostileProvider) -> None:
    protocol = provider.protocol
    _, events = CUT[protocol, provider.case]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    model, client = connect(provider, sync=True, keepalive=False)
    runs = Runs()
    streams: list[ModelStream] = []
    seen: list[Any] = []
    try:
        with pytest.raises(ModelServerError, match="the reply ended before its end"):
            runs.run_sync(call_sync, model, streams, seen, run_id="cut")
        assert provider.wait_ended(timeout=3) == "client closed after the reply"
    finally:
        client.close()
    outcome = runs.get("cut").outcome  # type: ignore[union-attr]
    assert outcome is not None
    check_failed(outcome, streams[0], protocol, text)
    assert seen == events


@pytest.mark.parametrize(
    "provider",
    cases(
        {
            ("anthropic", "no message_stop"): ([ANTHROPIC_FIRST, BLOCK_STOP, MESSAGE_DELTA], ""),
            ("openai", "no [DONE]"): ([OPENAI_FIRST, FINISH, USAGE], ""),
        }
    ),
    indirect=True,
)
async def test_a_reply_that_said_why_it_stopped_is_complete(provider: HostileProvider) -> None:
    """The reason, and the count, came: only the envelope's last event is missing."""
    outcome, stream, seen = await call_in_a_run(
        provider, "client closed after the reply", keepalive=False
    )
    assert outcome.status == "completed"
    assert seen == [TextDelta("Hello"), Usage(3, 2), Done("end_turn")]
    assert (stream.stop_reason, stream.usage) == ("end_turn", Usage(3, 2))
    assert stream_layer(outcome).outcome == "finished"


@pytest.mark.parametrize("provider", cases(UNREADABLE, first=True, then=pings), indirect=True)
async def test_an_event_of_the_wrong_shape_is_a_server_error(provider: HostileProvider) -> None:
    protocol = provider.protocol
    _, cause, quoted = UNREADABLE[protocol, provider.case]
    tasks = len(anyio.get_running_tasks())
    # Dropped by the block, the rest not read: the provider's pings find it gone.
    outcome, stream, seen = await call_in_a_run(provider, "client went while sending")
    error = check_failed(outcome, stream, protocol, "Hello")
    message = str(error)
    assert message.startswith(f"{protocol}: the provider sent an event that cannot be read (")
    for part in quoted:
        assert part in message
    assert len(message) < 400  # a sample, not the whole event
    assert type(error.__cause__) is cause
    assert seen == [TextDelta("Hello")]
    assert len(anyio.get_running_tasks()) == tasks


@pytest.mark.parametrize(
    "provider",
    [p for p in cases(UNREADABLE, first=True, then=pings) if "tool" in str(p.id)],
    indirect=True,
)
def test_a_sync_client_sees_an_event_of_the_wrong_shape_the_same(
    provider: HostileProvider,
) -> None:
    protocol = provider.protocol
    _, cause, quoted = UNREADABLE[protocol, provider.case]
    model, client = connect(provider, sync=True)
    streams: list[ModelStream] = []
    seen: list[Any] = []
    try:
        with pytest.raises(ModelServerError) as info:
            call_sync(model, streams, seen)
        assert provider.wait_ended() == "client went while sending"
    finally:
        client.close()
    assert quoted[0] in str(info.value)
    assert type(info.value.__cause__) is cause
    assert (streams[0].text, streams[0].stop_reason) == ("Hello", "error")
    assert seen == [TextDelta("Hello")]


STALLS: dict[tuple[str, str], Any] = {
    ("anthropic", "stalls"): ([], ""),
    ("openai", "stalls"): ([], ""),
}
"""The first words, then nothing but keep-alive comments."""


def check_cancelled(outcome: RunOutcome[Any], stream: ModelStream) -> None:
    assert (outcome.status, outcome.reason, outcome.error) == ("cancelled", USER, None)
    assert (stream.text, stream.stop_reason) == ("Hello", "cancelled")
    assert stream.usage is not None
    assert stream.usage.estimated
    layer = stream_layer(outcome)
    assert (layer.outcome, layer.detail) == ("closed", "stop reason cancelled")


@pytest.mark.parametrize("provider", cases(STALLS, first=True, then=pings), indirect=True)
async def test_a_stop_is_still_cancelled(provider: HostileProvider) -> None:
    model, client = connect(provider)
    streams: list[ModelStream] = []
    first_words = anyio.Event()

    async def read() -> None:
        async with model.stream([Message.user("hi")], max_tokens=50) as stream:
            streams.append(stream)
            async for _ in stream:
                first_words.set()

    try:
        run = Runs().start(read)
        with anyio.fail_after(10):
            await first_words.wait()  # then the reply waits on the provider
        assert run.cancel(USER)
        outcome = await run.wait()
        assert provider.wait_ended() == "client went while sending"
    finally:
        await client.close()
    check_cancelled(outcome, streams[0])


@pytest.mark.parametrize(
    "provider", cases({key: cut for key, cut in CUT.items() if cut[1]}), indirect=True
)
async def test_a_stop_before_the_cut_is_still_cancelled(provider: HostileProvider) -> None:
    """Stopped as its first words came, before its body ended: the Stop came first."""
    model, client = connect(provider)
    token = CancelToken()
    streams: list[ModelStream] = []
    try:
        with pytest.raises(RunCancelled) as info:
            async with model.stream([Message.user("hi")], token=token) as stream:
                streams.append(stream)
                async for _ in stream:
                    token.cancel(USER)
    finally:
        await client.close()
    assert info.value.reason == USER
    assert (streams[0].text, streams[0].stop_reason) == ("Hello", "cancelled")


@pytest.mark.parametrize("provider", cases(STALLS, first=True, then=pings), indirect=True)
def test_a_stop_of_a_sync_stream_is_still_cancelled(provider: HostileProvider) -> None:
    model, client = connect(provider, sync=True)
    runs = Runs()
    streams: list[ModelStream] = []
    seen: list[Any] = []

    def stop_after_the_first_words() -> None:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.005)
        runs.cancel("stalled", USER)

    def read() -> None:
        with model.stream([Message.user("hi")], max_tokens=50) as stream:
            streams.append(stream)
            for item in stream:
                seen.append(item)

    stopper = threading.Thread(target=stop_after_the_first_words)
    stopper.start()
    try:
        with pytest.raises(RunCancelled) as info:
            runs.run_sync(read, run_id="stalled")
        assert provider.wait_ended() == "client went while sending"
    finally:
        stopper.join()
        client.close()
    assert info.value.reason == USER
    outcome = runs.get("stalled").outcome  # type: ignore[union-attr]
    assert outcome is not None
    check_cancelled(outcome, streams[0])
