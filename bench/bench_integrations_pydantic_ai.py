"""pydantic-ai: its own Stop against cancelkit's, counted by the local model server.

Run: ``python bench/bench_integrations_pydantic_ai.py`` (``--quick`` for fewer repeats).

Two scenarios, each stopped once per repeat, the contestants interleaved:

- *text*: a reply of 400 tokens streamed at 25 tokens/s, stopped after 20 tokens;
- *sync tool*: a sync tool of 200 steps of 10 ms (``current_token().check()`` between
  steps), stopped after 5 steps.

Contestants:

- *pydantic-ai's own stop*: ``agent.run(prompt, cancellation_token=token,
  event_stream_handler=...)`` with the model client on ``metered_http_client()`` and
  the plain sync tool (pydantic-ai runs it in an anyio worker thread), stopped with
  ``token.cancel()``; its usage is the one ``RunCancelled.usage()`` reports;
- *cancelkit*: ``start_agent(runs, agent, prompt)`` with the tool wrapped in
  ``cancelkit.stoppable``, stopped with ``runs.cancel(run_id, reason)``; its usage
  is the receipt's.

Numbers: tokens the server generated after the Stop; tool steps run after the Stop
(counted until the tool's thread returns); tasks still running and tool threads
still in the tool when the run reports done; the usage reported for the cut-off
turn as a percentage of what the server generated. Not a timed test: numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from openai import AsyncOpenAI
from pydantic_ai import Agent, CancellationToken, RunCancelled
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from _harness import Row, report
from cancelkit import CancelReason, Runs, current_token, stoppable
from cancelkit.integrations import metered_http_client
from cancelkit.integrations.pydantic_ai import start_agent
from cancelkit.llm.local import LocalModelConfig, LocalModelServer, RequestRecord

TEXT = "Talk at length. [[tokens:400]] [[rate:25]]"
TOOL = 'Work. [[tool:slow_tool {"steps": 200}]]'
STOP_AFTER_TOKENS = 20
STOP_AFTER_STEPS = 5
OWN = "pydantic-ai's own stop"
OURS = "cancelkit"


@dataclass
class Probe:
    started: threading.Event = field(default_factory=threading.Event)
    stop_at: float | None = None
    steps: int = 0
    steps_after_stop: int = 0
    in_tool: bool = False
    ended: threading.Event = field(default_factory=threading.Event)


PROBE = Probe()


def slow_tool(steps: int) -> str:
    """Work through `steps` steps of 10 ms, checking for a Stop between them."""
    probe = PROBE
    probe.in_tool = True
    probe.started.set()
    try:
        for _ in range(steps):
            time.sleep(0.01)
            probe.steps += 1
            if probe.stop_at is not None:
                probe.steps_after_stop += 1
            current_token().check()
        return f"did {steps} steps"
    finally:
        probe.in_tool = False
        probe.ended.set()


@dataclass
class Stopped:
    tokens_after: int
    steps_after: int
    tasks_left: int
    threads_left: int
    usage_pct: float | None


async def _drain(_ctx: Any, events: Any) -> None:
    async for _event in events:
        pass


async def _ready(server: LocalModelServer, scenario: str) -> RequestRecord:
    while True:
        records = list(server.app.records.values())
        if scenario == "text" and records and records[-1].tokens_generated >= STOP_AFTER_TOKENS:
            return records[-1]
        if scenario == "tool" and PROBE.started.is_set() and PROBE.steps >= STOP_AFTER_STEPS:
            return records[-1]
        await anyio.sleep(0.002)


async def _settle(server: LocalModelServer) -> None:
    """Wait for the tool's thread and the server to be done (for the counts)."""
    if PROBE.started.is_set():
        await anyio.to_thread.run_sync(PROBE.ended.wait, 30)
    while True:
        if all(record.ended_at is not None for record in server.app.records.values()):
            return
        await anyio.sleep(0.005)


async def once(contestant: str, scenario: str, server: LocalModelServer) -> Stopped:
    global PROBE
    PROBE = Probe()
    server.app.reset()
    client = AsyncOpenAI(
        base_url=server.base_url + "/v1",
        api_key="local",
        max_retries=0,
        http_client=metered_http_client(),
    )
    model = OpenAIChatModel("local", provider=OpenAIProvider(openai_client=client))
    prompt = TEXT if scenario == "text" else TOOL
    before = asyncio.all_tasks()
    usage: int | None = None
    if contestant == OWN:
        agent = Agent(model, tools=[slow_tool])
        token = CancellationToken()
        task = asyncio.create_task(
            agent.run(prompt, cancellation_token=token, event_stream_handler=_drain)
        )
        record = await _ready(server, scenario)
        PROBE.stop_at = time.monotonic()
        token.cancel()
        try:
            await task
        except RunCancelled as exc:
            usage = exc.usage.output_tokens
    else:
        agent = Agent(model, tools=[stoppable(slow_tool)])
        async with Runs() as runs:
            run = start_agent(runs, agent, prompt, run_id="bench")
            record = await _ready(server, scenario)
            PROBE.stop_at = time.monotonic()
            runs.cancel("bench", CancelReason("user", "Stop pressed"))
            outcome = await run.wait()
            usage = outcome.receipt.output_tokens
    tasks_left = len({t for t in asyncio.all_tasks() - before if not t.done()})
    threads_left = int(PROBE.in_tool)
    await _settle(server)
    await client.close()
    assert PROBE.stop_at is not None
    stopped_at = PROBE.stop_at
    cut = record.tokens_generated if scenario == "text" else 0
    return Stopped(
        tokens_after=sum(r.tokens_after(stopped_at) for r in server.app.records.values()),
        steps_after=PROBE.steps_after_stop,
        tasks_left=tasks_left,
        threads_left=threads_left,
        usage_pct=100.0 * (usage or 0) / cut if cut else None,
    )


METRICS = {
    "text": (
        ("tokens_after", "tokens generated after Stop", "tok"),
        ("tasks_left", "tasks left when run reports done", "n"),
        ("usage_pct", "usage reported / server count", "%"),
    ),
    "tool": (
        ("steps_after", "sync tool steps after Stop", "st"),
        ("threads_left", "tool threads running at done", "n"),
        ("tasks_left", "tasks left when run reports done", "n"),
        ("tokens_after", "tokens generated after Stop", "tok"),
    ),
}


async def main_async(repeats: int) -> list[Row]:
    rows: list[Row] = []
    with LocalModelServer(LocalModelConfig(rate=400, first_token_latency=0.0)) as server:
        for scenario in ("text", "tool"):
            results: dict[str, list[Stopped]] = {OWN: [], OURS: []}
            for _ in range(repeats):
                for contestant in (OWN, OURS):
                    results[contestant].append(await once(contestant, scenario, server))
            for attribute, label, unit in METRICS[scenario]:
                for contestant, runs in results.items():
                    floats = [float(getattr(r, attribute)) for r in runs]
                    rows.append(
                        Row(
                            f"{scenario}: {label}",
                            contestant,
                            unit,
                            statistics.median(floats),
                            min(floats),
                            samples=floats,
                        )
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    rows = anyio.run(main_async, 2 if args.quick else 5, backend="asyncio")
    report("integrations_pydantic_ai", rows)


if __name__ == "__main__":
    main()
