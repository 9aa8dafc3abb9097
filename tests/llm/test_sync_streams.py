"""Sync SDK clients: a Stop from another thread closes the stream, the provider stops.

The real ``anthropic.Anthropic`` and ``openai.OpenAI`` clients against the local model
server, which counts the tokens it generated after the client went away.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest

from cancelkit import (
    Cancelled,
    CancelReason,
    CancelToken,
    RunCancelled,
    Runs,
    guard_sync_stream,
)
from cancelkit.llm import AnthropicModel, Done, Message, Model, OpenAIModel, TextDelta, Usage

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cancelkit.llm.local import LocalModelServer, RequestRecord

USER = CancelReason("user", "Stop pressed")


@pytest.fixture(params=["anthropic", "openai"])
def model(request: pytest.FixtureRequest, server: LocalModelServer) -> Iterator[Model]:
    client: anthropic.Anthropic | openai.OpenAI
    if request.param == "anthropic":
        client = anthropic.Anthropic(base_url=server.base_url, api_key="local", max_retries=0)
        yield AnthropicModel(client, "local")
    else:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        yield OpenAIModel(client, "local")
    client.close()


def ended(server: LocalModelServer, request_id: str | None) -> RequestRecord:
    """The server's record of a request, once the server has finished with it."""
    deadline = time.monotonic() + 10  # a bound for a hang only
    while True:
        record = server.app.record(request_id or "")
        if record is not None and record.ended_at is not None:
            return record
        assert time.monotonic() < deadline, "the server never finished the request"
        time.sleep(0.005)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def test_one_event_shape_with_exact_usage(model: Model) -> None:
    with model.stream([Message.user("Explain [[tokens:10]]")], max_tokens=50) as stream:
        events = list(stream)
    assert [type(e) for e in events[-2:]] == [Usage, Done]
    assert sum(isinstance(e, TextDelta) for e in events) == 10
    assert stream.usage is not None
    assert (stream.usage.output_tokens, stream.usage.estimated) == (10, False)
    assert stream.stop_reason == "end_turn"


def test_a_stop_from_another_thread_stops_the_provider(
    model: Model, server: LocalModelServer
) -> None:
    runs = Runs()
    streams: list[Any] = []
    answers: list[bool] = []
    asked: list[float] = []

    def agent() -> str:
        with model.stream([Message.user("[[tokens:5000]] [[rate:100]]")]) as stream:
            streams.append(stream)
            for _ in stream:
                pass
        return stream.text

    def stop() -> None:
        wait_for(lambda: bool(streams) and len(streams[0].text) >= 200)  # 50 tokens in
        asked.append(time.monotonic())
        answers.append(runs.cancel("agent", USER))
        answers.append(runs.cancel("agent", USER))

    stopper = threading.Thread(target=stop)
    stopper.start()
    with pytest.raises(RunCancelled) as info:
        runs.run_sync(agent, run_id="agent")
    woke = time.monotonic() - asked[0]
    stopper.join()
    assert info.value.reason is USER
    assert answers == [True, False]  # idempotent

    record = ended(server, streams[0].request_id)
    assert record.outcome == "disconnected"
    assert record.tokens_after_disconnect <= 1  # at most the chunk under way
    after_stop = record.tokens_after(asked[0])
    receipt = runs.get("agent").outcome.receipt  # type: ignore[union-attr]
    stream_stop = next(layer for layer in receipt.layers if layer.layer == "stream")
    assert stream_stop.outcome == "closed"
    assert receipt.estimated
    assert abs(receipt.output_tokens - record.tokens_generated) <= 0.1 * record.tokens_generated
    print(
        f"{type(model).__name__}: server generated {record.tokens_generated}, "
        f"receipt {receipt.output_tokens} (estimated), {after_stop} after Stop, "
        f"{record.tokens_after_disconnect} after the disconnect; thread woke in {woke * 1e3:.1f} ms"
    )


def test_a_read_blocked_before_the_first_token_wakes_at_once(
    model: Model, server: LocalModelServer
) -> None:
    token = CancelToken()
    prompt = "[[fault:slow-first-token=30]] [[tokens:10]]"
    started = time.monotonic()
    with (
        pytest.raises(Cancelled) as info,
        model.stream([Message.user(prompt)], token=token) as stream,
    ):
        threading.Timer(0.1, token.cancel, args=(USER,)).start()
        for _ in stream:
            pass
    waited = time.monotonic() - started
    assert info.value.reason is USER
    assert waited < 10  # not the 30 s until the next bytes: the Stop woke the read
    record = ended(server, stream.request_id)
    assert (record.outcome, record.tokens_generated) == ("disconnected", 0)
    assert stream.usage is not None
    assert stream.usage.output_tokens == 0
    print(f"{type(model).__name__}: a read blocked for the first token woke in {waited:.3f}s")


def test_a_stop_before_the_stream_opens_sends_no_request(
    model: Model, server: LocalModelServer
) -> None:
    token = CancelToken()
    token.cancel(USER)
    before = server.app.stats()["requests"]
    with pytest.raises(Cancelled), model.stream([Message.user("hi")], token=token):
        pytest.fail("the block must not be entered")
    assert server.app.stats()["requests"] == before


def test_guard_sync_stream_over_the_raw_sdk_stream(server: LocalModelServer) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
    runs = Runs()
    texts: list[str] = []

    def agent() -> None:
        stream = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "[[tokens:5000]] [[rate:200]]"}],
            stream=True,
        )
        texts.append(stream.response.headers["x-request-id"])
        with guard_sync_stream(stream, name="openai") as chunks:
            for chunk in chunks:
                texts.append(chunk.choices[0].delta.content or "")

    def stop() -> None:
        wait_for(lambda: len(texts) >= 2)  # inside the guarded block, streaming
        runs.cancel("raw", USER)

    stopper = threading.Thread(target=stop)
    stopper.start()
    with pytest.raises(RunCancelled):
        runs.run_sync(agent, run_id="raw")
    stopper.join()
    client.close()
    record = ended(server, texts[0])
    assert record.outcome == "disconnected"
    assert record.tokens_after_disconnect <= 1
    layers = runs.get("raw").outcome.receipt.layers  # type: ignore[union-attr]
    assert (layers[0].layer, layers[0].name, layers[0].outcome) == ("stream", "openai", "closed")
    assert layers[0].detail == "interrupted from the cancelling thread"


def test_the_block_must_match_the_client(server: LocalModelServer) -> None:
    async_client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="local")
    before = server.app.stats()["requests"]
    with (
        pytest.raises(TypeError, match="async client"),
        AnthropicModel(async_client, "local").stream([Message.user("hi")]),
    ):
        pytest.fail("the block must not be entered")
    assert server.app.stats()["requests"] == before


def test_guard_sync_stream_input() -> None:
    with pytest.raises(TypeError, match="not iterable"):
        guard_sync_stream(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CancelToken"):
        guard_sync_stream([], token="t")  # type: ignore[arg-type]
    with guard_sync_stream([1, 2]) as items:
        assert list(items) == [1, 2]
    assert items.closed
