"""What the Stop receipt costs a run that is never stopped (it should cost nothing).

Run: ``python bench/bench_receipt.py`` (``--quick`` for a smaller run).

Every run keeps the ends of its layers for its receipt. Two shapes of run, never
stopped and whose receipt nobody reads, each measured as shipped and with the
layers' reports switched off (the recording replaced by a no-op in the same process,
interleaved): a trivial run, and a run with 10 child tasks and one worker-thread
call. Then what reading a receipt costs, once the run has ended (it is built then,
not before).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

import cancelkit
from _harness import Row, measure, report
from cancelkit import _receipt, _threads

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

N_RUNS = 2000


async def trivial() -> None:
    await anyio.lowlevel.checkpoint()


async def with_layers() -> None:
    children = [cancelkit.spawn(anyio.lowlevel.checkpoint()) for _ in range(10)]
    await cancelkit.to_thread(int)
    for child in children:
        await child.wait()


# Where the layers' reports land: switched off, the rest of the code is the same.
_REPORTS: tuple[tuple[object, str], ...] = ((_receipt.Recording, "_record"), (_threads, "record"))


@contextlib.contextmanager
def reports_off() -> Iterator[None]:
    """The same code with every layer's report a no-op: the receipt's cost removed."""
    saved = [getattr(owner, name) for owner, name in _REPORTS]

    def nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    for owner, name in _REPORTS:
        setattr(owner, name, nothing)
    try:
        yield
    finally:
        for (owner, name), original in zip(_REPORTS, saved, strict=True):
            setattr(owner, name, original)


def per_run(
    backend: str, body: Callable[[], Coroutine[Any, Any, None]], *, off: bool
) -> Callable[[], float]:
    async def many() -> float:
        runs = cancelkit.Runs()
        start = time.perf_counter()
        for _ in range(N_RUNS):
            await runs.start(body).wait()
        return (time.perf_counter() - start) / N_RUNS * 1e6

    def run() -> float:
        with reports_off() if off else contextlib.nullcontext():
            return float(anyio.run(many, backend=backend))

    return run


def reading(backend: str) -> Callable[[], float]:
    async def many() -> float:
        runs = cancelkit.Runs(history=N_RUNS)
        ended = [await runs.start(with_layers).wait() for _ in range(N_RUNS // 4)]
        start = time.perf_counter()
        for outcome in ended:
            outcome.receipt.to_dict()
        return (time.perf_counter() - start) / len(ended) * 1e6

    return lambda: float(anyio.run(many, backend=backend))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    rows: list[Row] = []
    for backend in ("asyncio", "trio"):
        for shape, body in (("trivial run", trivial), ("10 children + 1 thread", with_layers)):
            rows += measure(
                f"start + wait, never stopped: {shape}, {backend}",
                {
                    "receipt reports off": per_run(backend, body, off=True),
                    "cancelkit (as shipped)": per_run(backend, body, off=False),
                },
                unit="us",
                repeats=repeats,
                baseline="receipt reports off",
                target="<= 1.03x",
            )
        rows += measure(
            f"read a receipt (10 children + 1 thread), {backend}",
            {"receipt.to_dict()": reading(backend)},
            unit="us",
            repeats=repeats,
        )
    report("receipt", rows)


if __name__ == "__main__":
    main()
