"""The local model server: the official SDKs parse all it sends; it stops and counts."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest

from cancelkit._lifetime import tied_to_this_process
from cancelkit.llm.local import LocalModelConfig, LocalModelServer

from .conftest import anthropic_client, ended, openai_client

pytestmark = pytest.mark.anyio

USER: Any = [{"role": "user", "content": "Tell me about Stop [[tokens:12]]"}]


async def test_anthropic_stream_has_the_real_event_sequence(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    stream = await client.messages.create(model="local", max_tokens=100, messages=USER, stream=True)
    kinds = [event.type async for event in stream]
    await client.close()
    assert kinds[:2] == ["message_start", "content_block_start"]  # the SDK drops pings
    assert kinds.count("content_block_delta") == 12
    assert kinds[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    async with httpx2.AsyncClient(base_url=server.base_url) as raw:
        body = {"model": "local", "max_tokens": 100, "stream": True, "messages": USER}
        response = await raw.post("/v1/messages", json=body)
    events = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "ping", "content_block_start"]


async def test_anthropic_helpers_accumulate_text_usage_and_tools(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    async with client.messages.stream(model="local", max_tokens=100, messages=USER) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 12
    assert len(message.content[0].text) == 48  # type: ignore[union-attr]  # 4 chars a token
    prompt = 'Weather? [[tool:get_weather {"city": "Paris"}]] [[tool:get_time {"tz": "CET"}]]'
    tools: Any = [
        {"name": "get_weather", "description": "w", "input_schema": {"type": "object"}},
        {"name": "get_time", "description": "t", "input_schema": {"type": "object"}},
    ]
    async with client.messages.stream(
        model="local", max_tokens=100, tools=tools, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        message = await stream.get_final_message()
    await client.close()
    uses = [block for block in message.content if block.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert [(u.name, u.input) for u in uses] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]


async def test_anthropic_non_streaming_and_max_tokens(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    message = await client.messages.create(
        model="local", max_tokens=5, messages=[{"role": "user", "content": "[[tokens:50]]"}]
    )
    await client.close()
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


async def test_openai_stream_with_usage_and_done(server: LocalModelServer) -> None:
    client = openai_client(server)
    stream = await client.chat.completions.create(
        model="local",
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert len(text) == 48
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


async def test_openai_tool_calls_and_non_streaming(server: LocalModelServer) -> None:
    client = openai_client(server)
    prompt = 'Look it up [[tool:lookup {"q": "cancel"}]]'
    completion = await client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": prompt}]
    )
    truncated = await client.chat.completions.create(
        model="local", max_tokens=3, messages=[{"role": "user", "content": "[[tokens:9]]"}]
    )
    await client.close()
    calls = completion.choices[0].message.tool_calls or []
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("lookup", {"q": "cancel"})
    ]
    assert truncated.choices[0].finish_reason == "length"
    assert truncated.usage is not None
    assert truncated.usage.completion_tokens == 3


async def test_text_is_deterministic(server: LocalModelServer) -> None:
    client = openai_client(server)
    texts = []
    for _ in range(2):
        reply = await client.chat.completions.create(model="local", messages=USER)
        texts.append(reply.choices[0].message.content)
    await client.close()
    assert texts[0] == texts[1]


async def test_rate_and_first_token_latency() -> None:
    with LocalModelServer(LocalModelConfig(rate=100, first_token_latency=0.15)) as slow:
        client = anthropic_client(slow)
        started = time.monotonic()
        stream = await client.messages.create(
            model="local", max_tokens=100, messages=USER, stream=True
        )
        first = None
        async for event in stream:
            if event.type == "content_block_delta" and first is None:
                first = time.monotonic() - started
        total = time.monotonic() - started
        await client.close()
    assert first is not None
    assert first >= 0.15
    assert total >= 0.15 + 11 / 100  # twelve tokens at 100/s after the first


async def test_429_with_retry_after(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    with pytest.raises(anthropic.RateLimitError) as info:
        await client.messages.create(
            model="local",
            max_tokens=10,
            messages=[{"role": "user", "content": "[[fault:429 retry-after=7]]"}],
        )
    assert info.value.response.headers["retry-after"] == "7"
    retrying = anthropic_client(server, retries=2)
    message = await retrying.messages.create(
        model="local",
        max_tokens=10,
        messages=[{"role": "user", "content": "once [[fault:429 retry-after=0.01 times=1]]"}],
    )
    await client.close()
    await retrying.close()
    assert message.stop_reason in ("end_turn", "max_tokens")  # the SDK's retry went through


async def test_overloaded(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(
            model="local", max_tokens=10, messages=[{"role": "user", "content": "[[fault:529]]"}]
        )
    oclient = openai_client(server)
    with pytest.raises(openai.InternalServerError):
        await oclient.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "[[fault:503]]"}]
        )
    await client.close()
    await oclient.close()


async def test_a_stream_cut_midway_is_an_sdk_error(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    stream = await client.messages.create(
        model="local",
        max_tokens=100,
        stream=True,
        messages=[{"role": "user", "content": "[[tokens:30]] [[fault:cut-after=5]]"}],
    )
    seen = 0
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async for event in stream:
            seen += event.type == "content_block_delta"
    await client.close()
    assert seen == 5


async def test_a_midstream_error_event(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    stream = await client.messages.create(
        model="local",
        max_tokens=100,
        stream=True,
        messages=[{"role": "user", "content": "[[tokens:30]] [[fault:error-after=4]]"}],
    )
    with pytest.raises(anthropic.APIStatusError, match="overloaded"):
        async for _ in stream:
            pass
    await client.close()


@pytest.mark.parametrize(
    ("path", "marker", "delta"),
    [
        ("/v1/messages", b"event: message_delta", b'"text_delta"'),
        ("/v1/chat/completions", b'"finish_reason":"', b'"content":"'),
    ],
)
async def test_a_reply_can_end_before_its_end(
    server: LocalModelServer, path: str, marker: bytes, delta: bytes
) -> None:
    """``end-after=N``: the body ends cleanly after N tokens (a proxy's or a crashed
    provider's cut), without the reply's end; a reply not streamed, halfway through
    its JSON."""
    content = "[[tokens:30]] [[fault:end-after=5]]"
    body = {"model": "local", "max_tokens": 100, "messages": [{"role": "user", "content": content}]}
    async with httpx2.AsyncClient(base_url=server.base_url) as client:
        streamed = await client.post(path, json={**body, "stream": True})
        whole = await client.post(path, json=body)
    assert streamed.status_code == whole.status_code == 200  # no error: a clean end
    assert streamed.content.count(delta) - streamed.content.count(b'"content":""') == 5
    for end in (marker, b"message_stop", b"[DONE]"):
        assert end not in streamed.content
    with pytest.raises(json.JSONDecodeError):
        json.loads(whole.content)
    assert server.app.stats()["faults"] >= 2


async def test_bad_requests_get_a_clear_400(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    with pytest.raises(anthropic.BadRequestError, match="unknown directive"):
        await client.messages.create(
            model="local", max_tokens=10, messages=[{"role": "user", "content": "[[nope:1]]"}]
        )
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        await client.messages.create(model="local", max_tokens=10, messages=[])
    await client.close()


async def test_generation_stops_within_one_chunk_of_a_disconnect(server: LocalModelServer) -> None:
    async with httpx2.AsyncClient(base_url=server.base_url) as client:
        body = {
            "model": "local",
            "max_tokens": 1000,
            "stream": True,
            "messages": [{"role": "user", "content": "[[tokens:1000]] [[rate:200]]"}],
        }
        async with client.stream("POST", "/v1/messages", json=body) as response:
            request_id = response.headers["request-id"]
            lines_iter: Any = response.aiter_lines()
            async with contextlib.aclosing(lines_iter) as lines:
                async for line in lines:
                    if line.startswith("data:") and "text_delta" in line:
                        break
        # leaving the block closed the response: the server must notice it
    record = await ended(server, request_id)
    assert record.outcome == "disconnected"
    assert record.disconnected_at is not None
    # The promise is at most one chunk (one token here) after the disconnect, on a
    # busy machine too; how many came before it depends on how fast the client is.
    assert record.tokens_after_disconnect <= 1
    assert record.tokens_generated < 1000


async def test_stats_endpoint(server: LocalModelServer) -> None:
    stats = await anyio.to_thread.run_sync(
        lambda: json.loads(urllib.request.urlopen(server.base_url + "/stats").read())
    )
    for key in (
        "tokens_generated",
        "tokens_after_disconnect",
        "open_streams",
        "requests",
        "disconnects",
    ):
        assert isinstance(stats[key], int), key


def test_the_model_command_serves() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "cancelkit", "model", "--port", str(port), "--rate", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=tied_to_this_process(signal.SIGTERM),  # never outlives the session
    )
    try:
        deadline = time.monotonic() + 60  # a cold Python process on a busy machine
        while True:
            try:
                reply = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        assert json.loads(reply.read())["ok"] is True
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def test_labelled_requests_and_tokens_after_a_moment(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    label = f"probe-{time.monotonic_ns()}"  # the server is shared by the module's tests
    content = f"Tell me [[tokens:20]] [[label:{label}]]"
    message = await client.messages.create(
        model="local", max_tokens=100, messages=[{"role": "user", "content": content}]
    )
    await client.close()
    assert message.usage.output_tokens == 20
    [record] = server.app.labelled(label)
    assert record.first_token_at is not None
    middle = record.token_times[9]
    async with httpx2.AsyncClient(base_url=server.base_url) as http:
        answer = await http.get("/stats/requests", params={"label": label, "after": middle})
        [summary] = answer.json()["requests"]
        assert summary["id"] == record.id
        assert summary["label"] == label
        assert summary["tokens_after"] == record.tokens_after(middle)
        assert summary["tokens_after"] == sum(t > middle for t in record.token_times)
        assert (await http.get("/stats/requests", params={"label": "nobody"})).json() == {
            "requests": []
        }
        assert (await http.get("/stats/requests")).status_code == 400
        bad = await http.get("/stats/requests", params={"label": label, "after": "nan"})
        assert bad.status_code == 400


def test_token_times_are_bounded_and_tokens_after_stays_exact_at_the_end() -> None:
    from cancelkit.llm.local._records import TOKEN_TIMES_KEPT, RequestRecord  # noqa: PLC0415

    record = RequestRecord("r", "anthropic", True, 0.0)
    total = 5 * TOKEN_TIMES_KEPT + 7
    for index in range(total):
        record.add_tokens(float(index), 1)
    assert len(record.token_times) <= 2 * TOKEN_TIMES_KEPT
    assert record.folded_tokens + len(record.token_times) == total
    assert record.tokens_after(total - 11.5) == 11  # exact near the end
    assert record.tokens_after(-1.0) == total  # folded tokens all count as after


def _unclosed_sockets(seen: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in seen if "unclosed <socket.socket" in str(w.message)]


def test_a_port_in_use_is_a_clear_error_that_leaves_no_socket() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        gc.collect()  # what earlier tests left is not counted here
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(OSError, match="in use") as failure, LocalModelServer(port=port):
                pytest.fail("a server on a port in use started")
            gc.collect()
        assert failure.value.errno == errno.EADDRINUSE
        assert not _unclosed_sockets(seen)


def _listening_on(port: int) -> bool:
    """Whether something still listens on ``port`` (a listener's port cannot be bound)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_start_that_fails_half_way_leaves_nothing_and_can_be_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cancelkit.llm.local import _server  # noqa: PLC0415

    good = _server._config

    def broken(app: Any, log_level: str) -> Any:
        config = good(app, log_level)
        config.http = "no-such-protocol"  # uvicorn fails to load it, in the server's thread
        return config

    monkeypatch.setattr(_server, "_config", broken)
    server = LocalModelServer()
    before = set(threading.enumerate())  # (a module's server may be running)
    with pytest.raises(RuntimeError, match="did not start"), server:
        pytest.fail("a server that did not start was entered")
    assert not set(threading.enumerate()) - before
    assert not _listening_on(int(server.base_url.rsplit(":", 1)[1]))  # its socket closed
    monkeypatch.setattr(_server, "_config", good)
    # It begins again, rather than taking the failed start for a server.
    url = f"{server.base_url}/stats"
    with server, urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200


def test_starting_a_started_server_keeps_it_serving() -> None:
    with LocalModelServer() as server:
        url = server.base_url
        server.start()  # serving already: nothing to do
        assert server.base_url == url
        with urllib.request.urlopen(f"{url}/stats", timeout=10) as reply:
            assert reply.status == 200
