"""The backend split: one interface per loop, anyio's private table in one place,
and the reason carried by the loop's own cancellation."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from cancelkit import CancelReason, Run, Runs
from cancelkit._backends import current, current_backend, loop_caller

pytestmark = pytest.mark.anyio

STOP = CancelReason("user", "Stop pressed")


async def test_one_backend_per_loop(anyio_backend: str) -> None:
    assert current_backend() == anyio_backend
    assert current() is current()  # chosen once, then reused
    assert current().name == anyio_backend


def test_outside_a_loop_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="running asyncio or trio event loop"):
        current()


def test_anyio_private_task_table_is_where_cancelkit_expects_it() -> None:
    # The one use of an anyio private name: if anyio moves it, this fails first
    # (and tasks inside shielded anyio scopes would be cancelled through them).
    from anyio._backends._asyncio import _task_states  # noqa: PLC0415

    from cancelkit._backends._asyncio import task_states  # noqa: PLC0415

    assert task_states is _task_states


def test_trio_private_cancel_is_where_cancelkit_expects_it() -> None:
    # The one use of trio private names: if trio moves them, this fails first
    # (and loose tasks are cancelled through the public, slower cancel()).
    import trio  # noqa: PLC0415

    from cancelkit._backends._trio import _TrioReason  # noqa: PLC0415

    assert _TrioReason is not None
    assert callable(trio.CancelScope()._cancel)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_trio_task_cancelled_by_a_token_sees_the_reason_and_the_canceller() -> None:
    import trio  # noqa: PLC0415

    from cancelkit import Background  # noqa: PLC0415

    seen: list[str] = []

    async def idle() -> None:
        try:
            await trio.sleep(3600)
        except trio.Cancelled as cancelled:
            seen.append(str(cancelled))
            raise

    background = Background("pinned")
    for _ in range(2):
        background.spawn(idle())
    await trio.lowlevel.checkpoint()
    await background.aclose(reason=CancelReason("user", "closing now"))
    current = trio.lowlevel.current_task()
    assert len(seen) == 2
    for text in seen:
        assert "closing now" in text
        assert repr(current) in text


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancel_honours_an_anyio_shield_then_lands() -> None:
    runs = Runs()
    steps: list[str] = []
    shielded = anyio.Event()

    async def body() -> None:
        with anyio.CancelScope(shield=True):
            shielded.set()
            await anyio.sleep(0.05)  # a Stop now must wait for the shield to end
            steps.append("shield done")
        await anyio.sleep(10)
        steps.append("not reached")

    run = runs.start(body)
    await shielded.wait()
    assert run.cancel(STOP)
    assert (await run.wait()).status == "cancelled"
    assert steps == ["shield done"]


async def test_the_reason_travels_with_the_loops_own_cancellation(anyio_backend: str) -> None:
    # Before, the loop's cancellation carried no reason: code catching it could
    # not say why without the token.
    runs = Runs()
    seen: list[BaseException] = []

    async def body() -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class() as cancel:
            seen.append(cancel)
            raise

    run = runs.start(body)
    await anyio.lowlevel.checkpoint()
    assert run.cancel(STOP)
    await run.wait()
    (cancel,) = seen
    if anyio_backend == "asyncio":
        assert isinstance(cancel, asyncio.CancelledError)
        assert cancel.args == (STOP,)
    else:
        assert "user: Stop pressed" in str(cancel)


async def test_cancels_held_by_a_block_land_as_it_ends_before_any_task_steps() -> None:
    """``LoopCaller.holding()`` (``Runs.shutdown`` uses it) carries out the cancels
    made inside it as it ends: none is lost, and none is late."""
    runs = Runs()
    started = [runs.start(anyio.sleep, 3600) for _ in range(5)]
    await anyio.lowlevel.checkpoint()
    with loop_caller().holding():
        for run in started:
            assert run.cancel(STOP)
        with loop_caller().holding():  # nested: the outer block carries them out
            pass
        assert all(run.status == "cancelling" for run in started)
    with anyio.fail_after(2):
        outcomes = [await run.wait() for run in started]
    assert [outcome.status for outcome in outcomes] == ["cancelled"] * 5
    assert all(outcome.reason is STOP for outcome in outcomes)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_finished_loop_is_freed_with_everything_cancelkit_kept_for_it(backend: str) -> None:
    """A program that runs loop after loop (``asyncio.run`` per request, a test
    suite) keeps none of them: a loop's caller and its shared deadline timer go
    with it, after runs, owned work, shielded waits and cross-thread Stops."""
    import trio  # noqa: PLC0415

    from cancelkit import Background, Runs, to_thread  # noqa: PLC0415

    loops: list[weakref.ref[object]] = []

    async def main() -> None:
        if backend == "asyncio":
            loops.append(weakref.ref(asyncio.get_running_loop()))
        else:
            loops.append(weakref.ref(trio.lowlevel.current_trio_token()))
        runs = Runs()
        run = runs.start(anyio.sleep, 30)
        await anyio.lowlevel.checkpoint()
        stopper = threading.Thread(target=run.cancel)  # queued to the loop
        stopper.start()
        await run.wait()
        stopper.join()
        background = Background("leak check")
        background.spawn(anyio.sleep(30))
        await background.aclose(grace=30)  # a shielded wait, bounded, ended early
        await to_thread(sum, [1, 2])
        runs.start(anyio.sleep, 30)
        await runs.shutdown(grace=30)

    for _ in range(3):
        anyio.run(main, backend=backend)
    gc.collect()
    assert [ref for ref in loops if ref() is not None] == []


def test_a_loop_closed_with_a_stop_still_queued_is_freed() -> None:
    """A Stop from another thread, queued after the loop's last iteration and before
    it closed: closing drops the drain that would have carried it out, and the task
    it names refers to the loop. The loop is freed all the same."""
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # its task dies pending
    ref = weakref.ref(loop)

    async def start(runs: Runs) -> Run[None]:
        run = runs.start(anyio.sleep, 30)
        await asyncio.sleep(0)
        return run

    run = loop.run_until_complete(start(Runs()))
    stopper = threading.Thread(target=run.cancel)
    stopper.start()
    stopper.join()
    loop.close()
    del loop, run
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_run_asks_asyncio_for_its_running_loop_once_to_start_and_once_to_wait() -> None:
    # On asyncio every lookup of the running loop is a getpid() system call
    # (CPython checks the loop was not inherited through a fork): about 0.15 us
    # each, invisible to an instruction count, and a run used to make six.
    import sys  # noqa: PLC0415

    lookups: list[str] = []

    def count(frame: object, event: str, arg: object) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") in (
            "get_running_loop",
            "_get_running_loop",
            "current_task",
            "get_event_loop",
        ):
            module = getattr(frame, "f_globals", {}).get("__name__", "")
            if module.startswith("cancelkit"):
                lookups.append(f"{module}:{getattr(frame, 'f_code').co_name}")  # noqa: B009

    runs = Runs()
    never = anyio.Event()
    sys.setprofile(count)
    try:
        run = runs.start(never.wait)
        await asyncio.sleep(0)
        run.cancel(STOP)
        outcome = await run.wait()
    finally:
        sys.setprofile(None)
    assert outcome.status == "cancelled"
    assert len(lookups) == 2, lookups  # start, wait; the cancel from a task asks none


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_loops_caller_is_made_once_for_the_runs_that_follow_each_other_on_it(
    backend: str,
) -> None:
    # Each run's token holds the caller only until the run is stopped; the caller
    # keeps itself until the collector finds it unused, so runs one after the
    # other on a (fresh) loop do not make one each.
    from cancelkit._loop_caller import LoopCaller  # noqa: PLC0415

    made: list[object] = []
    original = LoopCaller.__init__

    def counting(self: LoopCaller[Any], *args: Any) -> None:
        made.append(type(self))
        original(self, *args)

    async def one_after_the_other() -> None:
        runs = Runs()
        for _ in range(50):
            run = runs.start(anyio.sleep, 3600)
            await anyio.lowlevel.checkpoint()
            run.cancel(STOP)
            await run.wait()

    gc.disable()
    LoopCaller.__init__ = counting  # type: ignore[assignment, method-assign]
    try:
        anyio.run(one_after_the_other, backend=backend)
    finally:
        LoopCaller.__init__ = original  # type: ignore[method-assign]
        gc.enable()
    assert len(made) == 1
