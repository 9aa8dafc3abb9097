"""Benchmarks of runs against the bare primitives a user would otherwise use.

Run: ``python bench/bench_runs.py`` (``--quick`` for a smaller run).

- start + cancel one run (start, cancel, wait for the end), per run, against a bare
  asyncio task and a trio nursery with a cancel scope;
- cancel latency of a run with 100 and 1,000 children, from ``cancel()`` until the
  last child has finished, against an asyncio.TaskGroup tree (and a trio nursery
  tree) of the same shape;
- the cost of a Stop by path: ``cancel()`` called on the loop's own thread (applied
  at once) and from another thread (queued to the loop), until the run has ended;
- owned work: ``cancelkit.Background`` starting and closing one task, against the
  hand-rolled task it replaces (asyncio: create_task, cancel, wait; trio: a task in
  a nursery, or a system task in a cancel scope, cancelled);
- idle runs at 1k, 10k and 100k (1k and 10k with ``--quick``): the garbage
  collector's tracked objects per run against a bare task (every one of them is
  walked by each full collection, which is what makes cancelling 100k runs
  superlinear), and the time to cancel them all (``runs.shutdown()``) against bare
  tasks; memory per run (traced allocations) at 10k.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import queue
import threading
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import sniffio
import trio
import trio.lowlevel

import cancelkit
from _harness import Row, measure, report

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine


async def idle() -> None:
    await anyio.sleep(3600)


def on(backend: str, body: Callable[[], Coroutine[Any, Any, float]]) -> Callable[[], float]:
    def run() -> float:
        return float(anyio.run(body, backend=backend))

    return run


N_START = 2000


def native_yield() -> Callable[[], Awaitable[None]]:
    """The running loop's own zero-length yield, the one the bare peers use
    (``asyncio.sleep(0)``, ``trio.lowlevel.checkpoint()``): anyio's checkpoint adds a
    backend lookup of about 1 us per call that would be counted against cancelkit."""
    if sniffio.current_async_library() == "trio":
        return trio.lowlevel.checkpoint
    return functools.partial(asyncio.sleep, 0)


async def ck_start_cancel() -> float:
    runs = cancelkit.Runs()
    pause = native_yield()
    start = time.perf_counter()
    for _ in range(N_START):
        run = runs.start(idle)
        await pause()
        run.cancel()
        await run.wait()
    return (time.perf_counter() - start) / N_START * 1e6


async def asyncio_start_cancel() -> float:
    start = time.perf_counter()
    for _ in range(N_START):
        task = asyncio.create_task(idle())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task])
    return (time.perf_counter() - start) / N_START * 1e6


async def trio_start_cancel() -> float:
    start = time.perf_counter()
    for _ in range(N_START):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(idle)
            await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    return (time.perf_counter() - start) / N_START * 1e6


def cancel_latency(children: int) -> dict[str, Callable[[], float]]:
    async def ck() -> float:
        runs = cancelkit.Runs()

        async def agent() -> None:
            for _ in range(children):
                cancelkit.spawn(idle())
            await idle()

        run = runs.start(agent)
        await anyio.sleep(0.05)  # every child is parked in its sleep
        start = time.perf_counter()
        run.cancel()
        await run.wait()
        return (time.perf_counter() - start) * 1e3

    async def asyncio_taskgroup() -> float:
        async def agent() -> None:
            async with asyncio.TaskGroup() as group:
                for _ in range(children):
                    group.create_task(idle())
                await idle()

        task = asyncio.create_task(agent())
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        task.cancel()
        await asyncio.wait([task])
        return (time.perf_counter() - start) * 1e3

    async def trio_nursery() -> float:
        async with trio.open_nursery() as outer:

            async def agent(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with trio.CancelScope() as scope:
                    task_status.started(scope)
                    async with trio.open_nursery() as nursery:
                        for _ in range(children):
                            nursery.start_soon(idle)
                        await idle()

            scope = await outer.start(agent)
            await trio.sleep(0.05)
            start = time.perf_counter()
            scope.cancel()
        return (time.perf_counter() - start) * 1e3

    return {
        "asyncio.TaskGroup tree": on("asyncio", asyncio_taskgroup),
        "cancelkit run (asyncio)": on("asyncio", ck),
        "trio nursery tree": on("trio", trio_nursery),
        "cancelkit run (trio)": on("trio", ck),
    }


def idle_memory_kib(backend: str, count: int, use_runs: bool) -> Callable[[], float]:
    """KiB of traced allocations per idle run (or bare task) once all are parked."""

    async def body() -> float:
        runs = cancelkit.Runs()
        tasks: list[asyncio.Task[None]] = []
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for _ in range(count):
                if use_runs:
                    runs.start(idle)
                else:
                    tasks.append(asyncio.create_task(idle()))
            await anyio.sleep(0.1)
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await runs.shutdown()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        return (after - before) / count / 1024

    return on(backend, body)


def cancel_all_ms(backend: str, count: int) -> Callable[[], float]:
    async def body() -> float:
        runs = cancelkit.Runs()
        for _ in range(count):
            runs.start(idle)
        await anyio.sleep(0.1)
        start = time.perf_counter()
        await runs.shutdown(grace=30)
        return (time.perf_counter() - start) * 1e3

    return on(backend, body)


def cancel_all_tasks_ms(count: int) -> Callable[[], float]:
    async def body() -> float:
        tasks = [asyncio.create_task(idle()) for _ in range(count)]
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        return (time.perf_counter() - start) * 1e3

    return on("asyncio", body)


def cancel_all_trio_ms(count: int) -> Callable[[], float]:
    async def body() -> float:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(idle)
            await trio.sleep(0.1)
            start = time.perf_counter()
            nursery.cancel_scope.cancel()
        return (time.perf_counter() - start) * 1e3

    return on("trio", body)


def gc_objects_per_task(backend: str, count: int, kind: str) -> Callable[[], float]:
    """Objects tracked by the garbage collector per idle run (or bare task)."""

    async def body() -> float:
        runs = cancelkit.Runs()
        tasks: list[asyncio.Task[None]] = []
        gc.collect()
        before = len(gc.get_objects())
        async with anyio.create_task_group() as group:
            for _ in range(count):
                if kind == "run":
                    runs.start(idle)
                elif kind == "asyncio task":
                    tasks.append(asyncio.create_task(idle()))
                else:
                    group.start_soon(idle)
            await anyio.sleep(0.1)
            gc.collect()
            after = len(gc.get_objects())
            group.cancel_scope.cancel()
        await runs.shutdown()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        return (after - before) / count

    return on(backend, body)


N_OWNED = 2000


async def ck_background_start_close() -> float:
    pause = native_yield()
    start = time.perf_counter()
    for _ in range(N_OWNED):
        background = cancelkit.Background("bench")
        background.spawn(idle())
        await pause()
        await background.aclose()
    return (time.perf_counter() - start) / N_OWNED * 1e6


async def asyncio_task_start_close() -> float:
    start = time.perf_counter()
    for _ in range(N_OWNED):
        task = asyncio.create_task(idle())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait([task])
    return (time.perf_counter() - start) / N_OWNED * 1e6


async def _in_scope(scope: trio.CancelScope, ended: trio.Event) -> None:
    try:
        with scope:
            await idle()
    finally:
        ended.set()


async def trio_system_task_start_close() -> float:
    start = time.perf_counter()
    for _ in range(N_OWNED):
        scope, ended = trio.CancelScope(), trio.Event()
        trio.lowlevel.spawn_system_task(_in_scope, scope, ended)
        await trio.lowlevel.checkpoint()
        scope.cancel()
        await ended.wait()
    return (time.perf_counter() - start) / N_OWNED * 1e6


def owned_work(repeats: int) -> list[Row]:
    """Background start + close of one task against the task it replaces."""
    rows = measure(
        "owned work: start + close one task, asyncio",
        {
            "create_task + cancel + wait": on("asyncio", asyncio_task_start_close),
            "cancelkit Background": on("asyncio", ck_background_start_close),
        },
        unit="us",
        repeats=repeats,
        baseline="create_task + cancel + wait",
        target="<= 1.1x",
    )
    rows += measure(
        "owned work: start + close one task, trio",
        {
            "nursery task + cancel": on("trio", trio_start_cancel),
            "system task + cancel": on("trio", trio_system_task_start_close),
            "cancelkit Background": on("trio", ck_background_start_close),
        },
        unit="us",
        repeats=repeats,
        baseline="nursery task + cancel",
        target="<= 1.1x",
    )
    return rows


N_CANCEL = 2000


def cancel_path_us(backend: str, from_thread: bool) -> Callable[[], float]:
    """Per Stop: from ``cancel()`` until the run has ended, by the path it takes."""

    async def body() -> float:
        runs = cancelkit.Runs()
        requests: queue.SimpleQueue[cancelkit.Run[None] | None] = queue.SimpleQueue()
        called: list[float] = []

        def canceller() -> None:
            while (run := requests.get()) is not None:
                called.append(time.perf_counter())
                run.cancel()

        thread = threading.Thread(target=canceller) if from_thread else None
        if thread is not None:
            thread.start()
        total = 0.0
        for _ in range(N_CANCEL):
            run = runs.start(idle)
            await anyio.lowlevel.checkpoint()
            if thread is not None:
                requests.put(run)
            else:
                called.append(time.perf_counter())
                run.cancel()
            await run.wait()
            total += time.perf_counter() - called[-1]
        if thread is not None:
            requests.put(None)
            thread.join()
        return total / N_CANCEL * 1e6

    return on(backend, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    rows: list[Row] = []
    rows += measure(
        "start + cancel + wait one run (per run), asyncio",
        {
            "bare asyncio task": on("asyncio", asyncio_start_cancel),
            "cancelkit run (asyncio)": on("asyncio", ck_start_cancel),
        },
        unit="us",
        repeats=repeats,
        baseline="bare asyncio task",
        target="<= 1.3x",
    )
    rows += measure(
        "start + cancel + wait one run (per run), trio",
        {
            "trio nursery + cancel": on("trio", trio_start_cancel),
            "cancelkit run (trio)": on("trio", ck_start_cancel),
        },
        unit="us",
        repeats=repeats,
        baseline="trio nursery + cancel",
        target="<= 1.3x",
    )
    for children in (100, 1000):
        contestants = cancel_latency(children)
        rows += measure(
            f"cancel latency, run with {children:,} children, asyncio",
            {k: v for k, v in contestants.items() if "asyncio" in k},
            unit="ms",
            repeats=repeats,
            baseline="asyncio.TaskGroup tree",
            target="<= 1.2x",
        )
        rows += measure(
            f"cancel latency, run with {children:,} children, trio",
            {k: v for k, v in contestants.items() if "trio" in k},
            unit="ms",
            repeats=repeats,
            baseline="trio nursery tree",
            target="<= 1.2x",
        )
    for backend in ("asyncio", "trio"):
        rows += measure(
            f"Stop until the run ended, by path, {backend}",
            {
                "cancel() on the loop thread": cancel_path_us(backend, from_thread=False),
                "cancel() from another thread": cancel_path_us(backend, from_thread=True),
            },
            unit="us",
            repeats=repeats,
            baseline="cancel() on the loop thread",
        )
    rows += owned_work(repeats)
    count = 10_000
    rows += measure(
        f"{count:,} idle runs: memory per run",
        {
            "bare asyncio task": idle_memory_kib("asyncio", count, use_runs=False),
            "cancelkit run (asyncio)": idle_memory_kib("asyncio", count, use_runs=True),
            "cancelkit run (trio)": idle_memory_kib("trio", count, use_runs=True),
        },
        unit="KiB",
        repeats=min(repeats, 3),
        target="< 10 KB",
    )
    for count in (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000):
        rows += measure(
            f"{count:,} idle runs: gc-tracked objects per run",
            {
                "bare asyncio task": gc_objects_per_task("asyncio", count, "asyncio task"),
                "cancelkit run (asyncio)": gc_objects_per_task("asyncio", count, "run"),
                "trio nursery task": gc_objects_per_task("trio", count, "nursery task"),
                "cancelkit run (trio)": gc_objects_per_task("trio", count, "run"),
            },
            unit="obj",
            repeats=1,  # a count, not a time: the same every time
            baseline="bare asyncio task",
        )
        rows += measure(
            f"{count:,} idle runs: cancel them all, asyncio",
            {
                "bare asyncio tasks": cancel_all_tasks_ms(count),
                "cancelkit shutdown (asyncio)": cancel_all_ms("asyncio", count),
            },
            unit="ms",
            repeats=min(repeats, 3),
            baseline="bare asyncio tasks",
            target="<= 1.5x",
        )
        rows += measure(
            f"{count:,} idle runs: cancel them all, trio",
            {
                "trio nursery": cancel_all_trio_ms(count),
                "cancelkit shutdown (trio)": cancel_all_ms("trio", count),
            },
            unit="ms",
            repeats=min(repeats, 3),
            baseline="trio nursery",
            target="<= 1.5x",
        )
    report("runs", rows)


if __name__ == "__main__":
    main()
