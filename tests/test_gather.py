"""gather: order, fail-fast, timeouts, caller cancellation, bad input (both backends)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from cancelkit import CancelReason, CancelToken, RunCancelled, gather, other_errors
from cancelkit.testing import cancel_at_each_checkpoint

from .helpers import Log, no_unawaited_coroutines

pytestmark = pytest.mark.anyio


async def test_results_come_in_argument_order() -> None:
    log = Log()
    results = await gather(log.child("slow", 0.03), log.child("fast", 0), log.child("mid", 0.01))
    assert results == ["slow", "fast", "mid"]
    assert log.finished == ["fast", "mid", "slow"]


async def test_no_awaitables_gives_an_empty_list() -> None:
    assert await gather() == []


async def test_first_failure_is_raised_as_itself_and_siblings_observe_cancellation() -> None:
    log = Log()
    boom = ValueError("boom")
    with pytest.raises(ValueError, match="boom") as info:
        await gather(log.child("a", 5), log.failing("fail", 0.01, boom), log.child("b", 5))
    assert info.value is boom
    assert sorted(log.cancelled) == ["a", "b"]
    assert log.settled()


async def test_other_failures_are_kept_on_the_first() -> None:
    first, second = ValueError("first"), KeyError("second")

    async def fails_while_cancelled() -> None:
        try:
            await anyio.sleep(5)
        finally:
            raise second

    with pytest.raises(ValueError, match="first") as info:
        await gather(fails_while_cancelled(), _fail_after(0.01, first))
    assert other_errors(info.value) == (second,)
    assert any("second" in note for note in info.value.__notes__)


async def _fail_after(delay: float, error: Exception) -> None:
    await anyio.sleep(delay)
    raise error


async def test_return_exceptions_keeps_every_slot() -> None:
    error = ValueError("x")
    results = await gather(_fail_after(0, error), anyio.sleep(0.01), return_exceptions=True)
    assert results == [error, None]


@pytest.mark.parametrize("when", [0, 0.005, 0.02, 5.0])
async def test_timeout_at_every_point_of_a_childs_life(when: float) -> None:
    # The child's life: not yet started, sleeping, in its shielded cleanup, done.
    events: list[str] = []

    async def child() -> str:
        events.append("start")
        try:
            await anyio.sleep(0.01)
            events.append("slept")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.02)
            events.append("cleaned")
        return "done"

    if when >= 5:  # long after its 30 ms, however slow the machine
        assert await gather(child(), timeout=when) == ["done"]
        return
    with pytest.raises(TimeoutError):
        await gather(child(), anyio.sleep(1), timeout=when)
    assert events[-1] == "cleaned" or events == [], events  # awaited to the end


async def test_timeout_with_return_exceptions_keeps_finished_results() -> None:
    log = Log()
    results: list[Any] = await gather(
        log.child("fast", 0), log.child("slow", 5), timeout=0.02, return_exceptions=True
    )
    assert results[0] == "fast"
    assert isinstance(results[1], TimeoutError)
    assert log.cancelled == ["slow"]


async def test_timeout_without_return_exceptions_raises_after_cleanup() -> None:
    log = Log()
    with anyio.fail_after(2), pytest.raises(TimeoutError, match=r"timed out after 0\.02s"):
        await gather(log.child("fast", 0), log.child("slow", 5), timeout=0.02)
    assert log.cancelled == ["slow"]
    assert log.settled()


async def test_a_cancelled_caller_cancels_and_awaits_every_child() -> None:
    log = Log()
    with anyio.move_on_after(0.02):
        await gather(log.child("a", 5), log.child("b", 5), log.child("c", 0))
    assert sorted(log.cancelled) == ["a", "b"]
    assert log.finished == ["c"]


async def test_nested_gathers_cancelled_from_outside_leave_nothing_running() -> None:
    log = Log()

    async def inner(prefix: str) -> list[object]:
        return await gather(log.child(f"{prefix}1", 5), log.child(f"{prefix}2", 5))

    with anyio.move_on_after(0.02):
        await gather(inner("x"), inner("y"), gather(inner("z")))
    assert sorted(log.cancelled) == ["x1", "x2", "y1", "y2", "z1", "z2"]
    assert log.settled()


async def test_a_cancel_injected_at_each_await_of_a_child() -> None:
    log = Log()

    async def child(name: str) -> None:
        log.started.append(name)
        try:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            log.cancelled.append(name)
            raise
        log.finished.append(name)

    async def work() -> None:
        await gather(child("a"), child("b"))

    def check() -> None:
        assert log.settled()  # never an orphan, whichever checkpoint was cancelled

    points = await cancel_at_each_checkpoint(work, check)
    assert points >= 1
    assert log.cancelled, "some runs were cancelled mid-way"
    assert log.finished[-2:] in (["a", "b"], ["b", "a"])


async def test_a_child_stopped_by_its_token_is_a_run_cancelled_failure() -> None:
    token = CancelToken()
    token.cancel(CancelReason("budget", "spent"))

    async def tool() -> None:
        await anyio.lowlevel.checkpoint()
        token.check()

    with pytest.raises(RunCancelled) as info:
        await gather(tool())
    assert info.value.reason == CancelReason("budget", "spent")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_futures_and_tasks_are_accepted_on_asyncio() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.01, future.set_result, 7)
    task = asyncio.create_task(asyncio.sleep(0, "t"))
    assert await gather(future, task) == [7, "t"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_cancelled_from_outside_is_a_run_cancelled_failure() -> None:
    reason = CancelReason("user", "stopped by hand")
    task = asyncio.create_task(asyncio.sleep(5))
    asyncio.get_running_loop().call_later(0.01, task.cancel, reason)
    with pytest.raises(RunCancelled) as info:
        await gather(task, asyncio.sleep(5))
    assert info.value.reason is reason


async def test_a_non_awaitable_is_refused_before_anything_starts() -> None:
    log = Log()
    with no_unawaited_coroutines():
        with pytest.raises(TypeError, match=r"argument 1 is not awaitable: int"):
            await gather(log.child("a", 0), 42)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"pass the coroutine"):
            await gather(log.child("b", 0), log.child)  # type: ignore[call-overload]
    assert log.started == []


async def test_the_same_coroutine_twice_is_refused() -> None:
    with no_unawaited_coroutines():
        coro = anyio.lowlevel.checkpoint()
        with pytest.raises(TypeError, match="passed twice"):
            await gather(coro, coro)


@pytest.mark.parametrize(
    ("timeout", "error"), [(-1, ValueError), ("5", TypeError), (float("nan"), ValueError)]
)
async def test_a_bad_timeout_is_refused_without_warnings(
    timeout: Any, error: type[Exception]
) -> None:
    with no_unawaited_coroutines(), pytest.raises(error, match="timeout"):
        await gather(anyio.lowlevel.checkpoint(), timeout=timeout)


@pytest.mark.slow
async def test_ten_thousand_children() -> None:
    async def echo(i: int) -> int:
        await anyio.lowlevel.checkpoint()
        return i

    assert await gather(*(echo(i) for i in range(10_000))) == list(range(10_000))
