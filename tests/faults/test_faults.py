"""Faults injected mid-run: each asserts the outcome is reported as it happened, no
write is half-done, and nothing (process, thread, task) is left behind.

The orphan-detecting plugin checks tasks and threads after every test; processes
are checked here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import anthropic
import anyio
import pytest

from cancelkit import CancelReason, Runs, thread_stats, to_thread, transaction
from cancelkit._threads import MAX_WORKERS
from cancelkit.agent import Agent, tool
from cancelkit.llm import AnthropicModel, TextDelta

from ..helpers import run_scenario, wait_until

if TYPE_CHECKING:
    from cancelkit.stores import SQLiteStore

    from .conftest import ModelProcess

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent.parent
STOP = CancelReason("user", "Stop pressed")


async def ledger(store: SQLiteStore, run_id: str) -> tuple[str | None, int]:
    """The run's ledger status and how many replies it wrote."""
    state = await store.state(run_id)
    replies = await store.execute(
        "SELECT count(*) FROM cancelkit_replies WHERE run_id = ?", (run_id,)
    )
    return (state.status if state else None), replies[0][0]


async def test_the_model_process_killed_mid_stream_fails_the_run_with_a_clear_reason(
    model_process: ModelProcess, sqlite_store: SQLiteStore
) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=model_process.base_url, api_key="local", max_retries=0
    )
    agent = Agent(AnthropicModel(client, "local"), store=sqlite_store, max_tokens=4000)
    await agent.setup()  # the agent's own table
    run = agent.start("Tell me everything [[tokens:3000]]")
    async with contextlib.aclosing(run.follow()) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                break  # the stream is flowing: now the provider dies
    os.kill(model_process.process.pid, signal.SIGKILL)
    model_process.process.wait(10)
    with anyio.fail_after(30):
        outcome = await run.run.wait()
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert outcome.reason.kind == "error"
    assert "Connection" in outcome.reason.message or "connection" in outcome.reason.message
    assert run.run.cancel(STOP) is False  # it has ended: a late Stop changes nothing
    assert await ledger(sqlite_store, run.id) == ("failed", 0)  # no reply written
    assert run.output_tokens > 0  # the usage of the cut-off answer is kept (estimated)
    await client.close()


async def test_a_commit_stalled_past_its_timeout_is_reported_as_it_ended(
    sqlite_store: SQLiteStore,
) -> None:
    # The commit overruns: it is interrupted, rolled back, and the run, the
    # transaction and the ledger all say failed; a Stop during it says False.
    await sqlite_store.execute("CREATE TABLE notes (run_id TEXT, body TEXT)")
    runs = Runs()
    txs = []

    async def body() -> None:
        async with transaction(sqlite_store, "stalled", commit_timeout=0.2) as tx:
            txs.append(tx)
            tx.insert("notes", {"run_id": "stalled", "body": "never"})
            tx.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                " WHERE x < 100000000) SELECT count(*) FROM c"
            )

    run = runs.start(body, run_id="stalled")
    await wait_until(lambda: (bool(txs) and txs[0].outcome != "open") or run.done())
    outcome = await run.wait()
    assert outcome.status == "failed"
    assert isinstance(outcome.error, TimeoutError)
    assert txs[0].outcome == "failed"
    assert (await sqlite_store.state("stalled")).status == "failed"  # type: ignore[union-attr]
    assert await sqlite_store.execute("SELECT count(*) FROM notes") == [(0,)]


async def test_a_stop_while_the_tool_pool_is_exhausted_withdraws_the_queued_calls(
    tmp_path: Path,
) -> None:
    # Every worker thread is taken by other work; the run's own sync tool calls
    # queue. Stop: the run ends cancelled at once and its queued calls never run.
    release = threading.Event()
    ran: list[str] = []

    @tool
    def record(note: str) -> str:
        """Record a note (sync)."""
        ran.append(note)
        return "recorded"

    runs = Runs()

    async def run_body() -> None:
        async with anyio.create_task_group() as group:
            for index in range(5):
                group.start_soon(to_thread, record.fn, f"note {index}")

    running: list[int] = []

    def occupy() -> None:
        running.append(1)
        release.wait(20)

    async with anyio.create_task_group() as others:
        for _ in range(MAX_WORKERS):
            others.start_soon(to_thread, occupy)
        await wait_until(lambda: len(running) == MAX_WORKERS)  # every worker taken
        run = runs.start(run_body)
        await wait_until(lambda: thread_stats()["queued"] >= 5)
        assert run.cancel(STOP)
        with anyio.fail_after(5):
            outcome = await run.wait()
        assert outcome.status == "cancelled"
        assert outcome.reason == STOP
        assert thread_stats()["queued"] == 0  # withdrawn, not left to run later
        release.set()
    await to_thread(lambda: None)
    assert ran == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_signals_arriving_during_cancel_never_deadlock_or_misreport(backend: str) -> None:
    run_scenario("signal_storm", backend)
