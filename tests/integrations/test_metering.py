"""``metered_http_client``: the usage of an OpenAI stream cut off by a Stop is kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai
import pytest

from cancelkit import CancelReason, Runs
from cancelkit.integrations import metered_http_client

from ..helpers import wait_until
from ..llm.conftest import ended, server

if TYPE_CHECKING:
    from cancelkit.llm.local import LocalModelServer

__all__ = ("server",)

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


def client(server: LocalModelServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.base_url + "/v1",
        api_key="local",
        max_retries=0,
        http_client=metered_http_client(),
    )


async def chat(
    oa: openai.AsyncOpenAI, prompt: str, seen: list[str], ids: list[str], usage: bool
) -> None:
    stream = await oa.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True} if usage else None,
    )
    ids.append(stream.response.headers["x-request-id"])
    async with stream:
        async for chunk in stream:
            for choice in chunk.choices:
                seen.append(choice.delta.content or "")


def stream_layer(outcome: Any) -> Any:
    (layer,) = [layer for layer in outcome.receipt.layers if layer.layer == "stream"]
    return layer


async def test_a_cut_off_stream_keeps_its_usage_estimated_within_ten_percent(
    server: LocalModelServer,
) -> None:
    oa = client(server)
    seen: list[str] = []
    ids: list[str] = []
    run = Runs().start(chat, oa, "[[tokens:400]] [[rate:100]] go", seen, ids, True)
    await wait_until(lambda: len(seen) >= 40)
    run.cancel(CancelReason("user", "Stop pressed"))
    outcome = await run.wait()
    record = await ended(server, ids[0])
    layer = stream_layer(outcome)
    assert (layer.outcome, layer.estimated) == ("closed", True)
    assert record.tokens_generated < 400  # the Stop reached the server
    assert abs(layer.output_tokens - record.tokens_generated) <= 0.1 * record.tokens_generated
    assert outcome.receipt.output_tokens == layer.output_tokens
    await oa.close()


@pytest.mark.parametrize("usage", [True, False], ids=["usage-asked", "usage-not-asked"])
async def test_a_whole_stream_reports_the_providers_count_when_it_gives_one(
    server: LocalModelServer, usage: bool
) -> None:
    oa = client(server)
    seen: list[str] = []
    ids: list[str] = []
    outcome = await Runs().start(chat, oa, "[[tokens:30]] hello", seen, ids, usage).wait()
    assert outcome.status == "completed"
    layer = stream_layer(outcome)
    assert (layer.outcome, layer.output_tokens, layer.estimated) == ("finished", 30, not usage)
    await oa.close()


async def test_other_requests_pass_through_untouched_and_outside_a_run_nothing_breaks(
    server: LocalModelServer,
) -> None:
    oa = client(server)
    reply = await oa.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "[[tokens:5]] hi"}]
    )
    assert reply.choices[0].message.content
    seen: list[str] = []
    await chat(oa, "[[tokens:5]] hi", seen, [], False)  # no run: metered, reported nowhere
    assert "".join(seen)
    await oa.close()
