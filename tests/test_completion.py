"""Completion: a one-shot "it has ended", made by its first waiter, set without a lock."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from cancelkit import Background, Runs, SyncRun
from cancelkit._completion import Completion, completion_of, set_ended

from .helpers import released

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

    results: list[object] = []
    async with Background("completion-test") as background:
        task = background.spawn(released(release))

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

    async with Background("shielded-test") as background:
        task = background.spawn(released(release))
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

    runs = Runs()
    async with Background("failing-callback") as background:
        task = background.spawn(released(release))
        run = runs.start(released, release)
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


@pytest.mark.parametrize("waiter_backend", BACKENDS)
def test_runs_of_an_asyncio_loop_moved_to_another_thread_wake_waiters_in_the_first(
    waiter_backend: str,
) -> None:
    # A loop prepared in the main thread (run_until_complete), then run by a
    # worker's run_forever: a run started before the move ends in the worker, one
    # started after it too. A waiter on another loop in the first thread is woken
    # by both, in time (the first one's end comes from the other thread).
    import asyncio  # noqa: PLC0415

    runs = Runs()
    loop = asyncio.new_event_loop()

    async def start(delay: float) -> Any:
        return runs.start(asyncio.sleep, delay, "v")

    before = loop.run_until_complete(start(0.3))
    worker = threading.Thread(target=loop.run_forever)
    worker.start()
    try:
        after = asyncio.run_coroutine_threadsafe(start(0.3), loop).result(5)
        woken: list[str] = []

        async def wait_both() -> None:
            with anyio.move_on_after(10):
                for run in (before, after):
                    woken.append((await run.wait()).value)

        started = time.monotonic()
        anyio.run(wait_both, backend=waiter_backend)
        assert woken == ["v", "v"]
        # Woken by the runs' ends (0.3 s), not by the first thing that happens to
        # wake the waiting loop: a wake-up set on its future from the other thread
        # without waking the loop would come only at the 10 s bound.
        assert time.monotonic() - started < 5
    finally:
        loop.call_soon_threadsafe(loop.stop)
        worker.join(5)
        loop.close()


class _FailingEnd:
    """A registry backend whose note of a run's end fails (a full queue, say)."""

    worker = "w"

    async def open(self, local: object) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def register(self, run_id: str, owner: str | None) -> None:
        return None

    def note_cancelled(self, run_id: str, reason: object) -> None:
        pass

    def note_ended(self, run_id: str, status: str, reason: object) -> None:
        raise RuntimeError("the backend's queue is full")

    async def cancel(self, run_id: str, reason: object, owner: str | None) -> bool:
        return False

    async def info(self, run_id: str, owner: str | None) -> None:
        return None


def test_a_run_whose_end_fails_to_reach_the_backend_still_wakes_its_waiters() -> None:
    import asyncio  # noqa: PLC0415

    reported: list[object] = []

    async def main() -> str:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: reported.append(context.get("exception"))
        )
        async with Runs(backend=_FailingEnd()) as runs:
            run = runs.start(asyncio.sleep, 0.01, "v")
            with anyio.fail_after(5):
                return str((await run.wait()).value)

    assert asyncio.run(main()) == "v"
    assert [repr(error) for error in reported] == ['RuntimeError("the backend\'s queue is full")']


@pytest.mark.anyio
async def test_a_done_callback_raising_a_base_exception_keeps_no_waiter_from_waking() -> None:
    import asyncio  # noqa: PLC0415

    def interrupting(_ended: object) -> None:
        raise asyncio.CancelledError  # a callback awaiting nothing, yet: a BaseException

    after: list[str] = []
    runs = Runs()
    release = anyio.Event()

    run = runs.start(released, release)
    run.add_done_callback(interrupting)
    run.add_done_callback(lambda ended: after.append(ended.status))
    got: list[object] = []

    async def wait_run() -> None:
        got.append((await run.wait()).value)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(wait_run)
            await anyio.sleep(0.01)
            release.set()
    assert got == ["value"]
    assert after == ["completed"]


def test_a_stop_from_the_thread_a_loop_moved_away_from_reaches_its_run_at_once() -> None:
    # The loop was prepared in this thread, then moved to a worker's run_forever and
    # left idle there (its only task sleeps for an hour). A Stop from this thread
    # must wake the loop, not wait for something else to.
    import asyncio  # noqa: PLC0415

    runs = Runs()
    loop = asyncio.new_event_loop()

    async def start() -> Any:
        return runs.start(asyncio.sleep, 3600)

    run = loop.run_until_complete(start())
    worker = threading.Thread(target=loop.run_forever)
    worker.start()
    try:
        time.sleep(0.05)  # the loop is idle in the worker
        started = time.monotonic()
        assert run.cancel()

        async def wait() -> str:
            with anyio.move_on_after(10):
                return str((await run.wait()).status)
            return "not ended"

        assert anyio.run(wait) == "cancelled"
        assert time.monotonic() - started < 5  # not at the 10 s bound
    finally:
        loop.call_soon_threadsafe(loop.stop)
        worker.join(5)
        loop.close()


def test_a_stop_from_a_loops_old_thread_during_its_held_cancels_is_not_lost() -> None:
    # The loop was prepared in thread `old`, then run by this thread, whose task
    # holds its cancels (as Runs.shutdown does). A Stop from `old` (the thread the
    # loop's caller still names) that reads the held list just before the block ends
    # must not be appended to it after it was carried out: it is queued instead.
    import asyncio  # noqa: PLC0415
    import inspect  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from cancelkit._backends import loop_caller  # noqa: PLC0415
    from cancelkit._loop_caller import LoopCaller  # noqa: PLC0415

    runs = Runs()
    loop = asyncio.new_event_loop()
    lines, first = inspect.getsourcelines(LoopCaller.cancel_many)
    after_reading = first + next(i for i, line in enumerate(lines) if "= self._held" in line) + 1
    read, block_ended, go = threading.Event(), threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def pause_after_reading_held(frame: Any, event: str, _arg: object) -> Any:
        if frame.f_code is not LoopCaller.cancel_many.__code__:
            return None

        def on_line(frame: Any, event: str, _arg: object) -> Any:
            if event == "line" and frame.f_lineno == after_reading and not read.is_set():
                read.set()
                block_ended.wait(5)
            return on_line

        return on_line

    def old() -> None:
        async def start() -> Any:
            return runs.start(asyncio.sleep, 3600)

        box["run"] = loop.run_until_complete(start())
        go.wait(5)
        sys.settrace(pause_after_reading_held)
        try:
            box["cancelled"] = box["run"].cancel()
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=old)
    thread.start()
    try:

        async def hold_while_the_stop_lands() -> str:
            caller = loop_caller()
            assert caller.thread == thread.ident  # no task started here: still the old
            go.set()
            with caller.holding():
                assert read.wait(5)  # the Stop has read the held list
            block_ended.set()
            await box["run"].wait_shielded(5)
            return str(box["run"].status)

        while "run" not in box:
            time.sleep(0.01)
        assert loop.run_until_complete(hold_while_the_stop_lands()) == "cancelled"
        thread.join(5)  # its cancel() may return only after the run has ended
        assert box["cancelled"] is True
    finally:
        block_ended.set()
        thread.join(5)
        loop.run_until_complete(runs.shutdown(1))
        loop.close()
