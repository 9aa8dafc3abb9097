"""Budgets against real streams: the server's own counters are the judge."""

from __future__ import annotations

import pytest

from cancelkit import Budget, BudgetExceeded, CancelReason, RunCancelled, Runs
from cancelkit.llm import AnthropicModel, Message, Model, ModelRateLimited, OpenAIModel
from cancelkit.llm.local import LocalModelConfig, LocalModelServer

from .conftest import anthropic_client, ended, openai_client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
async def test_fifty_concurrent_streams_never_exceed_the_output_cap(protocol: str) -> None:
    with LocalModelServer(LocalModelConfig(rate=2000, first_token_latency=0)) as server:
        client = anthropic_client(server) if protocol == "anthropic" else openai_client(server)
        model: Model = (
            AnthropicModel(client, "local")  # type: ignore[arg-type]
            if protocol == "anthropic"
            else OpenAIModel(client, "local")  # type: ignore[arg-type]
        )
        budget = Budget(output_tokens=2000)
        runs = Runs()
        generated: list[int] = []

        async def call(index: int) -> int:
            async with model.stream(
                [Message.user(f"call {index} [[tokens:{50 + index * 5}]]")],
                max_tokens=150,
                budget=budget,
            ) as stream:
                async for _ in stream:
                    pass
            assert stream.usage is not None
            generated.append(stream.usage.output_tokens)
            return stream.usage.output_tokens

        started = [runs.start(call, index) for index in range(50)]
        outcomes = [await run.wait() for run in started]
        await client.close()
        stats = server.app.stats()

    assert stats["tokens_generated"] <= 2000
    assert budget.spent["output_tokens"] == stats["tokens_generated"]
    stopped = [o for o in outcomes if o.status == "cancelled"]
    assert stopped, "the cap must have stopped some of the fifty"
    assert all(o.reason is not None and o.reason.kind == "budget" for o in stopped)
    assert all(o.status in ("completed", "cancelled") for o in outcomes)
    # Without the budget the same fifty calls generate far more than the cap.
    assert sum(min(150, 50 + i * 5) for i in range(50)) > 2000


async def test_the_last_reservation_stops_its_stream_at_the_cap(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    model = AnthropicModel(client, "local")
    budget = Budget(output_tokens=30)
    runs = Runs()

    async def agent() -> None:
        async with model.stream(
            [Message.user("[[tokens:500]]")], max_tokens=100, budget=budget
        ) as stream:
            async for _ in stream:
                pass

    run = runs.start(agent)
    outcome = await run.wait()
    await client.close()
    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert outcome.reason.kind == "budget"
    assert budget.spent["output_tokens"] <= 30


async def test_a_provider_ignoring_max_tokens_is_cut_off(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    model = AnthropicModel(client, "local")
    budget = Budget(output_tokens=10_000)
    with pytest.raises(RunCancelled) as info:
        async with model.stream(
            [Message.user("[[tokens:3000]] [[fault:ignore-max-tokens]]")],
            max_tokens=50,
            budget=budget,
        ) as stream:
            async for _ in stream:
                pass
    await client.close()
    assert info.value.reason.kind == "budget"
    assert stream.usage is not None
    assert stream.usage.output_tokens <= 50 * 1.2 + 17
    record = await ended(server, stream.request_id)
    # The server stopped at the disconnect (how many tokens it made before it saw the
    # client go depends on the machine's load, 400 tokens/s here; the contract is the
    # client's cut above and the server stopping when the connection closed).
    assert record.disconnected_at is not None
    assert record.tokens_after(record.disconnected_at) <= 1
    assert record.tokens_generated < 3000


async def test_a_failed_call_gives_its_reservation_back(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    model = AnthropicModel(client, "local")
    budget = Budget(output_tokens=100)
    with pytest.raises(ModelRateLimited):
        async with model.stream([Message.user("[[fault:429]]")], max_tokens=100, budget=budget):
            pass
    await client.close()
    assert budget.remaining()["output_tokens"] == 100


async def test_an_exhausted_budget_cancels_before_calling(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    model = AnthropicModel(client, "local")
    budget = Budget(requests=0)
    before = server.app.stats()["requests"]
    runs = Runs()

    async def agent() -> None:
        async with model.stream([Message.user("hi")], budget=budget):
            pass

    run = runs.start(agent)
    outcome = await run.wait()
    await client.close()
    assert outcome.status == "cancelled"
    assert outcome.reason == CancelReason("budget", "the requests cap of 0 is reached")
    assert server.app.stats()["requests"] == before
    assert issubclass(BudgetExceeded, RunCancelled)
