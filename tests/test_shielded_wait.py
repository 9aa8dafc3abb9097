"""A waiter's shielded wait: bounded by its own deadline, deaf to outer cancellation.

On asyncio every shielded wait of a loop shares one timer (``_asyncio_deadlines``);
on trio one scope is both the shield and the bound. These tests hold both to the
contract: the bound is kept, whatever other waits come and go, and a cancellation
that arrives meanwhile is delivered after, never lost.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from cancelkit._backends import make_waiter
from cancelkit._backends._asyncio_deadlines import _keepers


@pytest.mark.anyio
async def test_an_unset_wait_ends_at_its_bound_not_before() -> None:
    waiter = make_waiter()
    start = time.monotonic()
    assert await waiter.wait_shielded(0.05) is False
    assert time.monotonic() - start >= 0.05 - 0.005


@pytest.mark.anyio
async def test_a_set_wait_ends_at_once_with_true() -> None:
    waiter = make_waiter()

    async def set_soon() -> None:
        await anyio.sleep(0.01)
        waiter.set()

    async with anyio.create_task_group() as group:
        group.start_soon(set_soon)
        with anyio.fail_after(5):
            assert await waiter.wait_shielded(30) is True


@pytest.mark.anyio
async def test_outer_cancellation_waits_for_the_bound_then_lands() -> None:
    waiter = make_waiter()
    reached_bound = False
    with anyio.CancelScope() as scope:
        scope.cancel()  # already cancelled when the wait starts
        assert await waiter.wait_shielded(0.05) is False
        reached_bound = True
        await anyio.lowlevel.checkpoint()  # the held cancellation is delivered here
        pytest.fail("the cancellation was lost")
    assert reached_bound
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_a_shorter_wait_that_starts_later_keeps_its_own_bound() -> None:
    """Waits that overlap, the later with the earlier deadline: each ends at its own."""
    ended: dict[str, float] = {}
    start = time.monotonic()

    async def wait(name: str, bound: float) -> None:
        assert await make_waiter().wait_shielded(bound) is False
        ended[name] = time.monotonic() - start

    async with anyio.create_task_group() as group:
        group.start_soon(wait, "long", 1.0)
        await anyio.sleep(0.01)
        group.start_soon(wait, "short", 0.05)
    assert ended["short"] < ended["long"]
    assert ended["short"] < 0.9
    assert ended["long"] >= 1.0 - 0.005


def test_waits_that_end_early_leave_the_shared_timer_bounded() -> None:
    """Ten thousand waits, each bounded at 60 s and each set at once: the loop's
    deadline heap is pruned of them and stays small; a wait with no bound keeps
    nothing at all."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for _ in range(10_000):
            waiter = make_waiter()
            loop.call_soon(waiter.set)
            assert await waiter.wait_shielded(60) is True
        size = len(_keepers.get(loop)._heap)
        waiter = make_waiter()
        loop.call_soon(waiter.set)
        assert await waiter.wait_shielded(float("inf")) is True
        assert len(_keepers.get(loop)._heap) == size
        return size

    assert anyio.run(main, backend="asyncio") <= 128


def test_a_closed_loop_drops_its_deadlines() -> None:
    async def main() -> None:
        waiter = make_waiter()
        asyncio.get_running_loop().call_soon(waiter.set)
        await waiter.wait_shielded(60)

    before = len(_keepers)
    for _ in range(3):
        anyio.run(main, backend="asyncio")
    assert len(_keepers) <= before + 1  # the last loop may still be remembered


@pytest.mark.anyio
async def test_many_overlapping_waits_each_keep_their_own_bound() -> None:
    """Two hundred waits with bounds in every order, some set early (from other
    threads), some with their task cancelled meanwhile: each returns True exactly
    when it was set, never before its bound when it was not, and a cancellation
    that came meanwhile is delivered at the next await, never lost."""
    rng = random.Random(7)
    results: list[tuple[float, float, bool, bool]] = []
    lost: list[float] = []

    async def cancel_later(delay: float, scope: anyio.CancelScope) -> None:
        await anyio.sleep(delay)
        scope.cancel()

    async def one(
        group: anyio.abc.TaskGroup, bound: float, set_after: float | None, cancel: float | None
    ) -> None:
        waiter = make_waiter()
        start = time.monotonic()
        with anyio.CancelScope() as scope:
            if set_after is not None:
                timer = threading.Timer(set_after, waiter.set)  # set() is safe anywhere
                timer.daemon = True
                timer.start()
            if cancel is not None:
                group.start_soon(cancel_later, cancel, scope)
            result = await waiter.wait_shielded(bound)
            results.append((bound, time.monotonic() - start, result, set_after is not None))
            cancelled_meanwhile = scope.cancel_called
            await anyio.lowlevel.checkpoint()
            if cancelled_meanwhile:
                lost.append(bound)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for _ in range(200):
                bound = rng.uniform(0, 0.3)
                set_after = rng.uniform(0, 0.4) if rng.random() < 0.5 else None
                cancel = rng.uniform(0, 0.3) if rng.random() < 0.3 else None
                group.start_soon(one, group, bound, set_after, cancel)
    assert len(results) == 200
    assert lost == []
    for bound, elapsed, result, was_set in results:
        if result:
            assert was_set  # True only for a wait that was set
        else:
            assert elapsed >= bound - 0.002  # an unset wait ran to its bound
