"""Adapters: one event shape from both SDKs; Stop closes the HTTP response, promptly."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio
import httpcore2
import pytest

from cancelkit import CancelReason, CancelToken, RunCancelled, Runs
from cancelkit.llm import Done, Message, Model, TextDelta, Tool, ToolCall, ToolResult, Usage

if TYPE_CHECKING:
    from cancelkit.llm.local import LocalModelServer

from ..helpers import wait_until
from .conftest import ended

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "Stop pressed")
WEATHER = Tool(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}},
)


async def disconnected(server: LocalModelServer, request_id: str | None) -> int:
    """Wait until the server saw the client go; tokens it generated after that."""
    record = await ended(server, request_id)
    assert record.outcome == "disconnected", record.outcome
    return record.tokens_after_disconnect


async def test_one_event_shape_with_exact_usage(model: Model) -> None:
    async with model.stream([Message.user("Explain [[tokens:10]]")], max_tokens=50) as stream:
        events = [event async for event in stream]
    assert [type(e) for e in events[-2:]] == [Usage, Done]
    assert sum(isinstance(e, TextDelta) for e in events) == 10
    assert stream.usage == Usage(input_tokens=stream.usage.input_tokens, output_tokens=10)  # type: ignore[union-attr]
    assert stream.usage is not None
    assert not stream.usage.estimated
    assert stream.stop_reason == "end_turn"
    assert len(stream.text) == 40


async def test_tool_calls_round_trip(model: Model) -> None:
    prompt = 'Paris? [[tool:get_weather {"city": "Paris"}]]'
    conversation = [Message.user(prompt)]
    async with model.stream(conversation, tools=[WEATHER]) as stream:
        events = [event async for event in stream]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert stream.stop_reason == "tool_use"
    conversation += [
        Message("assistant", stream.text, tool_calls=tuple(calls)),
        Message("user", tool_results=(ToolResult(calls[0].id, "sunny, 21C"),)),
    ]
    async with model.stream(conversation, tools=[WEATHER]) as answer:
        async for _ in answer:
            pass
    assert "get_weather returned sunny, 21C" in answer.text
    assert answer.stop_reason == "end_turn"


async def test_max_tokens_is_reported(model: Model) -> None:
    async with model.stream([Message.user("[[tokens:40]]")], max_tokens=7) as stream:
        async for _ in stream:
            pass
    assert stream.stop_reason == "max_tokens"
    assert stream.usage is not None
    assert stream.usage.output_tokens == 7


async def test_breaking_out_closes_the_response(model: Model, server: LocalModelServer) -> None:
    async with model.stream([Message.user("[[tokens:2000]]")]) as stream:
        async for event in stream:
            if isinstance(event, TextDelta) and len(stream.text) >= 20:
                break
    assert await disconnected(server, stream.request_id) == 0
    assert stream.stop_reason == "cancelled"
    assert stream.usage is not None
    assert stream.usage.estimated  # the provider never sent its count: we did not lose it
    assert stream.usage.output_tokens == 5  # 20 characters, exactly 5 local tokens


async def test_cancelling_the_task_closes_the_response(
    model: Model, server: LocalModelServer
) -> None:
    with anyio.CancelScope() as scope:
        async with model.stream([Message.user("[[tokens:5000]] [[rate:200]]")]) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    scope.cancel()  # the task is cancelled mid-stream, at its next await
    assert scope.cancelled_caught
    assert await disconnected(server, stream.request_id) == 0
    assert stream.usage is not None
    assert stream.usage.output_tokens > 0


async def test_a_token_fired_from_another_thread_stops_the_stream(
    model: Model, server: LocalModelServer
) -> None:
    token = CancelToken()
    with pytest.raises(RunCancelled) as info:
        async with model.stream(
            [Message.user("[[tokens:5000]] [[rate:200]]")], token=token
        ) as stream:
            threading.Timer(0.05, token.cancel, args=(USER,)).start()
            async for _ in stream:
                pass
    assert info.value.reason is USER
    assert await disconnected(server, stream.request_id) == 0


async def test_the_server_sees_the_stop_before_the_stream_is_read_again(
    model: Model, server: LocalModelServer
) -> None:
    """The token shuts the connection down when it fires: the provider stops
    generating even while the iterating task is busy elsewhere (the close is still
    the iterating task's, when it leaves the block)."""
    token = CancelToken()
    async with model.stream([Message.user("[[tokens:5000]] [[rate:200]]")], token=token) as stream:
        await stream.__anext__()
        token.cancel(USER)
        await disconnected(server, stream.request_id)  # the block is still open
        with pytest.raises(RunCancelled):
            await stream.__anext__()


async def test_stopping_the_run_stops_its_stream(model: Model, server: LocalModelServer) -> None:
    streams = []

    async def agent() -> str:
        async with model.stream([Message.user("[[tokens:5000]] [[rate:200]]")]) as stream:
            streams.append(stream)
            async for _ in stream:
                pass
        return stream.text

    runs = Runs()
    run = runs.start(agent)
    await wait_until(lambda: bool(streams))  # the stream is open (an HTTP round trip)
    assert runs.cancel(run.id, USER)
    outcome = await run.wait()
    assert (outcome.status, outcome.reason) == ("cancelled", USER)
    assert await disconnected(server, streams[0].request_id) <= 1  # at most one chunk


async def test_an_already_cancelled_token_makes_no_request(
    model: Model, server: LocalModelServer
) -> None:
    token = CancelToken()
    token.cancel(USER)
    before = server.app.stats()["requests"]
    with pytest.raises(RunCancelled):
        async with model.stream([Message.user("hi")], token=token):
            pass
    assert server.app.stats()["requests"] == before


async def test_bad_max_tokens_is_refused_before_any_request(model: Model) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        model.stream([Message.user("hi")], max_tokens=0)


async def test_completed_calls_share_one_connection(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply read to its end gives its connection back to the client's pool: the
    next call reuses it instead of opening another."""
    opened: list[object] = []
    original = httpcore2.AsyncHTTPConnection.__init__

    def counting(self: httpcore2.AsyncHTTPConnection, *args: Any, **kwargs: Any) -> None:
        opened.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(httpcore2.AsyncHTTPConnection, "__init__", counting)
    for _ in range(3):
        async with model.stream([Message.user("hi [[tokens:5]]")]) as events:
            kinds = [type(event) async for event in events]
        assert kinds[-1] is Done
    assert len(opened) == 1
