"""What Stop saves: tokens the provider generates after Stop, counted by the server.

Run: ``python bench/bench_llm.py`` (``--quick`` for fewer repeats).

For each protocol (Anthropic Messages, OpenAI Chat Completions) and rate (50 and
200 tokens/s), one streamed call is stopped after 10 tokens of text:

- *naive SDK loop*: ``break`` out of ``async for event in stream`` without closing
  it, then carry on (here: one more second of other work, holding the stream);
- *cancelkit*: the same loop inside ``async with model.stream(...)``.

The local model server records when it generated every token; the table shows how
many it generated after the Stop moment (1 chunk = 1 token here). Then the time from
Stop until the server has seen the disconnect, over many cancelkit stops.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import anthropic
import anyio
import openai

from _harness import Row, report
from cancelkit.llm import AnthropicModel, Message, OpenAIModel, TextDelta
from cancelkit.llm.local import LocalModelConfig, LocalModelServer, RequestRecord

STOP_AFTER = 10
WINDOW = 1.0  # seconds the naive program carries on while holding the stream


def clients(server: LocalModelServer) -> tuple[anthropic.AsyncAnthropic, openai.AsyncOpenAI]:
    return (
        anthropic.AsyncAnthropic(base_url=server.base_url, api_key="local", max_retries=0),
        openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0),
    )


def prompt(rate: int) -> str:
    return f"Write at length [[tokens:100000]] [[rate:{rate}]]"


async def naive(protocol: str, rate: int, server: LocalModelServer) -> tuple[str, float]:
    """The common SDK loop: stop consuming, do not close."""
    aclient, oclient = clients(server)
    messages: Any = [{"role": "user", "content": prompt(rate)}]
    stream: Any
    if protocol == "anthropic":
        stream = await aclient.messages.create(
            model="local", max_tokens=100_000, messages=messages, stream=True
        )
    else:
        stream = await oclient.chat.completions.create(
            model="local", messages=messages, stream=True
        )
    seen = 0
    async for event in stream:
        seen += bool(getattr(getattr(event, "delta", None), "text", None)) or bool(
            getattr(event, "choices", None) and event.choices[0].delta.content
        )
        if seen >= STOP_AFTER:
            break
    stopped_at = time.monotonic()
    request_id = (
        stream.response.headers.get("request-id") or stream.response.headers["x-request-id"]
    )
    await anyio.sleep(WINDOW)  # the program goes on; the stream object is still alive
    await stream.close()
    await aclient.close()
    await oclient.close()
    return request_id, stopped_at


async def guarded(protocol: str, rate: int, server: LocalModelServer) -> tuple[str, float]:
    """The same loop through cancelkit."""
    aclient, oclient = clients(server)
    model = (
        AnthropicModel(aclient, "local")
        if protocol == "anthropic"
        else OpenAIModel(oclient, "local")
    )
    seen = 0
    async with model.stream([Message.user(prompt(rate))], max_tokens=100_000) as stream:
        async for event in stream:
            seen += isinstance(event, TextDelta)
            if seen >= STOP_AFTER:
                stopped_at = time.monotonic()
                break
    await anyio.sleep(WINDOW)
    await aclient.close()
    await oclient.close()
    assert stream.request_id is not None
    return stream.request_id, stopped_at


async def server_record(
    server: LocalModelServer, request_id: str | None, until: str, timeout: float
) -> RequestRecord:
    """The server's record of a request once its field ``until`` is set."""
    with anyio.fail_after(timeout):
        while True:  # polling a record the server thread writes
            record = server.app.record(request_id or "")
            if record is not None and getattr(record, until) is not None:
                return record
            await anyio.sleep(0.001)


async def tokens_after_stop(server: LocalModelServer, request_id: str, stopped_at: float) -> int:
    record = await server_record(server, request_id, "ended_at", 30)
    return record.tokens_after(stopped_at)


async def disconnect_latencies(server: LocalModelServer, count: int) -> dict[str, list[float]]:
    aclient, oclient = clients(server)
    latencies: dict[str, list[float]] = {"anthropic": [], "openai": []}
    for protocol, model in (
        ("anthropic", AnthropicModel(aclient, "local")),
        ("openai", OpenAIModel(oclient, "local")),
    ):
        for _ in range(count):
            async with model.stream([Message.user(prompt(200))], max_tokens=100_000) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta) and len(stream.text) >= 4 * STOP_AFTER:
                        stopped_at = time.monotonic()
                        break
            record = await server_record(server, stream.request_id, "disconnected_at", 5)
            assert record.disconnected_at is not None
            latencies[protocol].append((record.disconnected_at - stopped_at) * 1e3)
    await aclient.close()
    await oclient.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main_async(repeats: int, latency_count: int) -> list[Row]:
    rows: list[Row] = []
    with LocalModelServer(LocalModelConfig(first_token_latency=0.0)) as server:
        for protocol in ("anthropic", "openai"):
            for rate in (50, 200):
                samples: dict[str, list[float]] = {
                    "naive SDK loop (break, no close)": [],
                    "cancelkit": [],
                }
                for _ in range(repeats):
                    for name, run in (
                        ("naive SDK loop (break, no close)", naive),
                        ("cancelkit", guarded),
                    ):
                        request_id, stopped_at = await run(protocol, rate, server)
                        samples[name].append(
                            await tokens_after_stop(server, request_id, stopped_at)
                        )
                for name, values in samples.items():
                    rows.append(
                        Row(
                            f"tokens generated after Stop, {protocol}, {rate} tok/s",
                            name,
                            "tok",
                            statistics.median(values),
                            min(values),
                            target="<= 1 chunk" if name == "cancelkit" else None,
                            samples=values,
                        )
                    )
        latencies = await disconnect_latencies(server, latency_count)
    for protocol, values in latencies.items():
        for label, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
            rows.append(
                Row(
                    f"Stop -> server sees disconnect, {protocol} ({len(values)} stops)",
                    f"cancelkit {label}",
                    "ms",
                    percentile(values, q),
                    min(values),
                    target="p99 < 5 ms" if label == "p99" else None,
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    rows = anyio.run(main_async, 2 if args.quick else 5, 50 if args.quick else 200)
    report("llm", rows)


if __name__ == "__main__":
    main()
