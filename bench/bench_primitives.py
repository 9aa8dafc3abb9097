"""Benchmarks of the primitives against what a user would otherwise reach for.

Run: ``python bench/bench_primitives.py`` (``--quick`` for a smaller run).

- gather per-task overhead (10,000 and 100,000 no-op tasks) against asyncio.gather,
  asyncio.TaskGroup, an anyio task group, and a trio nursery;
- fail-fast: from the first failure until 1,000 siblings have finished, against
  asyncio.TaskGroup (and a trio nursery);
- amap against aiometer with the same limit;
- token.check() cost, and cancel() waking 1,000 waiters against an Event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import timeit
from typing import TYPE_CHECKING, Any

import aiometer
import anyio
import anyio.lowlevel
import trio

import cancelkit
from _harness import Row, measure, report

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine


async def noop() -> None:
    pass


def per_task_us(
    n: int, body: Callable[[int], Coroutine[Any, Any, object]], backend: str
) -> Callable[[], float]:
    """A contestant: run ``body(n)`` on a fresh loop; microseconds per task."""

    def run() -> float:
        async def timed() -> float:
            start = time.perf_counter()
            await body(n)
            return (time.perf_counter() - start) / n * 1e6

        return float(anyio.run(timed, backend=backend))

    return run


async def ck_gather(n: int) -> object:
    return await cancelkit.gather(*[noop() for _ in range(n)])


async def asyncio_gather(n: int) -> object:
    return await asyncio.gather(*[noop() for _ in range(n)])


async def asyncio_taskgroup(n: int) -> object:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(noop()) for _ in range(n)]
    return [task.result() for task in tasks]


async def anyio_taskgroup(n: int) -> object:
    results: list[object] = [None] * n

    async def run(i: int) -> None:
        await noop()
        results[i] = i

    async with anyio.create_task_group() as group:
        for i in range(n):
            group.start_soon(run, i)
    return results


async def trio_nursery(n: int) -> object:
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(noop)
    return None


async def trio_nursery_results(n: int) -> object:
    """A nursery that keeps its children's results, as gather must: trio discards a
    task's return value, so each child needs a small wrapper to store it."""
    results: list[object] = [None] * n
    coroutines: list[Coroutine[Any, Any, object]] = [noop() for _ in range(n)]

    async def run(i: int, coroutine: Coroutine[Any, Any, object]) -> None:
        results[i] = await coroutine

    async with trio.open_nursery() as nursery:
        for i, coroutine in enumerate(coroutines):
            nursery.start_soon(run, i, coroutine)
    return results


def bench_gather(sizes: list[int], repeats: int) -> list[Row]:
    rows: list[Row] = []
    for n in sizes:
        rows += measure(
            f"gather {n:,} no-op tasks, asyncio (per task)",
            {
                "asyncio.gather": per_task_us(n, asyncio_gather, "asyncio"),
                "cancelkit.gather": per_task_us(n, ck_gather, "asyncio"),
                "asyncio.TaskGroup": per_task_us(n, asyncio_taskgroup, "asyncio"),
                "anyio task group": per_task_us(n, anyio_taskgroup, "asyncio"),
            },
            unit="us",
            repeats=repeats,
            baseline="asyncio.gather",
            target="<= 1.05x",
        )
        rows += measure(
            f"gather {n:,} no-op tasks, trio (per task)",
            {
                "trio nursery": per_task_us(n, trio_nursery, "trio"),
                "cancelkit.gather": per_task_us(n, ck_gather, "trio"),
                "trio nursery, results kept": per_task_us(n, trio_nursery_results, "trio"),
            },
            unit="us",
            repeats=repeats,
            baseline="trio nursery",
            target="<= 1.1x",
        )
    return rows


def fail_fast_ms(
    runner: Callable[[int, list[float]], Coroutine[Any, Any, None]], backend: str
) -> Callable[[], float]:
    """A contestant: milliseconds from the first failure until 1,000 siblings ended."""

    def run() -> float:
        async def timed() -> float:
            failed_at: list[float] = []
            with contextlib.suppress(BaseException):  # the failure itself, possibly grouped
                await runner(1000, failed_at)
            return (time.perf_counter() - failed_at[0]) * 1e3

        return float(anyio.run(timed, backend=backend))

    return run


async def _sibling() -> None:
    await anyio.sleep(3600)


async def _failing(failed_at: list[float]) -> None:
    await anyio.sleep(0.01)  # every sibling is parked in its sleep by now
    failed_at.append(time.perf_counter())
    raise ValueError("first failure")


async def ck_fail_fast(n: int, failed_at: list[float]) -> None:
    await cancelkit.gather(_failing(failed_at), *[_sibling() for _ in range(n)])


async def asyncio_fail_fast(n: int, failed_at: list[float]) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(_failing(failed_at))
        for _ in range(n):
            group.create_task(_sibling())


async def trio_fail_fast(n: int, failed_at: list[float]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_failing, failed_at)
        for _ in range(n):
            nursery.start_soon(_sibling)


def bench_fail_fast(repeats: int) -> list[Row]:
    rows = measure(
        "fail-fast: failure -> 1,000 siblings done, asyncio",
        {
            "asyncio.TaskGroup": fail_fast_ms(asyncio_fail_fast, "asyncio"),
            "cancelkit.gather": fail_fast_ms(ck_fail_fast, "asyncio"),
        },
        unit="ms",
        repeats=repeats,
        baseline="asyncio.TaskGroup",
        target="<= 1.2x",
    )
    rows += measure(
        "fail-fast: failure -> 1,000 siblings done, trio",
        {
            "trio nursery": fail_fast_ms(trio_fail_fast, "trio"),
            "cancelkit.gather": fail_fast_ms(ck_fail_fast, "trio"),
        },
        unit="ms",
        repeats=repeats,
        baseline="trio nursery",
    )
    return rows


async def _item(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x


def amap_ms(
    body: Callable[[], Coroutine[Any, Any, object]], backend: str = "asyncio"
) -> Callable[[], float]:
    def run() -> float:
        async def timed() -> float:
            start = time.perf_counter()
            await body()
            return (time.perf_counter() - start) * 1e3

        return float(anyio.run(timed, backend=backend))

    return run


def bench_amap(items: int, limit: int, repeats: int) -> list[Row]:
    async def ck() -> object:
        return await cancelkit.amap(_item, range(items), limit=limit)

    async def aiometer_amap() -> object:
        out = []
        async with aiometer.amap(_item, range(items), max_at_once=limit) as results:
            async for result in results:
                out.append(result)
        return out

    async def aiometer_run_on_each() -> object:
        await aiometer.run_on_each(_item, range(items), max_at_once=limit)
        return None

    rows = measure(
        f"amap {items:,} items, limit {limit}, asyncio",
        {
            "aiometer.amap": amap_ms(aiometer_amap),
            "cancelkit.amap": amap_ms(ck),
            "aiometer.run_on_each": amap_ms(aiometer_run_on_each),
        },
        unit="ms",
        repeats=repeats,
        baseline="aiometer.amap",
    )
    rows += measure(
        f"amap {items:,} items, limit {limit}, trio",
        {
            "aiometer.amap": amap_ms(aiometer_amap, "trio"),
            "cancelkit.amap": amap_ms(ck, "trio"),
        },
        unit="ms",
        repeats=repeats,
        baseline="aiometer.amap",
    )
    return rows


def bench_check(repeats: int) -> list[Row]:
    token = cancelkit.CancelToken()
    check = token.check
    loops = 1_000_000

    def ns_per_check() -> float:
        return timeit.timeit(check, number=loops) / loops * 1e9

    def ns_empty_call() -> float:
        return timeit.timeit(noop_sync, number=loops) / loops * 1e9

    return measure(
        "token.check() on an active token",
        {"empty function call": ns_empty_call, "cancelkit token.check()": ns_per_check},
        unit="ns",
        repeats=repeats,
        target="< 100 ns",
    )


def noop_sync() -> None:
    pass


def wake_ms(backend: str, use_token: bool) -> Callable[[], float]:
    """Milliseconds from cancel()/set() until 1,000 waiting tasks have all resumed."""

    def run() -> float:
        async def timed() -> float:
            token = cancelkit.CancelToken()
            event = anyio.Event()
            async with anyio.create_task_group() as group:
                for _ in range(1000):
                    group.start_soon(token.wait if use_token else event.wait)
                await anyio.sleep(0.01)
                start = time.perf_counter()
                if use_token:
                    token.cancel()
                else:
                    event.set()
            return (time.perf_counter() - start) * 1e3

        return float(anyio.run(timed, backend=backend))

    return run


def bench_wake(repeats: int) -> list[Row]:
    rows: list[Row] = []
    for backend in ("asyncio", "trio"):
        rows += measure(
            f"wake 1,000 waiters, {backend}",
            {
                "anyio.Event.set()": wake_ms(backend, use_token=False),
                "cancelkit token.cancel()": wake_ms(backend, use_token=True),
            },
            unit="ms",
            repeats=repeats,
            baseline="anyio.Event.set()",
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    sizes = [10_000] if args.quick else [10_000, 100_000]
    rows = bench_gather(sizes, repeats)
    rows += bench_fail_fast(repeats)
    rows += bench_amap(10_000 if not args.quick else 2_000, 100, repeats)
    rows += bench_check(repeats)
    rows += bench_wake(repeats)
    report("primitives", rows)


if __name__ == "__main__":
    main()
