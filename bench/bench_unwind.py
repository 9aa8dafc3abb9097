"""What a stopped run costs its event loop: the demo's agent against the naive loop.

Run: ``python bench/bench_unwind.py`` (``--runs 60 --repeats 5``; ``--quick``).

In a burst of Stops the loop reads the later Stop requests behind the unwinding of
the runs the earlier ones stopped (``bench_web.py``'s 60 concurrent Stops), so what
one stopped run costs the loop decides how late the last Stop lands. Here, in one
process, ``--runs`` runs stream a 300-token answer from the local model server (its
own process, 50 tokens/s), each followed as a browser's event stream is (its events
turned into Server-Sent Events); once each has sent 15 events they are all stopped at
once, and the process's CPU time is taken from the Stop until every follower has its
final event, per run:

- **cancelkit**: the demo's agent (``cancelkit.demo``: its tools, a SQLite store, the
  ledger, the receipt), followed as the demo follows it (``batches``, ``sse``), stopped
  with ``run.cancel()``;
- **naive**: ``_naive_service.run_agent`` (the ``anthropic`` SDK's stream, a queue of
  events), followed as that service follows it, stopped with ``task.cancel()``.

The cancelkit run does more on the way out (closes the model stream through its
guard, rolls back and records the run in the ledger, builds the receipt that its
final event carries); this measures what that costs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic

from _harness import Row, report
from _harness import measure as interleaved
from _naive_service import event_text, run_agent
from _web_load import start_model
from cancelkit import CancelReason
from cancelkit._lifetime import FolderWatchdog
from cancelkit.demo._agent import build_agent, setup_tables
from cancelkit.demo._events import batches, describe, sse
from cancelkit.demo._serve import DemoOptions, model_for
from cancelkit.llm import AnthropicModel
from cancelkit.stores import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from cancelkit.agent import AgentRun

PROMPT = "Write at length [[tokens:300]]"
STOP = CancelReason("user", "Stop pressed")
EVENTS_BEFORE_STOP = 15
SECONDS = 60.0  # a bound on one measurement


class Streaming:
    """Counts the followers that have seen their first events; the last one says go."""

    def __init__(self, expected: int) -> None:
        self.left = expected
        self.all = asyncio.Event()

    def saw(self, events: int) -> None:
        """A follower has seen ``events`` events (counted once, at the threshold)."""
        if events == EVENTS_BEFORE_STOP:
            self.left -= 1
            if not self.left:
                self.all.set()


async def _stop_all_at_once(
    followers: list[asyncio.Task[None]], streaming: Streaming, stop: Callable[[], None]
) -> float:
    """Once every follower has seen its events, ``stop`` them all; the CPU seconds
    until each follower has its final event."""
    await streaming.all.wait()
    start = time.process_time()
    stop()
    await asyncio.gather(*followers)
    return time.process_time() - start


async def cancelkit_unwind(model_url: str, runs: int) -> float:
    """CPU (us) per stopped run of the demo's agent."""
    data = Path(tempfile.mkdtemp(prefix="ck-bench-unwind-"))
    folder = FolderWatchdog(data)
    store = SQLiteStore(data / "demo.db")
    model = model_for(DemoOptions(data=data, base_url=model_url), None)
    assert isinstance(model, AnthropicModel)  # the demo's default provider
    client = model.client
    assert isinstance(client, anthropic.AsyncAnthropic)
    try:
        agent = build_agent(model, store)
        await setup_tables(agent, store)
        streaming = Streaming(runs)

        async def follow(run: AgentRun) -> None:
            sent: list[bytes] = []
            async for batch in batches(run):
                sent.append(b"".join([sse(name, data) for name, data in batch]))
                streaming.saw(len(sent))
            assert run.result().status == "cancelled", describe(run.result())

        started = [agent.start(PROMPT, owner="bench") for _ in range(runs)]
        followers = [asyncio.create_task(follow(run)) for run in started]

        def stop() -> None:
            for run in started:
                run.run.cancel(STOP)

        cpu = await asyncio.wait_for(_stop_all_at_once(followers, streaming, stop), SECONDS)
        return cpu / runs * 1e6
    finally:
        await client.close()
        await store.aclose()
        folder.release()


async def naive_unwind(model_url: str, runs: int) -> float:
    """CPU (us) per stopped run of the naive agent loop."""
    client = anthropic.AsyncAnthropic(base_url=model_url, api_key="local")
    streaming = Streaming(runs)

    async def follow(events: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        sent: list[str] = []
        while True:
            name, data = await events.get()
            sent.append(event_text(name, data))
            streaming.saw(len(sent))
            if name == "done":
                assert data["status"] == "cancelled", data
                return

    queues: list[asyncio.Queue[tuple[str, dict[str, Any]]]] = [asyncio.Queue() for _ in range(runs)]
    tasks = [asyncio.create_task(run_agent(client, PROMPT, q, _no_note)) for q in queues]
    followers = [asyncio.create_task(follow(q)) for q in queues]

    def stop() -> None:
        for task in tasks:
            task.cancel()

    try:
        cpu = await asyncio.wait_for(_stop_all_at_once(followers, streaming, stop), SECONDS)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    return cpu / runs * 1e6


def _no_note(text: str) -> None:
    raise AssertionError("the prompt asks for no tool")


def measure(model_url: str, runs: int, repeats: int) -> list[Row]:
    """Both peers, interleaved, each in a fresh event loop; medians of ``repeats``."""
    peers: dict[str, Callable[[str, int], Coroutine[Any, Any, float]]] = {
        "cancelkit": cancelkit_unwind,
        "naive": naive_unwind,
    }
    return interleaved(
        f"{runs} runs stopped at once: CPU per run until its final event",
        {
            peer: functools.partial(_in_a_fresh_loop, unwind, model_url, runs)
            for peer, unwind in peers.items()
        },
        unit="us",
        repeats=repeats,
        baseline="naive",
    )


def _in_a_fresh_loop(
    unwind: Callable[[str, int], Coroutine[Any, Any, float]], model_url: str, runs: int
) -> float:
    return asyncio.run(unwind(model_url, runs))


def main() -> None:
    """Parse the flags, start the model server, measure, print and save the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="runs stopped at once")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per peer")
    parser.add_argument("--quick", action="store_true", help="10 runs, 2 repeats")
    args = parser.parse_args()
    runs, repeats = (10, 2) if args.quick else (args.runs, args.repeats)
    if runs < 1 or repeats < 1:
        parser.error("--runs and --repeats must be positive")
    model_url, model = start_model()
    try:
        rows = measure(model_url, runs, repeats)
    finally:
        model.stop()
    report("unwind", rows)


if __name__ == "__main__":
    main()
