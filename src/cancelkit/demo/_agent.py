"""The demo's agent: three tools of the three kinds, a sub-agent, and a store.

Each tool shows one way a Stop arrives: an async tool is cancelled at its next
await, a sync tool in a worker thread sees its token (``current_token().check()``),
and a write is staged in the run's transaction, so it lands only if the run
completes. The research sub-agent runs as a child run, stopped with its parent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from .. import current_token
from ..agent import Agent, current_transaction, tool

if TYPE_CHECKING:
    from .. import Runs
    from ..llm import Model
    from ..stores import SQLiteStore

__all__ = ("build_agent", "setup_tables")

SYSTEM = "You are a research assistant. Use the tools, then answer."


@tool
async def search_notes(query: str) -> str:
    """Search the team's notes (an async tool: cancelled at its next await)."""
    for _ in range(20):
        await anyio.sleep(0.1)
    return f"3 notes mention {query!r}"


@tool
def crunch_numbers(n: int) -> str:
    """Crunch numbers (a sync tool in a worker thread: it checks its token)."""
    token = current_token()
    total = 0
    for step in range(n):
        token.check()  # raises Cancelled once the run is stopped
        time.sleep(0.01)
        total += step
    return f"crunched {n} numbers: {total}"


@tool
async def save_note(text: str) -> str:
    """Save a note (staged in the run's transaction: written only if the run completes)."""
    tx = current_transaction()
    if tx is not None:
        tx.insert("demo_notes", {"run_id": tx.run_id, "text": text})
    return "saved"


def build_agent(model: Model, store: SQLiteStore, runs: Runs | None = None) -> Agent:
    """The demo's agent: three tools and a research sub-agent, writing to ``store``,
    its runs in ``runs`` (with several workers, a registry shared through Redis)."""
    researcher = Agent(model, tools=[search_notes], system="You research one question.")
    agent = Agent(
        model,
        tools=[
            search_notes,
            crunch_numbers,
            save_note,
            researcher.as_tool("researcher", "Delegate a question"),
        ],
        system=SYSTEM,
        store=store,
        max_tokens=2048,
        runs=runs,
    )
    return agent


async def setup_tables(agent: Agent, store: SQLiteStore) -> None:
    """Create every table the demo writes: the store's, the agent's, the notes."""
    await store.setup()
    await agent.setup()
    await store.execute("CREATE TABLE IF NOT EXISTS demo_notes (run_id TEXT, text TEXT)")
