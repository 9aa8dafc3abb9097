"""openai-agents: the framework's own Stop against cancelkit's, counted, not timed.

Run: ``python bench/bench_integrations_openai_agents.py`` (``--quick``: one repeat).

Two scenarios against the local model server, each stopped by every contestant:

- *text*: a 400-token answer at 100 tokens/s, stopped once 40 were generated;
- *sync tool*: a sync tool of 300 steps of 10 ms, stopped 5 steps in.

Contestants: the framework's three ways to stop a streamed run,
``result.cancel()`` (its default, ``immediate``), closing ``stream_events()``
(``aclose()``, what leaving an ``async for`` cleanly does) and cancelling the task
that reads the events; then cancelkit (``openai_agents.start`` and
``Runs.cancel``, the tool wrapped in ``cancelkit.stoppable``). For each: the tokens
the server generated after the Stop, the steps the sync tool ran after it, the tasks
and busy tool threads left when the run reports done, and the output tokens the
run reports for the cut-off text turn against the server's own count.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    RunResultStreaming,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

import cancelkit
from _harness import Row, save
from cancelkit import CancelReason, Runs
from cancelkit.integrations import metered_http_client, openai_agents
from cancelkit.llm.local import LocalModelConfig, LocalModelServer

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

set_tracing_disabled(True)

TEXT = "Write at length. [[tokens:400]] [[rate:100]]"
TOOL = 'Count. [[tool:count {"n": 300}]] [[rate:400]]'
STOP = CancelReason("user", "Stop pressed")
CONTESTANTS = ("result.cancel()", "stream_events().aclose()", "reader task.cancel()", "cancelkit")
METRICS = {
    "text: tokens after Stop": "tok",
    "text: tasks left at done": "tasks",
    "text: output tokens reported": "tok",
    "text: output tokens, server count": "tok",
    "tool: steps after Stop": "steps",
    "tool: tasks left at done": "tasks",
    "tool: threads busy at done": "threads",
}


class Probe:
    """What the sync tool did, whichever contestant runs it."""

    def __init__(self) -> None:
        self.stop_at: float | None = None
        self.steps = 0
        self.after_stop = 0
        self.running = False
        self.finished = threading.Event()


PROBE = Probe()


def loop(n: int, check: Callable[[], None]) -> str:
    probe = PROBE
    probe.running = True
    try:
        for _ in range(n):
            check()
            time.sleep(0.01)
            probe.steps += 1
            if probe.stop_at is not None:
                probe.after_stop += 1
        return f"counted {n}"
    finally:
        probe.running = False
        probe.finished.set()


def count(n: int) -> str:
    """Count in 10 ms steps (a sync tool that knows nothing of Stop).

    Args:
        n: how many steps.
    """
    return loop(n, lambda: None)


@cancelkit.stoppable
def count_stoppable(n: int) -> str:
    """Count in 10 ms steps, checking the Stop before each.

    Args:
        n: how many steps.
    """
    return loop(n, cancelkit.current_token(required=True).check)


def agent(client: AsyncOpenAI, stoppable: bool) -> Agent[Any]:
    tool = function_tool(count_stoppable if stoppable else count, name_override="count")
    return Agent(
        name="bench",
        model=OpenAIChatCompletionsModel(model="local", openai_client=client),
        tools=[tool],
        model_settings=ModelSettings(include_usage=True),
    )


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the scenario never reached its Stop point")
        await asyncio.sleep(0.005)


def loose_tasks(before: set[asyncio.Task[Any]]) -> int:
    current = asyncio.current_task()
    return sum(
        1 for t in asyncio.all_tasks() if t is not current and t not in before and not t.done()
    )


async def framework_stop(
    how: str, agent: Agent[Any], prompt: str, ready: Callable[[], bool]
) -> tuple[int, int]:
    """Stop a plain openai-agents run the framework's way; (tasks left, usage reported)."""
    before = set(asyncio.all_tasks())
    result = Runner.run_streamed(agent, prompt)
    events = cast("AsyncGenerator[Any, None]", result.stream_events())  # it is one

    stop = asyncio.Event()

    async def read() -> None:
        async for _event in events:
            if stop.is_set():
                break  # a clean reader notices the Stop at its next event...
        await events.aclose()  # ...and closes the events

    reader = asyncio.create_task(read())
    await until(ready)
    PROBE.stop_at = time.monotonic()
    if how == "result.cancel()":
        result.cancel()
    elif how == "stream_events().aclose()":
        stop.set()
    else:
        reader.cancel()
    await asyncio.wait([reader])
    left = loose_tasks(before)
    return left, _usage(result)


def _usage(result: RunResultStreaming) -> int:
    return int(result.context_wrapper.usage.output_tokens)


async def cancelkit_stop(
    agent: Agent[Any], prompt: str, ready: Callable[[], bool]
) -> tuple[int, int]:
    before = set(asyncio.all_tasks())
    runs = Runs()
    run = openai_agents.start(runs, agent, prompt, run_id="bench")
    await until(ready)
    PROBE.stop_at = time.monotonic()
    runs.cancel("bench", STOP)
    outcome = await run.wait()
    return loose_tasks(before), outcome.receipt.output_tokens


async def one(how: str, server: LocalModelServer, scenario: str) -> dict[str, float]:
    global PROBE  # the module-level tools read it
    PROBE = Probe()
    server.app.reset()
    ours = how == "cancelkit"
    client = AsyncOpenAI(
        base_url=server.base_url + "/v1",
        api_key="local",
        max_retries=0,
        http_client=metered_http_client() if ours else None,
    )
    the_agent = agent(client, stoppable=ours)
    if scenario == "text":

        def ready() -> bool:
            return any(r.tokens_generated >= 40 for r in server.app.records.values())

        prompt = TEXT
    else:

        def ready() -> bool:
            return PROBE.steps >= 5

        prompt = TOOL
    if ours:
        left, usage = await cancelkit_stop(the_agent, prompt, ready)
    else:
        left, usage = await framework_stop(how, the_agent, prompt, ready)
    busy = int(PROBE.running)
    if scenario == "tool" and PROBE.running:
        await asyncio.to_thread(PROBE.finished.wait, 10)  # let the leaked tool end
    await until(lambda: all(r.ended_at is not None for r in server.app.records.values()))
    stop_at = PROBE.stop_at
    assert stop_at is not None
    records = list(server.app.records.values())
    await client.close()
    if scenario == "text":
        return {
            "text: tokens after Stop": float(sum(r.tokens_after(stop_at) for r in records)),
            "text: tasks left at done": float(left),
            "text: output tokens reported": float(usage),
            "text: output tokens, server count": float(sum(r.tokens_generated for r in records)),
        }
    measured = {
        "tool: steps after Stop": float(PROBE.after_stop),
        "tool: tasks left at done": float(left),
        "tool: threads busy at done": float(busy),
    }
    return measured


async def main_async(repeats: int) -> list[Row]:
    samples: dict[tuple[str, str], list[float]] = {}
    with LocalModelServer(LocalModelConfig(first_token_latency=0.0)) as server:
        for _ in range(repeats):
            for scenario in ("text", "tool"):
                for how in CONTESTANTS:
                    measured = await one(how, server, scenario)
                    for metric, value in measured.items():
                        samples.setdefault((metric, how), []).append(value)
    rows = []
    for metric, unit in METRICS.items():
        for how in CONTESTANTS:
            values = samples.get((metric, how), [])
            if values:
                rows.append(
                    Row(metric, how, unit, statistics.median(values), min(values), samples=values)
                )
    return rows


def table(rows: list[Row]) -> None:
    cell = {(row.comparison, row.contestant): row.median for row in rows}
    width = max(len(m) for m in METRICS) + 2
    print(f"{'median of runs':<{width}}" + "".join(f"{c:>26}" for c in CONTESTANTS))
    for metric in METRICS:
        values = "".join(f"{cell.get((metric, c), float('nan')):>26.0f}" for c in CONTESTANTS)
        print(f"{metric:<{width}}{values}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    args = parser.parse_args()
    rows = asyncio.run(main_async(1 if args.quick else 3))
    table(rows)
    print(f"\nwritten: {save('integrations_openai_agents', rows)}")


if __name__ == "__main__":
    main()
