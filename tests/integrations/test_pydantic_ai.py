"""cancelkit.integrations.pydantic_ai against the real pydantic-ai and the local model.

Every test drives a streamed agent run on the local model server and asserts the
contract, never how fast: the Stop ends the run with its reason, the model stream
closed within one chunk of it (the server counts), no task or thread left, tools
stopped at their next check, the usage of the cut-off turn in the receipt.
pydantic-ai runs on asyncio only, so these do too (one test checks the trio error).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent, CancellationToken, RunContext
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import cancelkit
from cancelkit import CancelReason, Runs, current_token, stoppable
from cancelkit.distributed import RedisBackend
from cancelkit.integrations import metered_http_client
from cancelkit.integrations.pydantic_ai import AgentPartial, run_agent, start_agent
from cancelkit.llm.local import LocalModelConfig, LocalModelServer, RequestRecord

from ..helpers import stop_landed, threads_at_work

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from cancelkit import Run, RunOutcome

pytestmark = pytest.mark.anyio

STOP = CancelReason("user", "Stop pressed")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # pydantic-ai runs on asyncio only


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(LocalModelConfig(rate=400, first_token_latency=0.0)) as running:
        yield running


@dataclass
class Probe:
    """What the tools did, seen from their own threads and tasks."""

    started: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False  # set just before the Stop
    steps: int = 0
    steps_after_stop: int = 0
    returned: bool = False
    async_cancelled: bool = False


@dataclass
class Setup:
    agent: Agent[None, str]
    probe: Probe
    server: LocalModelServer
    runs: Runs


@pytest.fixture
async def setup(server: LocalModelServer) -> AsyncIterator[Setup]:
    probe = Probe()

    @stoppable
    def slow_tool(steps: int) -> str:
        """Work through `steps` steps of 10 ms, checking for a Stop between them."""
        probe.started.set()
        try:
            for _ in range(steps):
                time.sleep(0.01)
                probe.steps += 1
                if probe.stopped:
                    probe.steps_after_stop += 1
                current_token().check()
            return f"did {steps} steps"
        finally:
            probe.returned = True

    async def wait_tool(seconds: float) -> str:
        """Wait `seconds` seconds."""
        probe.started.set()
        try:
            await anyio.sleep(seconds)
        except BaseException:
            probe.async_cancelled = True
            raise
        return "waited"

    def give_up(ctx: RunContext[None]) -> str:
        """Cancel the run from inside it, pydantic-ai's own way."""
        ctx.cancel()
        return "cancelled"

    client = AsyncOpenAI(
        base_url=server.base_url + "/v1",
        api_key="local",
        max_retries=0,
        http_client=metered_http_client(),
    )
    model = OpenAIChatModel("local", provider=OpenAIProvider(openai_client=client))
    agent = Agent(model, tools=[slow_tool, wait_tool, give_up])
    server.app.reset()
    async with Runs() as runs:
        yield Setup(agent, probe, server, runs)
    await client.close()


def live_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if not task.done()}


async def streaming(server: LocalModelServer, tokens: int) -> RequestRecord:
    """The one request, once the server has generated ``tokens`` tokens of it."""
    with anyio.fail_after(30):  # a bound for a hang only
        while True:
            records = list(server.app.records.values())
            if records and records[-1].tokens_generated >= tokens:
                return records[-1]
            await anyio.sleep(0.005)


async def ended(record: RequestRecord) -> RequestRecord:
    """The server's record, once the server has finished with the request."""
    with anyio.fail_after(10):  # a bound for a hang only
        while True:
            if record.ended_at is not None:
                return record
            await anyio.sleep(0.005)


async def started(probe: Probe, steps: int = 0) -> None:
    with anyio.fail_after(30):  # a bound for a hang only
        while True:
            if probe.started.is_set() and probe.steps >= steps:
                return
            await anyio.sleep(0.005)


def stream_layers(outcome: RunOutcome[Any]) -> list[cancelkit.LayerStop]:
    return [layer for layer in outcome.receipt.layers if layer.layer == "stream"]


async def stop_and_wait(run: Run[Any], runs: Runs) -> RunOutcome[Any]:
    assert runs.cancel(run.id, STOP)
    assert not runs.cancel(run.id, CancelReason("user", "a second Stop"))  # idempotent
    return await run.wait()


async def test_stop_mid_stream_closes_the_stream_and_keeps_usage_and_text(setup: Setup) -> None:
    tasks, threads = live_tasks(), set(threading.enumerate())
    run = start_agent(setup.runs, setup.agent, "Talk. [[tokens:400]] [[rate:25]]", run_id="t1")
    record = await streaming(setup.server, 20)
    outcome = await stop_and_wait(run, setup.runs)

    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    assert live_tasks() <= tasks, "no task pydantic-ai started outlives the run"
    assert threads_at_work(threads) == []
    await ended(record)
    assert record.disconnected_at is not None
    assert record.tokens_after(stop_landed(run)) <= 1, "the model stream closed within one chunk"

    receipt = outcome.receipt
    assert receipt.reason == STOP
    assert receipt.source is not None
    assert receipt.source.startswith("Runs.cancel")
    (stream,) = stream_layers(outcome)
    assert stream.outcome == "closed"
    assert stream.estimated
    assert stream.output_tokens is not None
    assert abs(stream.output_tokens - record.tokens_generated) <= 0.1 * record.tokens_generated
    assert receipt.output_tokens == stream.output_tokens
    assert receipt.estimated

    partial = outcome.partial
    assert isinstance(partial, AgentPartial)
    assert len(partial.text) >= 4 * (record.tokens_generated - 1)  # the text that arrived
    assert partial.messages


async def test_stop_before_the_model_answers(setup: Setup) -> None:
    tasks = live_tasks()
    run = start_agent(setup.runs, setup.agent, "Wait. [[fault:slow-first-token=60]]")
    record = await streaming(setup.server, 0)
    outcome = await stop_and_wait(run, setup.runs)

    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    assert live_tasks() <= tasks
    await ended(record)
    assert record.tokens_generated == 0
    assert record.disconnected_at is not None
    assert outcome.receipt.output_tokens == 0


async def test_stop_during_a_sync_tool_stops_it_at_its_next_check(setup: Setup) -> None:
    tasks, threads = live_tasks(), set(threading.enumerate())
    run = start_agent(setup.runs, setup.agent, 'Work. [[tool:slow_tool {"steps": 3000}]]')
    await started(setup.probe, steps=3)
    setup.probe.stopped = True
    outcome = await stop_and_wait(run, setup.runs)

    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    assert setup.probe.returned, "the tool's thread returned before the run reported done"
    assert setup.probe.steps_after_stop <= 2, "stopped at its next check"
    assert live_tasks() <= tasks
    assert threads_at_work(threads) == []

    receipt = outcome.receipt
    assert (receipt.tools_started, receipt.tools_finished) == (1, 1)
    layers = {(layer.layer, layer.name.rpartition(".")[2]): layer for layer in receipt.layers}
    assert layers["tool", "slow_tool"].outcome == "cancelled"
    thread = layers["thread", "slow_tool"]
    assert thread.outcome == "cancelled"
    assert thread.after_stop is not None
    assert thread.after_stop >= 0
    assert isinstance(outcome.partial, AgentPartial)


async def test_stop_during_an_async_tool_cancels_it(setup: Setup) -> None:
    tasks = live_tasks()
    run = start_agent(setup.runs, setup.agent, 'Wait. [[tool:wait_tool {"seconds": 60}]]')
    await started(setup.probe)
    outcome = await stop_and_wait(run, setup.runs)

    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    assert setup.probe.async_cancelled
    assert live_tasks() <= tasks
    # The turn that asked for the tool finished: its usage as the provider reported it.
    (stream,) = stream_layers(outcome)
    assert stream.outcome == "finished"
    assert not stream.estimated


async def test_cancel_from_another_thread(setup: Setup) -> None:
    tasks = live_tasks()
    run = start_agent(
        setup.runs, setup.agent, "Talk. [[tokens:400]] [[rate:25]]", run_id="t2", owner="alice"
    )
    record = await streaming(setup.server, 5)
    answers: list[bool] = []

    def press_stop() -> None:
        answers.append(setup.runs.cancel("t2", STOP, owner="mallory"))
        answers.append(setup.runs.cancel("t2", STOP, owner="alice"))
        answers.append(setup.runs.cancel("t2", STOP, owner="alice"))

    stopper = threading.Thread(target=press_stop, name="stop-button")
    stopper.start()
    outcome = await run.wait()
    stopper.join()

    assert answers == [False, True, False]
    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    assert outcome.receipt.source == "Runs.cancel in thread stop-button"
    assert live_tasks() <= tasks
    await ended(record)
    assert record.tokens_after(stop_landed(run)) <= 1


async def test_the_frameworks_own_cancel_ends_our_run(setup: Setup) -> None:
    tasks = live_tasks()
    theirs = CancellationToken()
    run = start_agent(
        setup.runs, setup.agent, "Talk. [[tokens:400]] [[rate:25]]", cancellation_token=theirs
    )
    record = await streaming(setup.server, 10)
    # From the framework's cancel, in this task: our run hears of it only once
    # pydantic-ai has unwound its stream, so counting from there would prove nothing.
    moment = time.monotonic()
    theirs.cancel()
    outcome = await run.wait()

    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert outcome.reason.kind == "user"
    assert "pydantic-ai's own cancel" in outcome.reason.message
    assert outcome.receipt.source is not None
    assert outcome.receipt.source.startswith("pydantic-ai's own cancel")
    assert not setup.runs.cancel(run.id, STOP), "already over"
    assert live_tasks() <= tasks
    await ended(record)
    assert record.tokens_after(moment) <= 1
    assert isinstance(outcome.partial, AgentPartial)
    assert outcome.partial.text
    (stream,) = stream_layers(outcome)
    assert stream.estimated


async def test_a_tool_cancelling_its_run_ends_our_run(setup: Setup) -> None:
    run = start_agent(setup.runs, setup.agent, "Stop yourself. [[tool:give_up {}]]")
    outcome = await run.wait()

    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert outcome.reason.kind == "user"
    assert "pydantic-ai's own cancel" in outcome.reason.message


async def test_the_frameworks_own_timeout_ends_our_run_with_kind_timeout(setup: Setup) -> None:
    async def body() -> object:
        return await run_agent(setup.agent, "Talk. [[tokens:400]] [[rate:25]]", timeout=0.3)

    outcome = await setup.runs.start(body).wait()

    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert outcome.reason.kind == "timeout"
    assert "pydantic-ai's own timeout" in outcome.reason.message


async def test_a_completed_run(setup: Setup) -> None:
    run = setup.runs.start(run_agent, setup.agent, 'Go. [[tool:slow_tool {"steps": 2}]]')
    outcome = await run.wait()

    assert outcome.status == "completed"
    assert outcome.value is not None
    assert "did 2 steps" in outcome.value.output
    receipt = outcome.receipt
    assert receipt.reason is None
    assert (receipt.tools_started, receipt.tools_finished) == (1, 1)
    assert [layer.outcome for layer in stream_layers(outcome)] == ["finished", "finished"]
    assert not receipt.estimated
    assert receipt.output_tokens == sum(
        record.tokens_generated for record in setup.server.app.records.values()
    )


async def test_outside_a_run_is_an_error(setup: Setup) -> None:
    with pytest.raises(RuntimeError, match="outside any run"):
        await run_agent(setup.agent, "Hello")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_with_a_clear_error(anyio_backend: str) -> None:
    model = OpenAIChatModel("local", provider=OpenAIProvider(api_key="local"))
    async with Runs() as runs:
        with pytest.raises(RuntimeError, match="asyncio only"):
            start_agent(runs, Agent(model), "Hello")


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cancelkit.integrations.pydantic_ai", "cancelkit.integrations._pydantic_ai"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pydantic_ai", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "cancelkit\[pydantic-ai\]"'):
        importlib.import_module("cancelkit.integrations.pydantic_ai")


async def test_a_stop_through_another_process_registry_lands(setup: Setup, redis_url: str) -> None:
    """Two registries on one Redis stand for two worker processes (the cross-process
    tests of tests/distributed/ run them in real processes)."""
    async with (
        Runs(backend=RedisBackend(redis_url)) as here,
        Runs(backend=RedisBackend(redis_url)) as elsewhere,
    ):
        run = start_agent(here, setup.agent, "Talk. [[tokens:400]] [[rate:25]]", owner="alice")
        assert await run.claimed()
        record = await streaming(setup.server, 10)
        assert not await elsewhere.stop(run.id, STOP, owner="mallory")  # not hers
        assert await elsewhere.stop(run.id, STOP, owner="alice")
        outcome = await run.wait()
    assert (outcome.status, outcome.reason) == ("cancelled", STOP)
    assert outcome.receipt.source == "a Stop from another process, delivered in thread MainThread"
    await ended(record)
    assert record.tokens_after(stop_landed(run)) <= 1
