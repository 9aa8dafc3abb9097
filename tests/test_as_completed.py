"""as_completed: completion order, and leaving the block cancels the rest."""

from __future__ import annotations

import anyio
import pytest

from cancelkit import AsCompleted, as_completed

from .helpers import Log, no_unawaited_coroutines

pytestmark = pytest.mark.anyio


async def test_results_arrive_in_completion_order() -> None:
    log = Log()
    seen = []
    async with as_completed(
        log.child("c", 0.03), log.child("a", 0), log.child("b", 0.01)
    ) as results:
        async for result in results:
            seen.append(result)
    assert seen == ["a", "b", "c"]


async def test_breaking_out_cancels_the_rest_in_the_same_task() -> None:
    log = Log()
    async with as_completed(
        log.child("fast", 0), log.child("slow", 5), log.child("slower", 5)
    ) as results:
        async for result in results:
            assert result == "fast"
            break
    assert sorted(log.cancelled) == ["slow", "slower"]
    assert log.settled()


async def test_a_body_error_is_raised_as_itself_after_cleanup() -> None:
    log = Log()
    with pytest.raises(KeyError, match="body"):
        async with as_completed(log.child("a", 5)):
            raise KeyError("body")
    assert log.cancelled == ["a"]


async def test_a_child_failure_is_raised_from_the_iteration() -> None:
    log = Log()
    error = ValueError("child")
    with pytest.raises(ValueError, match="child") as info:
        async with as_completed(log.failing("fail", 0, error), log.child("slow", 5)) as results:
            async for _ in results:
                pass
    assert info.value is error
    assert log.cancelled == ["slow"]


async def test_timeout_is_raised_by_the_iteration() -> None:
    log = Log()
    seen = []
    with pytest.raises(TimeoutError):
        async with as_completed(log.child("a", 0), log.child("b", 5), timeout=0.02) as results:
            async for result in results:
                seen.append(result)
    assert seen == ["a"]
    assert log.cancelled == ["b"]


async def test_a_cancelled_caller_cancels_the_children() -> None:
    log = Log()
    with anyio.move_on_after(0.02):
        async with as_completed(log.child("a", 5), log.child("b", 5)) as results:
            async for _ in results:
                pass
    assert sorted(log.cancelled) == ["a", "b"]


async def test_iterating_outside_the_block_is_an_error() -> None:
    block: AsCompleted[object] = as_completed()
    with pytest.raises(RuntimeError, match="inside its `async with`"):
        await block.__anext__()


async def test_bad_input_is_refused_before_anything_starts() -> None:
    log = Log()
    with no_unawaited_coroutines(), pytest.raises(TypeError, match="not awaitable"):
        as_completed(log.child("a", 0), "x")  # type: ignore[arg-type]
    assert log.started == []
