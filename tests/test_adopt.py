"""``adopt_tasks``: no task that other code starts inside the block outlives it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import pytest

from cancelkit import CancelReason, Runs, adopt_tasks

from .helpers import wait_until

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "Stop pressed")


def others() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_tasks_created_inside_end_with_the_block_grandchildren_too() -> None:
    seen: list[str] = []

    async def grandchild() -> None:
        try:
            await anyio.sleep(60)
        finally:
            seen.append("grandchild ended")

    async def framework_task() -> None:
        asyncio.get_running_loop().create_task(grandchild(), name="grandchild")
        await anyio.sleep(60)

    before = others()
    outside = asyncio.get_running_loop().create_task(anyio.sleep(60), name="outside")
    async with adopt_tasks() as adopted:
        asyncio.create_task(framework_task(), name="framework")  # noqa: RUF006 - the point
        await wait_until(lambda: adopted.count == 2)
    assert adopted.running == set()
    assert adopted.stragglers == []
    assert seen == ["grandchild ended"]
    assert others() - before == {outside}  # what was started outside the block is not ours
    outside.cancel()
    await asyncio.gather(outside, return_exceptions=True)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stopped_run_cancels_what_its_framework_left_with_its_reason() -> None:
    reasons: list[object] = []

    async def tool_task() -> None:
        try:
            await anyio.sleep(60)
        except asyncio.CancelledError as cancelled:
            reasons.extend(cancelled.args)
            raise

    async def framework_run() -> None:
        async with adopt_tasks():
            asyncio.get_running_loop().create_task(tool_task(), name="tool")
            await anyio.sleep(60)

    before = others()
    run = Runs().start(framework_run)
    await wait_until(lambda: len(others() - before) >= 2)
    run.cancel(USER)
    outcome = await run.wait()
    assert outcome.status == "cancelled"
    assert reasons == [USER]
    assert others() - before == set()  # the run reports done with nothing left
    tasks = [layer for layer in outcome.receipt.layers if layer.layer == "task"]
    assert [(task.name, task.outcome, task.detail) for task in tasks] == [
        ("tool", "cancelled", "adopted")
    ]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_failed_adopted_task_is_reported_never_unretrieved() -> None:
    async def broken() -> None:
        raise KeyError("boom")

    async def framework_run() -> None:
        async with adopt_tasks():
            asyncio.get_running_loop().create_task(broken(), name="broken")
            await anyio.sleep(0.01)

    outcome = await Runs().start(framework_run).wait()
    tasks = [layer for layer in outcome.receipt.layers if layer.layer == "task"]
    assert [(task.name, task.outcome) for task in tasks] == [("broken", "failed")]
    assert "KeyError" in tasks[0].detail


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_existing_task_factory_is_chained_and_tasks_after_the_block_are_not_adopted() -> (
    None
):
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__name__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def inside() -> None:
        return None

    async def after() -> None:
        return None

    loop.set_task_factory(factory)
    try:
        async with adopt_tasks() as adopted:
            await loop.create_task(inside())
        await loop.create_task(after())
        assert "inside" in made
        assert "after" in made  # the user's factory still sees every task
        assert adopted.count == 1
    finally:
        loop.set_task_factory(None)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_that_refuses_to_stop_is_named_after_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # refuses

    async with adopt_tasks(grace=0.05) as adopted:
        task = asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
    assert adopted.stragglers == ["stubborn"]
    assert "stubborn" in caplog.text
    assert any(record.levelno == logging.WARNING for record in caplog.records)
    release.set()
    await task


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

    async with adopt_tasks() as adopted:
        task = asyncio.create_task(worker())
        task.add_done_callback(clean_up_when_done)
        await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == []
    assert sorted(cleaned) == ["close in the background", "done callback"]  # not cut short
    assert adopted.count == 3
    assert adopted.stragglers == []


async def test_on_trio_and_asyncio_the_block_is_transparent() -> None:
    async with adopt_tasks() as adopted, anyio.create_task_group() as group:
        group.start_soon(anyio.sleep, 0)
    assert adopted.stragglers == []


def test_a_bad_grace_is_refused() -> None:
    async def enter() -> None:
        async with adopt_tasks(grace=float("nan")):
            pass

    with pytest.raises(ValueError, match="grace"):
        anyio.run(enter)
