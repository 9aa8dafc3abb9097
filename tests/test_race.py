"""race: first success wins, the rest are cancelled and awaited."""

from __future__ import annotations

import anyio
import pytest

from cancelkit import race

from .helpers import Log, no_unawaited_coroutines

pytestmark = pytest.mark.anyio


async def test_first_success_wins_and_the_rest_are_cancelled() -> None:
    log = Log()
    assert await race(log.child("slow", 5), log.child("fast", 0.01)) == "fast"
    assert log.cancelled == ["slow"]
    assert log.settled()


async def test_a_failure_does_not_end_the_race() -> None:
    log = Log()
    winner = await race(log.failing("fail", 0, ValueError("x")), log.child("ok", 0.02))
    assert winner == "ok"


async def test_all_failed_is_an_exception_group_in_argument_order() -> None:
    log = Log()
    a, b = ValueError("a"), KeyError("b")
    with pytest.raises(ExceptionGroup) as info:
        await race(log.failing("fail-a", 0.02, a), log.failing("fail-b", 0, b))
    assert info.value.exceptions == (a, b)


async def test_timeout_cancels_everyone() -> None:
    log = Log()
    with pytest.raises(TimeoutError, match=r"timed out after 0\.02s"):
        await race(log.child("a", 5), log.child("b", 5), timeout=0.02)
    assert sorted(log.cancelled) == ["a", "b"]


async def test_a_cancelled_caller_cancels_every_contestant() -> None:
    log = Log()
    with anyio.move_on_after(0.02):
        await race(log.child("a", 5), log.child("b", 5))
    assert sorted(log.cancelled) == ["a", "b"]


async def test_bad_input_is_refused_before_anything_starts() -> None:
    log = Log()
    with no_unawaited_coroutines():
        with pytest.raises(ValueError, match="at least one"):
            await race()
        with pytest.raises(TypeError, match="argument 1 is not awaitable"):
            await race(log.child("a", 0), None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            await race(log.child("b", 0), timeout=-1)
    assert log.started == []
