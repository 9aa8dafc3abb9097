"""openai-agents runs as cancelkit runs, against the real package and the local model.

Each test asserts the contract, never a duration: the server's own count of tokens
generated after the Stop, the iterations a sync tool ran after it, the tasks and
threads left when the run reports done, and what the receipt says.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    RunResultStreaming,
    StreamEvent,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

import cancelkit
from cancelkit import CancelReason, Runs
from cancelkit.integrations import metered_http_client, openai_agents
from cancelkit.llm.local import LocalModelConfig, LocalModelServer, RequestRecord

from ..helpers import stop_landed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from agents import Tool

pytestmark = pytest.mark.anyio

set_tracing_disabled(True)

STOP = CancelReason("user", "Stop pressed")
LONG_TEXT = "Write a long answer. [[tokens:400]] [[rate:50]]"


@dataclass
class Probe:
    """What the tools saw: iterations of the sync one, before and after the Stop."""

    stop_at: float | None = None
    iterations: int = 0
    after_stop: int = 0
    async_started: bool = False
    async_cancelled: bool = False
    started: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> float:
        self.stop_at = time.monotonic()
        return self.stop_at


PROBE = Probe()


@cancelkit.stoppable
def count_slowly(steps: int) -> str:
    """Count in 10 ms steps, checking the Stop before each.

    Args:
        steps: how many steps.
    """
    token = cancelkit.current_token(required=True)
    probe = PROBE
    probe.started.set()
    for _ in range(steps):
        token.check()
        time.sleep(0.01)
        probe.iterations += 1
        if probe.stop_at is not None:
            probe.after_stop += 1
    return f"counted {steps}"


async def wait_long(seconds: float) -> str:
    """Wait a while, asynchronously.

    Args:
        seconds: how long.
    """
    PROBE.async_started = True
    try:
        await anyio.sleep(seconds)
    except BaseException:
        PROBE.async_cancelled = True
        raise
    return "waited"


TOOLS: list[Tool] = [function_tool(count_slowly), function_tool(wait_long)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # openai-agents runs on asyncio only


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer(LocalModelConfig(rate=400, first_token_latency=0.0)) as running:
        yield running


@pytest.fixture
async def agent(server: LocalModelServer) -> AsyncIterator[Agent[Any]]:
    global PROBE  # one probe per test, read by the module-level tools
    PROBE = Probe()
    server.app.reset()
    client = AsyncOpenAI(
        base_url=server.base_url + "/v1",
        api_key="local",
        max_retries=0,
        http_client=metered_http_client(),
    )
    model = OpenAIChatCompletionsModel(model="local", openai_client=client)
    yield Agent(
        name="probe",
        model=model,
        tools=TOOLS,
        model_settings=ModelSettings(include_usage=True),
    )
    await client.close()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (a bound for a hang only: returns as soon as it holds)."""
    with anyio.fail_after(20):
        while True:
            if condition():
                return
            await anyio.sleep(0.005)


def generated(server: LocalModelServer, at_least: int) -> Callable[[], bool]:
    def enough() -> bool:
        return any(r.tokens_generated >= at_least for r in server.app.records.values())

    return enough


async def ended(server: LocalModelServer) -> list[RequestRecord]:
    """The server's records, once it has finished with every request."""
    await until(lambda: all(r.ended_at is not None for r in server.app.records.values()))
    return list(server.app.records.values())


def loose_tasks(before: set[asyncio.Task[Any]]) -> list[str]:
    """Tasks running now that neither ran before the run nor are this test's."""
    current = asyncio.current_task()
    return [
        task.get_name()
        for task in asyncio.all_tasks()
        if task is not current and task not in before and not task.done()
    ]


async def test_a_run_completes_with_its_usage_as_the_server_counted(
    agent: Agent[Any], server: LocalModelServer
) -> None:
    runs = Runs()
    prompt = 'Count. [[tool:count_slowly {"steps": 3}]]'
    run = openai_agents.start(runs, agent, prompt, run_id="done", owner="alice")
    result = await run.result()
    assert isinstance(result, RunResultStreaming)
    assert isinstance(result.final_output, str)
    assert result.final_output
    outcome = run.outcome
    assert outcome is not None
    assert outcome.status == "completed"
    receipt = outcome.receipt
    records = await ended(server)
    assert receipt.output_tokens == sum(r.tokens_generated for r in records)
    assert not receipt.estimated
    assert (receipt.tools_started, receipt.tools_finished) == (1, 1)
    assert isinstance(outcome.partial, openai_agents.Partial)
    assert outcome.partial.text.endswith(result.final_output)
    assert outcome.partial.items  # the tool call, its output, the answer
    assert runs.cancel("done", STOP) is False  # finished: nothing to stop


async def test_a_stop_mid_stream_closes_the_model_stream_and_keeps_the_usage(
    agent: Agent[Any], server: LocalModelServer
) -> None:
    runs = Runs()
    before = set(asyncio.all_tasks())
    run = openai_agents.start(runs, agent, LONG_TEXT, run_id="chat-1", owner="alice")
    await until(generated(server, 40))
    PROBE.stop()
    assert runs.cancel("chat-1", STOP, owner="alice") is True
    outcome = await run.wait()
    assert loose_tasks(before) == []
    assert cancelkit.thread_stats()["running"] == 0
    assert runs.cancel("chat-1", STOP) is False  # idempotent: the first Stop won
    assert run.cancel(CancelReason("user", "again")) is False
    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    [record] = await ended(server)
    assert record.tokens_after(stop_landed(run)) <= 1  # one chunk: the stream closed at the Stop
    assert record.disconnected_at is not None
    receipt = outcome.receipt
    assert receipt.reason == STOP
    assert receipt.source == "Runs.cancel in thread MainThread"
    [model_stream] = [layer for layer in receipt.layers if layer.name == "local"]
    assert (model_stream.layer, model_stream.outcome) == ("stream", "closed")
    assert model_stream.estimated
    assert receipt.estimated
    assert abs(receipt.output_tokens - record.tokens_generated) <= 0.1 * record.tokens_generated
    assert isinstance(outcome.partial, openai_agents.Partial)
    assert len(outcome.partial.text) >= 4 * 20  # what arrived before the Stop is kept


async def test_a_stop_before_the_model_answers(agent: Agent[Any], server: LocalModelServer) -> None:
    runs = Runs()
    before = set(asyncio.all_tasks())
    run = openai_agents.start(runs, agent, "Hello [[fault:slow-first-token=30]]", run_id="early")
    await until(lambda: bool(server.app.records))
    assert runs.cancel("early", STOP) is True
    outcome = await run.wait()
    assert loose_tasks(before) == []
    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    [record] = await ended(server)
    assert record.tokens_generated == 0
    assert record.disconnected_at is not None
    assert outcome.receipt.output_tokens == 0


async def test_the_frameworks_own_cancel_ends_the_run_cancelled(
    agent: Agent[Any], server: LocalModelServer
) -> None:
    deltas: list[str] = []

    def on_event(event: StreamEvent, result: RunResultStreaming) -> None:
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
            if len(deltas) == 20:
                PROBE.stop()
                result.cancel()  # the framework's own Stop, as its docs show

    runs = Runs()
    before = set(asyncio.all_tasks())
    run = openai_agents.start(runs, agent, LONG_TEXT, run_id="own", on_event=on_event)
    outcome = await run.wait()
    assert loose_tasks(before) == []
    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert outcome.reason.kind == "user"
    assert "RunResultStreaming.cancel(mode='immediate')" in outcome.reason.message
    assert outcome.receipt.source is not None
    assert "openai-agents" in outcome.receipt.source
    [record] = await ended(server)
    # From the framework's Stop, in this task: our run hears of it only once the
    # stream has closed, so counting from there would prove nothing.
    assert PROBE.stop_at is not None
    assert record.tokens_after(PROBE.stop_at) <= 1
    assert runs.cancel("own", STOP) is False  # the framework's Stop won
    assert isinstance(outcome.partial, openai_agents.Partial)
    assert outcome.partial.text == "".join(deltas)


async def test_the_frameworks_after_turn_cancel_finishes_the_turn_then_ends_cancelled(
    agent: Agent[Any], server: LocalModelServer
) -> None:
    def on_event(event: StreamEvent, result: RunResultStreaming) -> None:
        if event.type == "raw_response_event":
            result.cancel(mode="after_turn")

    runs = Runs()
    run = openai_agents.start(runs, agent, "Short. [[tokens:30]]", run_id="turn", on_event=on_event)
    outcome = await run.wait()
    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert "mode='after_turn'" in outcome.reason.message
    [record] = await ended(server)
    assert record.outcome == "completed"  # the turn was allowed to finish
    assert outcome.receipt.output_tokens == record.tokens_generated == 30


async def test_a_stop_during_a_sync_tool_stops_it_within_one_step(
    agent: Agent[Any], server: LocalModelServer
) -> None:
    runs = Runs()
    before = set(asyncio.all_tasks())
    prompt = 'Count. [[tool:count_slowly {"steps": 3000}]] [[rate:200]]'
    run = openai_agents.start(runs, agent, prompt, run_id="sync-tool")
    await until(lambda: PROBE.iterations >= 3)
    PROBE.stop()
    assert runs.cancel("sync-tool", STOP) is True
    outcome = await run.wait()
    assert loose_tasks(before) == []
    assert cancelkit.thread_stats()["running"] == 0  # the worker has returned from the tool
    after = PROBE.after_stop
    await anyio.sleep(0.05)  # had the thread gone on, it would count further
    assert PROBE.after_stop == after <= 1  # the step under way when the Stop came, at most
    assert outcome.status == "cancelled"
    receipt = outcome.receipt
    assert (receipt.tools_started, receipt.tools_finished) == (1, 1)
    outcomes = {(layer.layer, layer.name): layer.outcome for layer in receipt.layers}
    assert outcomes[("thread", "count_slowly")] == "cancelled"
    assert outcomes[("tool", "count_slowly")] == "cancelled"
    assert receipt.output_tokens == sum(r.tokens_generated for r in await ended(server))


async def test_a_stop_during_an_async_tool_cancels_it(agent: Agent[Any]) -> None:
    runs = Runs()
    before = set(asyncio.all_tasks())
    prompt = 'Wait. [[tool:wait_long {"seconds": 30}]] [[rate:200]]'
    run = openai_agents.start(runs, agent, prompt, run_id="async-tool")
    await until(lambda: PROBE.async_started)
    assert runs.cancel("async-tool", STOP) is True
    outcome = await run.wait()
    assert PROBE.async_cancelled
    assert loose_tasks(before) == []
    assert outcome.status == "cancelled"
    assert outcome.reason == STOP


async def test_a_stop_from_another_thread(agent: Agent[Any], server: LocalModelServer) -> None:
    runs = Runs()
    before = set(asyncio.all_tasks())
    run = openai_agents.start(runs, agent, LONG_TEXT, run_id="threaded", owner="bob")
    await until(generated(server, 20))
    answers: list[bool] = []

    def press_stop() -> None:
        PROBE.stop()
        answers.append(runs.cancel("threaded", STOP, owner="bob"))
        answers.append(runs.cancel("threaded", STOP, owner="bob"))

    stopper = threading.Thread(target=press_stop, name="stop-button")
    stopper.start()
    outcome = await run.wait()
    await anyio.to_thread.run_sync(stopper.join)
    assert answers == [True, False]
    assert loose_tasks(before) == []
    assert outcome.status == "cancelled"
    assert outcome.receipt.source == "Runs.cancel in thread stop-button"
    [record] = await ended(server)
    assert record.tokens_after(stop_landed(run)) <= 1


async def test_someone_elses_stop_is_refused(agent: Agent[Any]) -> None:
    runs = Runs()
    run = openai_agents.start(runs, agent, "Hi [[tokens:5]]", run_id="mine", owner="alice")
    assert runs.cancel("mine", STOP, owner="mallory") is False
    assert (await run.wait()).status == "completed"


async def test_run_streamed_needs_a_run(agent: Agent[Any]) -> None:
    with pytest.raises(RuntimeError, match="outside any run"):
        await openai_agents.run_streamed(agent, "Hi")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_with_a_clear_error() -> None:
    agent: Agent[Any] = Agent(name="unused")
    with pytest.raises(RuntimeError, match="asyncio only"):
        await openai_agents.run_streamed(agent, "Hi")


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "agents", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "cancelkit.integrations.openai_agents")
    with pytest.raises(ImportError, match=r'pip install "cancelkit\[openai-agents\]"'):
        importlib.import_module("cancelkit.integrations.openai_agents")


def test_the_public_surface() -> None:
    assert list(openai_agents.__all__) == sorted(openai_agents.__all__)
    for name in openai_agents.__all__:
        assert getattr(openai_agents, name).__module__ == openai_agents.__name__, name
