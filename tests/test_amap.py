"""amap: bounded, lazy, rate-limited, ordered, fail-fast."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from cancelkit import amap, other_errors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.anyio


async def double(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return 2 * x


async def test_results_are_in_input_order() -> None:
    async def jitter(x: int) -> int:
        await anyio.sleep((5 - x) * 0.002)
        return x

    assert await amap(jitter, range(6), limit=3) == list(range(6))


async def test_at_most_limit_in_flight_and_items_pulled_lazily() -> None:
    in_flight = peak = pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            assert pulled - done <= 4, "pulled ahead of free slots"
            yield i

    done = 0

    async def work(x: int) -> int:
        nonlocal in_flight, peak, done
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.001)
        in_flight -= 1
        done += 1
        return x

    assert await amap(work, items(), limit=4) == list(range(200))
    assert peak == 4


async def test_an_infinite_iterator_is_consumed_lazily_until_a_failure() -> None:
    pulled = 0

    def naturals() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    async def work(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        if x == 500:
            raise ValueError("item 500")
        return x

    with pytest.raises(ValueError, match="item 500"):
        await amap(work, naturals(), limit=10)
    assert pulled <= 500 + 10 + 1


async def test_an_infinite_iterator_stops_at_the_timeout() -> None:
    with pytest.raises(TimeoutError):
        await amap(double, itertools.count(), limit=8, timeout=0.05)


async def test_async_iterables_are_accepted() -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(5):
            await anyio.lowlevel.checkpoint()
            yield i

    assert await amap(double, numbers(), limit=2) == [0, 2, 4, 6, 8]


async def test_first_failure_is_raised_as_itself_with_the_others_kept() -> None:
    first = ValueError("first")
    second = KeyError("second")

    async def work(x: int) -> int:
        if x == 0:
            await anyio.sleep(0.01)
            raise first
        try:
            await anyio.sleep(5)
        finally:
            if x == 1:
                raise second
        return x

    with anyio.fail_after(2), pytest.raises(ValueError, match="first") as info:
        await amap(work, range(4))
    assert info.value is first
    assert other_errors(info.value) == (second,)


async def test_return_exceptions_and_timeout_pad_a_sized_input() -> None:
    async def work(x: int) -> int:
        if x == 1:
            raise ValueError("one")
        await anyio.sleep(0 if x == 0 else 5)
        return x

    results: list[Any] = await amap(
        work, [0, 1, 2, 3, 4], limit=3, timeout=0.05, return_exceptions=True
    )
    assert results[0] == 0
    assert isinstance(results[1], ValueError)
    assert all(isinstance(r, TimeoutError) for r in results[2:])
    assert len(results) == 5


async def test_per_second_spaces_the_starts() -> None:
    starts: list[float] = []

    async def work(x: int) -> int:
        starts.append(anyio.current_time())
        return x

    began = anyio.current_time()
    await amap(work, range(5), per_second=100)
    # Never faster than the rate, however loaded the machine (a task may start
    # late, so gaps between task starts are jitter; the span cannot be shorter).
    assert starts[-1] - began >= 4 * 0.01 - 1e-6  # (asyncio may wake a timer 1 ns early)
    assert sorted(starts) == starts


async def test_an_error_from_the_iterator_is_raised_as_itself() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("source broke")

    with pytest.raises(OSError, match="source broke"):
        await amap(double, items(), limit=2)


async def test_a_function_that_returns_no_awaitable_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="fn returned int, not an awaitable"):
        await amap(lambda x: x, [1])  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fn": 3, "items": [1]}, TypeError, "fn must be an async callable"),
        ({"fn": double, "items": 5}, TypeError, "items must be iterable"),
        ({"fn": double, "items": [1], "limit": 0}, ValueError, "limit must be >= 1"),
        ({"fn": double, "items": [1], "limit": 2.5}, TypeError, "limit must be an int"),
        ({"fn": double, "items": [1], "per_second": 0}, ValueError, "per_second"),
        ({"fn": double, "items": [1], "timeout": -2}, ValueError, "timeout"),
    ],
)
async def test_bad_arguments_are_refused_before_any_item_is_taken(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await amap(**kwargs)
