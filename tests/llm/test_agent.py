"""The agent: tools of every kind, and one Stop that reaches all of them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from cancelkit import Budget, Cancelled, CancelReason, current_token, thread_stats
from cancelkit.agent import Agent, AgentResult, ToolFinished, tool
from cancelkit.llm import (
    AnthropicModel,
    Model,
    ModelServerError,
    OpenAIModel,
    TextDelta,
    estimate_tokens,
)
from cancelkit.stores import SQLiteStore

from ..helpers import wait_until
from .conftest import anthropic_client, openai_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from cancelkit.llm.local import LocalModelServer

pytestmark = pytest.mark.anyio

STOP = CancelReason("user", "Stop pressed")
log: list[str] = []


@tool
async def lookup(query: str) -> str:
    """Look something up (async)."""
    try:
        await anyio.sleep(0.05 if query != "slow" else 30)
    except anyio.get_cancelled_exc_class():
        log.append("lookup cancelled")
        raise
    return f"found {query}"


@tool
def crunch(n: int) -> str:
    """Crunch numbers in a worker thread."""
    token = current_token()
    try:
        for _ in range(n):
            token.check()
            time.sleep(0.005)
    except Cancelled as stop:
        log.append(f"crunch stopped: {stop.reason.kind}")
        raise
    return f"crunched {n}"


@tool
def broken() -> str:
    """A tool that fails."""
    raise ValueError("disk full")


@pytest.fixture
async def agent(server: LocalModelServer) -> AsyncIterator[Agent]:
    client = anthropic_client(server)
    model: Model = AnthropicModel(client, "local")
    sub = Agent(model, tools=[lookup])
    yield Agent(model, tools=[lookup, crunch, broken, sub.as_tool("helper", "Ask a helper")])
    await client.close()


async def test_parallel_async_and_sync_tools_then_an_answer(agent: Agent) -> None:
    prompt = '[[tool:lookup {"query": "scopes"}]] [[tool:crunch {"n": 5}]]'
    result = await agent.run(prompt)
    assert result.status == "completed"
    assert result.turns == 2
    assert [c.name for c in result.tool_calls] == ["lookup", "crunch"]
    assert "lookup returned found scopes" in result.text
    assert "crunch returned crunched 5" in result.text
    assert result.usage.output_tokens > 0
    assert not result.usage.estimated


async def test_a_failing_tool_is_reported_to_the_model(agent: Agent) -> None:
    result = await agent.run("[[tool:broken {}]]")
    assert result.status == "completed"
    assert "broken returned ValueError: disk full" in result.text


async def test_a_sub_agent_runs_as_a_child_run(agent: Agent) -> None:
    result = await agent.run('[[tool:helper {"task": "what about cancel scopes?"}]]')
    assert result.status == "completed"
    assert "helper returned" in result.text


async def test_max_turns_bounds_the_loop(server: LocalModelServer) -> None:
    client = anthropic_client(server)
    looping = Agent(AnthropicModel(client, "local"), tools=[lookup], max_turns=1)
    result = await looping.run('[[tool:lookup {"query": "a"}]]')
    await client.close()
    assert result.turns == 1
    assert result.status == "completed"


async def test_one_stop_cancels_stream_tools_threads_and_sub_agents(agent: Agent) -> None:
    log.clear()
    helper = Agent(agent.model, tools=[lookup])

    @tool
    async def delegate(topic: str) -> str:
        """Hand a topic to a helper agent (a child run)."""
        result = await helper.run(f'{topic} [[tool:lookup {{"query": "slow"}}]]')
        return result.text

    boss = Agent(agent.model, tools=[lookup, crunch, delegate], runs=agent.runs)
    prompt = (
        '[[tool:lookup {"query": "slow"}]] [[tool:crunch {"n": 100000}]]'
        ' [[tool:delegate {"topic": "scopes"}]]'
    )
    state = boss.start(prompt)
    # The three tools, and the helper's own run with its tool, are running.
    await wait_until(
        lambda: (
            state.run._tools_started == 3
            and any(run._tools_started == 1 for run in helper.runs.active)
        )
    )
    assert state.run.cancel(STOP)
    await state.run.wait()
    result = state.result()
    assert (result.status, result.reason) == ("cancelled", STOP)
    assert sorted(log) == ["crunch stopped: user", "lookup cancelled", "lookup cancelled"]
    assert len(agent.runs) == 0
    assert len(helper.runs) == 0  # the helper's run was a child: gone too
    assert thread_stats()["running"] == 0  # every tool's thread has returned

    receipt = result.receipt  # what the Stop stopped, layer by layer
    assert receipt is not None
    assert (receipt.reason, receipt.source) == (STOP, "Run.cancel in thread MainThread")
    assert (receipt.tools_started, receipt.tools_finished, receipt.tools_prevented) == (3, 3, 0)
    ends = {(layer.layer, layer.name): layer for layer in receipt.layers}
    assert ends["thread", "crunch"].outcome == "cancelled"
    assert {ends["tool", name].outcome for name in ("lookup", "crunch", "delegate")} == {
        "cancelled"
    }
    (child,) = [layer for layer in receipt.layers if layer.layer == "child run"]
    assert child.outcome == "cancelled"
    assert ends["stream", "local"].output_tokens  # the first turn's stream, with its usage
    assert receipt.output_tokens >= result.usage.output_tokens  # the helper's turn counts too
    assert all((layer.after_stop or 0) >= 0 for layer in receipt.layers if layer.layer != "stream")


async def test_a_budget_stops_the_run_with_kind_budget(agent: Agent) -> None:
    result = await agent.run("[[tokens:500]]", budget=Budget(output_tokens=20))
    assert result.status == "cancelled"
    assert result.reason is not None
    assert result.reason.kind == "budget"
    assert result.usage.output_tokens <= 20


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
async def test_a_reply_cut_short_fails_the_run_with_the_providers_error(
    server: LocalModelServer, protocol: str
) -> None:
    """The provider ended its reply's body before the reply (``end-after``): nobody
    stopped the run, so it failed, with that error; the words that came are kept."""
    if protocol == "anthropic":
        client: Any = anthropic_client(server)
        agent = Agent(AnthropicModel(client, "local"), tools=[lookup])
    else:
        client = openai_client(server)
        agent = Agent(OpenAIModel(client, "local"), tools=[lookup])
    result = await agent.run("[[tokens:30]] [[fault:end-after=5]]")
    await client.close()
    assert result.status == "failed"
    assert type(result.error) is ModelServerError
    assert str(result.error).startswith(f"{protocol}: the reply ended before its end: ")
    assert result.reason == CancelReason("error", f"ModelServerError: {result.error}")
    assert len(result.text) == 20  # five tokens of four characters
    assert (result.usage.output_tokens, result.usage.estimated) == (5, True)
    assert result.receipt is not None
    (stream,) = [layer for layer in result.receipt.layers if layer.layer == "stream"]
    assert (stream.outcome, stream.output_tokens) == ("failed", 5)
    assert stream.detail.startswith("ModelServerError: ")
    assert result.receipt.status == "failed"


ASKS_TWO_TOOLS = '[[tool:lookup {"query": "a"}]] [[tool:lookup {"query": "%s"}]]' % ("b" * 400)
# The reply: "Calling lookup, lookup. ", then each call's arguments as they stream.
FIRST_CALL_DONE = estimate_tokens("Calling lookup, lookup. ") + estimate_tokens('{"query": "a"}')


async def test_a_reply_that_fails_after_asking_for_a_tool_prevented_nothing(
    agent: Agent,
) -> None:
    """The model asked for one tool, then its reply broke: the run failed, and the
    receipt does not say a Stop prevented that tool call (nobody pressed Stop)."""
    result = await agent.run(f"{ASKS_TWO_TOOLS} [[fault:end-after={FIRST_CALL_DONE}]]")
    assert result.status == "failed"
    assert [call.name for call in result.tool_calls] == ["lookup"]  # asked for, never run
    assert result.receipt is not None
    assert (result.receipt.tools_started, result.receipt.tools_prevented) == (0, 0)
    assert not [layer for layer in result.receipt.layers if layer.layer == "tool"]


async def test_a_stop_after_the_model_asked_for_a_tool_prevented_it(agent: Agent) -> None:
    """The Stop came while the model was still writing the second call: the first,
    asked for and never begun, is one the Stop prevented."""
    state = agent.start(f"{ASKS_TWO_TOOLS} [[rate:20]]")
    await wait_until(lambda: len(state.tool_calls) == 1)
    assert state.run.cancel(STOP)
    await state.run.wait()
    result = state.result()
    assert (result.status, result.reason) == ("cancelled", STOP)
    assert result.receipt is not None
    assert (result.receipt.tools_started, result.receipt.tools_prevented) == (0, 1)
    (prevented,) = [layer for layer in result.receipt.layers if layer.layer == "tool"]
    assert (prevented.name, prevented.outcome) == ("lookup", "prevented")


async def test_stream_can_be_left_early_from_the_consuming_task(agent: Agent) -> None:
    seen = []
    async with agent.stream("[[tokens:2000]]") as events:
        async for event in events:
            seen.append(event)
            if sum(isinstance(e, TextDelta) for e in seen) >= 5:
                break
    assert len(agent.runs) == 0  # leaving the block stopped the run
    assert not any(isinstance(e, AgentResult) for e in seen)


async def test_events_and_result_shape(agent: Agent) -> None:
    state = agent.start('[[tool:lookup {"query": "q"}]]')
    events = [event async for event in state.follow()]
    assert isinstance(events[-1], AgentResult)
    assert any(isinstance(e, ToolFinished) and e.content == "found q" for e in events)


async def test_bad_arguments(agent: Agent, server: LocalModelServer) -> None:
    with pytest.raises(ValueError, match="prompt"):
        agent.start("   ")
    with pytest.raises(ValueError, match="unique"):
        Agent(agent.model, tools=[lookup, lookup])


async def test_setup_creates_the_agents_table_and_the_reply_lands_with_the_run(
    agent: Agent, tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "agent.db")
    await store.setup()
    writer = Agent(agent.model, tools=[lookup], store=store)
    try:
        await writer.setup()
        await writer.setup()  # safe to repeat
        done = await writer.run('[[tool:lookup {"query": "q"}]]')
        stopped = await writer.run("[[tokens:2000]]", timeout=0.2)
        rows = await store.execute("SELECT run_id, text, output_tokens FROM cancelkit_replies")
    finally:
        await store.aclose()
    assert (done.status, stopped.status) == ("completed", "cancelled")
    assert rows == [(done.run_id, done.text, done.usage.output_tokens)]  # only the completed
    await Agent(agent.model).setup()  # without a store: nothing to create, no error
