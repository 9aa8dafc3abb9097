"""adopt_tasks(): no task started inside the block outlives it."""

from __future__ import annotations

import asyncio

import pytest

import cancelkit

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio has no loose tasks to adopt
async def test_tasks_started_while_the_adopted_ones_unwind_are_adopted_and_awaited() -> None:
    # openai-agents closes a cancelled model stream in a task it starts as it unwinds
    # (ensure_future(aclose)), and starts a cleanup task from a done callback.
    cleaned: list[str] = []
    started: list[asyncio.Future[None]] = []

    async def cleanup(name: str) -> None:
        await asyncio.sleep(0.01)
        cleaned.append(name)

    async def worker() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            started.append(asyncio.ensure_future(cleanup("close in the background")))
            raise

    before = set(asyncio.all_tasks())

    def clean_up_when_done(_task: asyncio.Task[None]) -> None:
        started.append(asyncio.ensure_future(cleanup("done callback")))

    async with cancelkit.adopt_tasks() as adopted:
        task = asyncio.create_task(worker())
        task.add_done_callback(clean_up_when_done)
        await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == []
    assert sorted(cleaned) == ["close in the background", "done callback"]  # not cut short
    assert adopted.count == 3
    assert adopted.stragglers == []
