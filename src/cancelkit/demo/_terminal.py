"""The terminal demonstration: one run, every kind of work, stopped by a deadline.

The run has an LLM-like token stream, two async sibling tasks and a sync tool in a
worker thread. Its token has a deadline; when it fires, every layer stops, and the
demo prints what each was doing, the reason it saw, and how long it took to stop.
Nothing here is simulated by cancelkit itself: the deadline is a real
``CancelToken(timeout=...)``, the thread is a real ``to_thread`` worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from .. import (
    Cancelled,
    CancelReason,
    CancelToken,
    RunCancelled,
    current_token,
    gather,
    guard_stream,
    to_thread,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

__all__ = ("DemoReport", "render", "run_demo")


@dataclass
class Layer:
    """What one layer of the run was doing, and when it saw the Stop."""

    name: str
    progress: str = "not started"
    stopped_at: float | None = None
    reason: CancelReason | None = None
    finished: bool = False


@dataclass
class DemoReport:
    """The outcome of one demo run."""

    deadline: float
    started_at: float
    stop_at: float | None = None
    reason: CancelReason | None = None
    layers: list[Layer] = field(default_factory=list)
    tokens_after_stop: int = 0

    def stop_latency_ms(self, layer: Layer) -> float | None:
        if layer.stopped_at is None or self.stop_at is None:
            return None
        return (layer.stopped_at - self.stop_at) * 1e3


async def fake_llm(rate: float) -> AsyncGenerator[str, None]:
    """An LLM-like stream: one word every ``1/rate`` seconds, forever."""
    words = [
        "Stop",
        "means",
        "stop",
        ":",
        "every",
        "layer",
        "hears",
        "it",
        ",",
        "with",
        "the",
        "reason",
        ",",
        "at",
        "once",
        ".",
    ]
    index = 0
    while True:
        await anyio.sleep(1 / rate)
        yield words[index % len(words)]
        index += 1


async def run_demo(
    deadline: float = 1.5, rate: float = 40.0, *, verbose: bool = True
) -> DemoReport:
    """Run the demonstration and return what happened."""
    report = DemoReport(deadline=deadline, started_at=time.perf_counter())
    token = CancelToken(timeout=deadline)

    def on_stop(reason: CancelReason) -> None:
        report.stop_at = time.perf_counter()
        report.reason = reason

    token.on_cancel(on_stop)
    stream = Layer("LLM stream (async generator)")
    search = Layer("async sibling: web search")
    notes = Layer("async sibling: note taker")
    tool = Layer("sync tool in a worker thread")
    report.layers = [stream, search, notes, tool]

    def say(message: str) -> None:
        if verbose:
            print(f"  [{time.perf_counter() - report.started_at:5.2f}s] {message}", flush=True)

    def stopped(layer: Layer) -> None:
        layer.stopped_at = time.perf_counter()
        layer.reason = token.reason

    async def consume_stream() -> None:
        text: list[str] = []
        try:
            # Guarded by the token: once it is cancelled no further word is asked for
            # (one whose wait was under way may still arrive before the loop hears of
            # the cancel: the one chunk the promise allows), and the stream is closed
            # here, in the task that iterated it.
            async with guard_stream(fake_llm(rate), token=token, name="fake LLM") as words:
                async for word in words:
                    if report.stop_at is not None:
                        report.tokens_after_stop += 1
                    text.append(word)
                    stream.progress = f"{len(text)} tokens received"
                    if len(text) % 20 == 0:
                        say(f"stream: {' '.join(text[-6:])} ...")
        finally:
            stopped(stream)

    async def sibling(layer: Layer, steps: int, pause: float) -> None:
        try:
            for step in range(1, steps + 1):
                await anyio.sleep(pause)
                layer.progress = f"step {step} of {steps}"
            layer.finished = True
        finally:
            if not layer.finished:
                stopped(layer)

    def crunch(chunks: int) -> int:
        worker_token = current_token()
        total = 0
        try:
            for chunk in range(1, chunks + 1):
                worker_token.check()
                time.sleep(0.02)  # a blocking library call
                total += chunk
                tool.progress = f"{chunk} of {chunks} chunks crunched"
        except Cancelled:
            stopped(tool)
            raise
        tool.finished = True
        return total

    async def run() -> None:
        await gather(
            consume_stream(),
            sibling(search, 10, 0.3),
            sibling(notes, 50, 0.05),
            to_thread(crunch, 500, token=token),
        )

    say(f"run started; its token has a {deadline:.2f}s deadline")
    say("layers: an LLM stream, two async siblings, a sync tool in a thread")
    async with anyio.create_task_group() as group:

        async def stop_when_cancelled() -> None:
            reason = await token.wait()
            say(f"Stop ({reason}): cancelling every layer")
            group.cancel_scope.cancel()

        group.start_soon(stop_when_cancelled)
        try:
            await run()
        except RunCancelled as cancelled:
            if cancelled.reason != token.reason:
                raise  # not the deadline (a refused worker thread, say): a real failure
            # the deadline, through the guarded stream: the report says the rest
        finally:
            group.cancel_scope.cancel()
    return report


def render(report: DemoReport) -> str:
    """The report as a table for the terminal."""
    lines = [
        "",
        f"{'layer':<32} {'state at Stop':<28} {'reason':<9} {'stopped after':>13}",
        "-" * 85,
    ]
    for layer in report.layers:
        latency = report.stop_latency_ms(layer)
        when = f"{latency:.1f} ms" if latency is not None else "-"
        reason = layer.reason.kind if layer.reason else ("completed" if layer.finished else "-")
        lines.append(f"{layer.name:<32} {layer.progress:<28} {reason:<9} {when:>13}")
    lines.append("")
    lines.append(f"tokens consumed after Stop: {report.tokens_after_stop}")
    latencies = [x for x in map(report.stop_latency_ms, report.layers) if x is not None]
    if latencies:
        lines.append(f"every layer stopped within {max(latencies):.1f} ms of the Stop")
    return "\n".join(lines)
