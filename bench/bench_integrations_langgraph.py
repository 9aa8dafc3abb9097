"""LangGraph's own stop vs cancelkit's: what goes on after the Stop.

Run: ``python bench/bench_integrations_langgraph.py`` (``--repeats N``, default 3).

A ReAct graph (model node, ``ToolNode``) on ``ChatOpenAI``, streaming from the local
model server, is stopped two ways in each scenario:

- *text*: the model streams a 400-token reply at 50 tokens/s; Stop after 15 tokens;
- *sync tool*: a sync tool loops 10 ms steps (300 of them); Stop 20 steps in.

Contestants: LangGraph's own stop (``RunControl.request_drain``, the graph finishes
its step), cancelling the task that iterates ``graph.astream()`` (plain asyncio), and
cancelkit (``start_graph`` + ``runs.cancel``, the tool under ``@stoppable``, the
client on ``metered_http_client()``). Measured: tokens the server generated after
the Stop moment, tool steps done after it, asyncio tasks and threads still at work
when the run reports done, and the output usage the caller gets vs the server's count.
The median over the repeats is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.runtime import RunControl

import cancelkit
from _harness import RESULTS
from cancelkit import CancelReason, Runs
from cancelkit.integrations import metered_http_client
from cancelkit.integrations.langgraph import start_graph
from cancelkit.llm.local import LocalModelConfig, LocalModelServer

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

TEXT = "Tell me a story [[tokens:400]] [[rate:50]]"
TOOL = 'Crunch [[tool:crunch {"count": 300}]] [[rate:200]]'
STOP = CancelReason("user", "Stop")
IDLE_FILES = ("threading.py", "queue.py", "concurrent/futures/thread.py", "cancelkit/_threads.py")


@dataclass
class Sample:
    """One stopped run, as measured."""

    tokens_after_stop: int
    steps_after_stop: int
    tasks_left: int
    threads_at_work: int
    usage_reported: int
    server_generated: int


class Steps:
    """What the sync tool did (shared with its thread)."""

    def __init__(self) -> None:
        self.done = 0
        self.after_stop = 0
        self.stopped = False

    def step(self) -> None:
        time.sleep(0.01)
        self.done += 1
        if self.stopped:
            self.after_stop += 1


def crunch_tool(steps: Steps, stoppable: bool) -> BaseTool:
    def crunch(count: int) -> str:
        """Crunch numbers, 10 ms a step.

        Args:
            count: how many steps.
        """
        token = cancelkit.current_token()
        for _ in range(count):
            token.check()  # a fresh token nobody cancels, unless under @stoppable
            steps.step()
        return "done"

    if stoppable:
        return tool(parse_docstring=True)(cancelkit.stoppable(crunch))
    return tool(parse_docstring=True)(crunch)


def build(url: str, tools: list[BaseTool], client: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    llm = ChatOpenAI(
        model="local",
        base_url=url,
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
    return builder.compile()


def at_work(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)  # noqa: SLF001
    while frame is not None:
        if not frame.f_code.co_filename.endswith(IDLE_FILES):
            return True
        frame = frame.f_back
    return False


def working() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if at_work(t)}


def left(tasks: set[asyncio.Task[Any]], threads: set[threading.Thread]) -> tuple[int, int]:
    """Tasks the run started still running, threads at work that were not before it."""
    live = [t for t in asyncio.all_tasks() if t not in tasks and not t.done()]
    busy = working() - threads
    return len(live), len(busy)


async def stop_when(
    server: LocalModelServer, known: set[str], scenario: str, steps: Steps
) -> float:
    """Wait for the Stop point of ``scenario``; return the Stop moment."""
    while True:
        records = [r for r in server.app.records.copy().values() if r.id not in known]
        if scenario == "text" and records and records[-1].tokens_generated >= 15:
            break
        if scenario == "sync tool" and steps.done >= 20:
            break
        await asyncio.sleep(0.002)
    steps.stopped = True
    return time.monotonic()


async def one(server: LocalModelServer, scenario: str, how: str) -> Sample:
    steps = Steps()
    url = server.base_url + "/v1"
    metered = how == "cancelkit"
    client = metered_http_client() if metered else None
    graph = build(url, [crunch_tool(steps, stoppable=metered)], client)
    prompt = {"messages": [("user", TEXT if scenario == "text" else TOOL)]}
    known = set(server.app.records)
    tasks, threads = asyncio.all_tasks(), working()
    usage = 0
    if how == "cancelkit":
        runs = Runs()
        run = start_graph(runs, graph, prompt, run_id="bench")
        moment = await stop_when(server, known, scenario, steps)
        runs.cancel("bench", STOP)
        outcome = await run.wait()
        tasks_left, threads_busy = left(tasks, threads)
        usage = outcome.receipt.output_tokens
    else:
        control = RunControl()

        async def consume() -> None:
            nonlocal usage
            async for item in graph.astream(prompt, stream_mode="messages", control=control):
                message = cast("tuple[Any, Any]", item)[0]
                meta = getattr(message, "usage_metadata", None)
                if meta:
                    usage += meta["output_tokens"]

        task = asyncio.create_task(consume())
        moment = await stop_when(server, known, scenario, steps)
        if how == "LangGraph request_drain":
            control.request_drain("Stop")
        else:
            task.cancel()
        with contextlib.suppress(BaseException):  # GraphDrained or CancelledError: the stop
            await task
        tasks_left, threads_busy = left(tasks, threads)
    records = [r for r in server.app.records.copy().values() if r.id not in known]
    for record in records:  # wait for the server to be done with them (a bound for a hang only)
        for _ in range(2000):
            if record.ended_at is not None:
                break
            await asyncio.sleep(0.005)
    await asyncio.sleep(3.5 if scenario == "sync tool" else 0.05)  # let a leaked thread run on
    if client is not None:
        await client.aclose()
    return Sample(
        tokens_after_stop=sum(r.tokens_after(moment) for r in records),
        steps_after_stop=steps.after_stop,
        tasks_left=tasks_left,
        threads_at_work=threads_busy,
        usage_reported=usage,
        server_generated=sum(r.tokens_generated for r in records),
    )


async def main(repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    hows = ["LangGraph request_drain", "astream task.cancel()", "cancelkit"]
    config = LocalModelConfig(rate=200, chunk_tokens=1, first_token_latency=0.0)
    with LocalModelServer(config) as server:
        for scenario in ("text", "sync tool"):
            samples: dict[str, list[Sample]] = {how: [] for how in hows}
            for _ in range(repeats):
                for how in hows:  # interleaved, so machine load spreads over all
                    samples[how].append(await one(server, scenario, how))
            for how, measured in samples.items():
                rows.append(
                    {"scenario": scenario, "stop": how}
                    | {
                        key: statistics.median(getattr(s, key) for s in measured)
                        for key in asdict(measured[0])
                    }
                    | {"samples": [asdict(s) for s in measured]}
                )
    return rows


def show(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'scenario':<10} {'stop':<24} {'tokens after':>12} {'steps after':>11} "
        f"{'tasks left':>10} {'threads':>7} {'usage/server':>13}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        usage = f"{row['usage_reported']:g}/{row['server_generated']:g}"
        print(
            f"{row['scenario']:<10} {row['stop']:<24} {row['tokens_after_stop']:>12g} "
            f"{row['steps_after_stop']:>11g} {row['tasks_left']:>10g} "
            f"{row['threads_at_work']:>7g} {usage:>13}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    results = asyncio.run(main(parser.parse_args().repeats))
    show(results)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "integrations_langgraph.json"
    machine = {"python": sys.version.split()[0], "platform": platform.platform()}
    path.write_text(json.dumps({"machine": machine, "rows": results}, indent=2))
    print(f"\nwritten: {path}")
