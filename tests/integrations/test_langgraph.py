"""LangGraph: a graph run is a cancelkit run, against the real package and the local model.

Each test builds a ReAct graph (model node, ``ToolNode``) on ``ChatOpenAI`` with a
metered HTTP client, streaming from the local model server, and checks the contract:
Stop by id from any task or thread, LangGraph's own stop bridged, the model stream
closed at the Stop (counted by the server), sync and async tools stopped, no task or
thread left, the receipt and the partial state. LangGraph runs on asyncio only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.runtime import RunControl

import cancelkit
from cancelkit import CancelReason, Runs
from cancelkit.integrations import metered_http_client
from cancelkit.integrations.langgraph import GraphPartial, run_graph, start_graph
from cancelkit.llm.local import LocalModelConfig, LocalModelServer, RequestRecord

from ..helpers import stop_landed, threads_at_work

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from langgraph.graph.state import CompiledStateGraph


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # LangGraph is asyncio-only (the trio case is tested below)


pytestmark = pytest.mark.anyio

STOP = CancelReason("user", "Stop pressed")


@dataclass
class Probe:
    """What the tools did, as they saw it."""

    step_ends: list[float] = field(default_factory=list)  # time.monotonic() of each step's end
    sync_started: threading.Event = field(default_factory=threading.Event)
    async_started: asyncio.Event = field(default_factory=asyncio.Event)
    async_cancelled: bool = False


def make_tools(probe: Probe) -> list[BaseTool]:
    @tool(parse_docstring=True)
    @cancelkit.stoppable
    def crunch(steps: int) -> str:
        """Crunch numbers, 10 ms a step.

        Args:
            steps: how many steps.
        """
        token = cancelkit.current_token(required=True)
        probe.sync_started.set()
        for _ in range(steps):
            token.check()  # raises Cancelled once the run is stopped
            time.sleep(0.01)
            probe.step_ends.append(time.monotonic())
        return f"crunched {steps}"

    @tool(parse_docstring=True)
    async def fetch_page(url: str) -> str:
        """Fetch a web page.

        Args:
            url: the address.
        """
        probe.async_started.set()
        try:
            await anyio.sleep(60)
        except BaseException:
            probe.async_cancelled = True
            raise
        return f"page {url}"

    return [crunch, fetch_page]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    config = LocalModelConfig(rate=200, chunk_tokens=1, first_token_latency=0.0)
    with LocalModelServer(config) as running:
        yield running


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def graph(
    server: LocalModelServer, probe: Probe
) -> AsyncIterator[CompiledStateGraph[Any, Any, Any, Any]]:
    client = metered_http_client()
    tools = make_tools(probe)
    llm = ChatOpenAI(
        model="local",
        base_url=server.base_url + "/v1",
        api_key="local",  # type: ignore[arg-type]  # a str is what it takes at run time
        streaming=True,
        stream_usage=True,
        max_retries=0,
        http_async_client=client,
    ).bind_tools(tools)

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    yield builder.compile()
    await client.aclose()


def ask(prompt: str) -> dict[str, Any]:
    return {"messages": [("user", prompt)]}


async def first_request(server: LocalModelServer, since: set[str]) -> RequestRecord:
    """The first request the server received after ``since`` (the ids it knew)."""
    with anyio.fail_after(10):  # a bound for a hang only
        while True:
            fresh = [r for r in server.app.records.copy().values() if r.id not in since]
            if fresh:
                return fresh[0]
            await anyio.sleep(0.005)


async def until(check: Callable[[], bool]) -> None:
    """Poll a condition the server or a thread makes true (no event to wait on)."""
    with anyio.fail_after(10):  # a bound for a hang only
        while not check():  # noqa: ASYNC110 - set by another thread, no event to wait on
            await anyio.sleep(0.005)


async def ended(record: RequestRecord) -> RequestRecord:
    await until(lambda: record.ended_at is not None)
    return record


@dataclass
class Baseline:
    """The tasks and threads there were before the run (the test's own)."""

    tasks: set[asyncio.Task[Any]] = field(default_factory=asyncio.all_tasks)
    threads: set[threading.Thread] = field(default_factory=lambda: set(threading.enumerate()))


def assert_nothing_left(before: Baseline) -> None:
    """No task but the test's own, no thread at work, when the run reports done."""
    others = [t for t in asyncio.all_tasks() if t not in before.tasks and not t.done()]
    assert others == []
    stats = cancelkit.thread_stats()
    assert stats["running"] == 0
    assert stats["abandoned_running"] == 0
    assert threads_at_work(before.threads) == []  # idle pool workers at most


async def test_stop_closes_the_model_stream_and_keeps_usage_and_text(
    server: LocalModelServer, graph: CompiledStateGraph[Any, Any, Any, Any]
) -> None:
    runs = Runs()
    control = RunControl()
    before = Baseline()
    known = set(server.app.records)
    run = start_graph(
        runs,
        graph,
        ask("Tell me a story [[tokens:400]] [[rate:20]]"),
        run_id="lg-1",
        control=control,
    )
    record = await first_request(server, known)
    await until(lambda: record.tokens_generated >= 8)

    assert runs.cancel("lg-1", STOP, owner=None) is True
    outcome = await run.wait()
    assert_nothing_left(before)
    assert runs.cancel("lg-1", STOP) is False  # idempotent: the first reason won
    assert run.cancel(CancelReason("timeout", "late")) is False

    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    await ended(record)
    assert record.disconnected_at is not None
    assert record.tokens_after(stop_landed(run)) <= 1  # one chunk at most
    assert control.drain_reason is not None
    assert "Stop pressed" in control.drain_reason

    receipt = outcome.receipt
    assert receipt.reason == STOP
    assert receipt.source is not None
    assert receipt.source.startswith("Runs.cancel")
    streams = [
        layer for layer in receipt.layers if layer.layer == "stream" and layer.name == "local"
    ]
    assert len(streams) == 1
    assert streams[0].outcome == "closed"
    assert streams[0].estimated
    assert receipt.estimated
    generated = record.tokens_generated
    assert abs(receipt.output_tokens - generated) <= max(1, generated // 10)

    partial = outcome.partial
    assert isinstance(partial, GraphPartial)
    assert partial.state is not None
    assert len(partial.state["messages"]) == 1  # the question
    assert partial.text  # the cut-off turn's text so far
    assert partial.messages >= 1


async def test_stop_before_the_model_answers(
    server: LocalModelServer, graph: CompiledStateGraph[Any, Any, Any, Any]
) -> None:
    runs = Runs()
    before = Baseline()
    known = set(server.app.records)
    run = start_graph(runs, graph, ask("Think first [[fault:slow-first-token=30]]"))
    record = await first_request(server, known)

    assert run.cancel(STOP) is True
    outcome = await run.wait()
    assert_nothing_left(before)
    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    await ended(record)
    assert record.tokens_generated == 0
    assert record.disconnected_at is not None
    assert isinstance(outcome.partial, GraphPartial)
    assert outcome.partial.text == ""
    assert outcome.receipt.output_tokens == 0


async def test_langgraphs_own_stop_ends_the_run_cancelled_with_its_reason(
    server: LocalModelServer, graph: CompiledStateGraph[Any, Any, Any, Any], probe: Probe
) -> None:
    runs = Runs()
    control = RunControl()
    known = set(server.app.records)
    prompt = 'Crunch [[tool:crunch {"steps": 5}]] [[rate:20]]'
    run = start_graph(runs, graph, ask(prompt), run_id="lg-drain", control=control)
    record = await first_request(server, known)
    await until(lambda: record.tokens_generated >= 1)

    control.request_drain("the user pressed LangGraph's stop")  # LangGraph's own API
    outcome = await run.wait()
    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert outcome.reason.kind == "user"
    assert "request_drain" in outcome.reason.message
    assert "the user pressed LangGraph's stop" in outcome.reason.message
    receipt = outcome.receipt
    assert receipt.source is not None
    assert receipt.source.startswith("LangGraph RunControl.request_drain")
    assert runs.cancel("lg-drain", STOP) is False  # already ended, with the drain's reason
    # LangGraph's drain lets the step in progress finish: the tool never started.
    assert not probe.sync_started.is_set()
    assert receipt.tools_started == 0


async def test_stop_from_another_thread_during_a_sync_tool(
    graph: CompiledStateGraph[Any, Any, Any, Any], probe: Probe
) -> None:
    runs = Runs()
    before = Baseline()
    prompt = 'Crunch [[tool:crunch {"steps": 100000}]]'
    run = start_graph(runs, graph, ask(prompt), run_id="lg-sync", owner="alice")
    await until(lambda: len(probe.step_ends) >= 3)

    answers: list[bool] = []
    answered: list[float] = []

    def stop() -> None:
        answers.append(runs.cancel("lg-sync", STOP, owner="alice"))
        answered.append(time.monotonic())

    stopper = threading.Thread(target=stop, name="stopper")
    stopper.start()
    outcome = await run.wait()
    stopper.join()
    assert answers == [True]
    assert_nothing_left(before)
    # The Stop reached the tool's token before it was answered; the step in progress
    # then finishes, and the next check() raises.
    assert stop_landed(run) <= answered[0]
    assert sum(end > answered[0] for end in probe.step_ends) <= 1
    steps = len(probe.step_ends)
    await anyio.sleep(0.05)
    assert len(probe.step_ends) == steps  # the thread has returned: nothing goes on

    assert outcome.status == "cancelled"
    receipt = outcome.receipt
    assert receipt.reason == STOP
    assert receipt.source == "Runs.cancel in thread stopper"
    assert (receipt.tools_started, receipt.tools_finished) == (1, 1)
    thread = [layer for layer in receipt.layers if layer.layer == "thread"]
    assert [layer.outcome for layer in thread] == ["cancelled"]
    assert thread[0].name.endswith("crunch")
    tools = [layer for layer in receipt.layers if layer.layer == "tool"]
    assert [(layer.name, layer.outcome) for layer in tools] == [("crunch", "cancelled")]
    # The model's turn that asked for the tool ended before the Stop, usage reported.
    stream = next(layer for layer in receipt.layers if layer.layer == "stream")
    assert stream.outcome == "finished"
    assert not stream.estimated
    assert stream.after_stop is not None
    assert stream.after_stop < 0


async def test_stop_during_an_async_tool(
    graph: CompiledStateGraph[Any, Any, Any, Any], probe: Probe
) -> None:
    runs = Runs()
    before = Baseline()
    run = start_graph(runs, graph, ask('Read [[tool:fetch_page {"url": "https://x.test"}]]'))
    with anyio.fail_after(10):
        await probe.async_started.wait()

    assert runs.cancel(run.id, STOP) is True
    outcome = await run.wait()
    assert_nothing_left(before)
    assert probe.async_cancelled
    assert outcome.status == "cancelled"
    assert outcome.reason == STOP
    assert isinstance(outcome.partial, GraphPartial)
    assert outcome.partial.state is not None
    last = outcome.partial.state["messages"][-1]
    assert last.tool_calls[0]["name"] == "fetch_page"  # the state the tool was called in


async def test_a_graph_that_completes_reports_its_state_and_usage(
    server: LocalModelServer, graph: CompiledStateGraph[Any, Any, Any, Any]
) -> None:
    runs = Runs()
    seen: list[str] = []

    async def on_message(message: Any, metadata: dict[str, Any]) -> None:
        seen.append(metadata["langgraph_node"])

    run = start_graph(
        runs, graph, ask('Crunch [[tool:crunch {"steps": 2}]]'), on_message=on_message
    )
    state = await run.result()
    assert state is not None
    assert [m.type for m in state["messages"]] == ["human", "ai", "tool", "ai"]
    assert state["messages"][2].content == "crunched 2"
    assert "model" in seen
    receipt = run.receipt
    assert receipt is not None
    assert (receipt.tools_started, receipt.tools_finished) == (1, 1)
    streams = [
        layer for layer in receipt.layers if layer.layer == "stream" and layer.name == "local"
    ]
    assert [layer.outcome for layer in streams] == ["finished", "finished"]
    assert not receipt.estimated  # the provider's own counts
    assert receipt.output_tokens > 0


async def test_runs_start_takes_run_graph_directly(
    graph: CompiledStateGraph[Any, Any, Any, Any],
) -> None:
    runs = Runs()
    run = runs.start(run_graph, graph, ask("Hi [[tokens:3]]"), run_id="direct")
    state = await run.result()
    assert state is not None
    assert state["messages"][-1].type == "ai"


async def test_outside_a_run_is_a_clear_error(
    graph: CompiledStateGraph[Any, Any, Any, Any],
) -> None:
    with pytest.raises(RuntimeError, match="outside any run"):
        await run_graph(graph, ask("Hi"))


def test_trio_is_refused_with_a_clear_error() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="LangGraph runs on asyncio only, not trio"):
            start_graph(Runs(), None, ask("Hi"))  # type: ignore[arg-type]
        run = Runs().start(run_graph, None, ask("Hi"))  # type: ignore[arg-type]
        outcome = await run.wait()
        assert outcome.status == "failed"
        assert isinstance(outcome.error, RuntimeError)
        assert "asyncio only" in str(outcome.error)

    anyio.run(main, backend="trio")
