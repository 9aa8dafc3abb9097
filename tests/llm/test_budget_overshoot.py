"""A provider that ignores ``max_tokens`` cannot take a budget past its cap (issue #9).

The local model's ``[[fault:ignore-max-tokens]]`` plays the provider; the server's
own count of what it generated is the judge, next to what the budget charged. The
server streams five-token chunks, so "within one chunk" is a bound of five tokens
that a late disconnect cannot blur: the next chunk comes 50 ms after the last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from cancelkit import Budget, BudgetExceeded, RunCancelled
from cancelkit.llm import AnthropicModel, Message, Model, OpenAIModel
from cancelkit.llm.local import LocalModelConfig, LocalModelServer

from .conftest import anthropic_client, ended, openai_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.anyio

CHUNK = 5
MISBEHAVING = "Write on [[tokens:400]] [[fault:ignore-max-tokens]]"


@pytest.fixture(scope="module")
def chunked() -> Iterator[LocalModelServer]:
    config = LocalModelConfig(rate=100, chunk_tokens=CHUNK, first_token_latency=0.0)
    with LocalModelServer(config) as running:
        yield running


@pytest.fixture(params=["anthropic", "openai"])
async def chunked_model(
    request: pytest.FixtureRequest, chunked: LocalModelServer
) -> AsyncIterator[Model]:
    if request.param == "anthropic":
        client = anthropic_client(chunked)
        yield AnthropicModel(client, "local")
        await client.close()
    else:
        oclient = openai_client(chunked)
        yield OpenAIModel(oclient, "local")
        await oclient.close()


@pytest.mark.parametrize(
    ("cap", "max_tokens"),
    [(50, 50), (30, 30), (30, 50)],
    ids=["cap50-max50", "cap30-max30", "cap30-max50"],
)
async def test_a_provider_ignoring_max_tokens_stays_within_a_chunk_of_the_cap(
    chunked: LocalModelServer, chunked_model: Model, cap: int, max_tokens: int
) -> None:
    """Before the fix, ``cap == max_tokens`` ran to ``max_tokens * 1.2 + 16`` (77, 53)."""
    budget = Budget(output_tokens=cap)
    with pytest.raises(RunCancelled) as info:
        async with chunked_model.stream(
            [Message.user(MISBEHAVING)], max_tokens=max_tokens, budget=budget
        ) as stream:
            async for _ in stream:
                pass
    assert info.value.reason.kind == "budget"
    assert stream.max_tokens_sent == min(cap, max_tokens)
    record = await ended(chunked, stream.request_id)
    assert budget.spent["output_tokens"] <= cap + CHUNK
    assert record.tokens_generated <= cap + CHUNK


async def test_concurrent_streams_ignoring_max_tokens_share_one_cap(
    chunked: LocalModelServer, chunked_model: Model
) -> None:
    """Streams sharing a budget: none takes what the others hold.

    Six calls of 30 against a cap of 100: three get 30, one the last 10, two none.
    Each stream that outruns its reservation may hold more only if the cap has room;
    here the others hold it all, so each stops within one chunk of its own share.
    Before the fix, each ran to ``30 * 1.2 + 16`` tokens: 175 in all.
    """
    cap, calls = 100, 6
    budget = Budget(output_tokens=cap)
    request_ids: list[str | None] = []
    charged: list[int] = []
    outcomes: list[str] = []

    async def call(index: int) -> None:
        try:
            async with chunked_model.stream(
                [Message.user(f"call {index}: {MISBEHAVING}")], max_tokens=30, budget=budget
            ) as stream:
                async for _ in stream:
                    pass
        except BudgetExceeded:
            outcomes.append("refused")  # no budget left to reserve: never sent
        except RunCancelled as stopped:
            assert stream.usage is not None
            request_ids.append(stream.request_id)
            charged.append(stream.usage.output_tokens)
            outcomes.append(f"stopped: {stopped.reason.kind}")
        else:
            outcomes.append("completed")

    async with anyio.create_task_group() as group:
        for index in range(calls):
            group.start_soon(call, index)

    generated = [(await ended(chunked, rid)).tokens_generated for rid in request_ids]
    assert sorted(outcomes) == ["refused"] * 2 + ["stopped: budget"] * 4
    assert max(charged) <= 30 + CHUNK  # each within one chunk of its share
    assert budget.spent["output_tokens"] == sum(charged) <= cap + CHUNK * len(charged)
    assert sum(generated) <= cap + CHUNK * len(generated)  # the server agrees
