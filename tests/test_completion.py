"""Completion: a one-shot "it has ended", made by its first waiter, set without a lock."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from cancelkit import Background, Runs, SyncRun
from cancelkit._completion import Completion, completion_of, set_ended

if TYPE_CHECKING:
    from collections.abc import Callable

BACKENDS = ("asyncio", "trio")


class _Thing:
    """An ending as a task or run is one: done() and a completion made on demand."""

    def __init__(self) -> None:
        self._ended: Completion | None = None
        self._home: int | None = None  # ends in any thread: waiters use the completion
        self._done_callbacks: list[Callable[[Any], object]] | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def end(self) -> None:
        self._done = True
        set_ended(self)


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_from_another_thread_racing_a_new_waiter_wakes_it(backend: str) -> None:
    async def main() -> None:
        for _ in range(300):
            completion = Completion()
            setter = threading.Thread(target=completion.set)
            setter.start()  # races the waiter being added below
            with anyio.fail_after(5):
                await completion.wait()
            setter.join()
            assert completion.is_set

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ending_in_another_thread_racing_its_first_waiter_wakes_it(backend: str) -> None:
    async def main() -> None:
        for _ in range(300):
            thing = _Thing()
            ender = threading.Thread(target=thing.end)
            ender.start()  # races the completion being made by the waiter below
            with anyio.fail_after(5):
                await completion_of(thing).wait()
            ender.join()

    anyio.run(main, backend=backend)


@pytest.mark.anyio
async def test_nothing_is_made_until_somebody_waits() -> None:
    thing = _Thing()
    thing.end()
    assert thing._ended is None
    with anyio.fail_after(1):
        await completion_of(thing).wait()  # made already set: it has ended
    assert thing._ended is not None
    assert await completion_of(thing).wait_shielded(0) is True


def _finish_while_two_loops_wait(sync_run: SyncRun[str]) -> dict[str, object]:
    ready = threading.Barrier(3)
    values: dict[str, object] = {}

    def wait_on(backend: str) -> None:
        async def main() -> None:
            ready.wait()
            with anyio.fail_after(5):
                outcome = await sync_run.run.wait()
            values[backend] = outcome.value

        anyio.run(main, backend=backend)

    threads = [threading.Thread(target=wait_on, args=(b,)) for b in BACKENDS]
    for thread in threads:
        thread.start()
    ready.wait()
    sync_run.finish("value")
    for thread in threads:
        thread.join(10)
    return values


def test_a_sync_run_awaited_from_two_loops_in_two_threads_wakes_both() -> None:
    """A sync run's end is set by the thread that drives it; waiters on two loops
    make its completion at the same moment, each is woken on its own loop."""
    runs = Runs()
    for _ in range(20):
        values = _finish_while_two_loops_wait(runs.start_sync())
        assert values == {"asyncio": "value", "trio": "value"}


@pytest.mark.anyio
async def test_a_task_awaited_in_its_own_thread_wakes_its_waiters_and_keeps_no_quitter() -> None:
    # wait()/result() of an owned task in the thread it ends in: waiters among its
    # done callbacks; cancelled ones take theirs back, the others get the result.
    release = anyio.Event()

    async def work() -> str:
        await release.wait()
        return "value"

    results: list[object] = []
    async with Background("completion-test") as background:
        task = background.spawn(work())

        async def wait_for_result() -> None:
            results.append(await task.result())

        async with anyio.create_task_group() as quitters:
            for _ in range(3):
                quitters.start_soon(task.wait)
            await anyio.sleep(0.01)
            quitters.cancel_scope.cancel()
        assert task._done_callbacks == []
        assert task._ended is None  # nothing was made for waiters in its own thread
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(wait_for_result)
            await anyio.sleep(0.01)
            release.set()
    assert results == ["value"] * 3
    assert task._done_callbacks is None


@pytest.mark.anyio
async def test_a_shielded_wait_in_the_tasks_thread_is_bounded_holds_cancels_off_keeps_nothing() -> (
    None
):
    release = anyio.Event()

    async def work() -> str:
        await release.wait()
        return "value"

    async with Background("shielded-test") as background:
        task = background.spawn(work())
        assert await task.wait_shielded(0.01) is False  # the bound, then taken back
        assert task._done_callbacks == []
        delivered: list[str] = []
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled before the wait even starts: held off
            background.spawn(_set_after(release, 0.02))
            ended = await task.wait_shielded(5)
            delivered.append("waited")
            await anyio.lowlevel.checkpoint()  # the held-off cancel lands here
            delivered.append("not reached")
        assert ended is True
        assert delivered == ["waited"]
        assert task._done_callbacks is None
        assert await task.result() == "value"


async def _set_after(event: anyio.Event, delay: float) -> None:
    await anyio.sleep(delay)
    event.set()


@pytest.mark.anyio
async def test_a_failing_done_callback_keeps_no_waiter_from_waking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Waiters in the ending's own thread are among its done callbacks: one of the
    # user's that raises, added before them, is logged and the waiters still wake.
    def broken(_ended: object) -> None:
        raise RuntimeError("a broken done callback")

    release = anyio.Event()

    async def work() -> str:
        await release.wait()
        return "value"

    runs = Runs()
    async with Background("failing-callback") as background:
        task = background.spawn(work())
        run = runs.start(work)
        task.add_done_callback(broken)
        run.add_done_callback(broken)
        got: list[object] = []

        async def wait_task() -> None:
            got.append(await task.result())

        async def wait_run() -> None:
            got.append((await run.wait()).value)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(wait_task)
                group.start_soon(wait_run)
                await anyio.sleep(0.01)
                release.set()
    assert got == ["value", "value"]
    assert len([r for r in caplog.records if "a broken done callback" in str(r.exc_info)]) == 2
