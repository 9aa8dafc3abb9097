"""Small async building blocks for the tests: children that record their life."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from types import FrameType

    from cancelkit import Run


@dataclass
class Log:
    """What the children of one test did: started, finished, cancelled."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    async def child(self, name: str, delay: float, result: object = None) -> object:
        self.started.append(name)
        try:
            await anyio.sleep(delay)
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(name)
            raise
        self.finished.append(name)
        return result if result is not None else name

    async def failing(self, name: str, delay: float, error: Exception) -> object:
        self.started.append(name)
        await anyio.sleep(delay)
        raise error

    def settled(self) -> bool:
        """Every child that started has ended one way or the other."""
        ended = set(self.finished) | set(self.cancelled)
        return all(name in ended for name in self.started if not name.startswith("fail"))


@contextmanager
def no_unawaited_coroutines() -> Iterator[None]:
    """Fail if a coroutine created inside the block is never awaited."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    problems = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not problems, problems


async def wait_until(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    """Poll ``predicate`` (state another thread changes) until true; fail after ``limit``."""
    for _ in range(int(limit / 0.005)):
        if predicate():
            return
        await anyio.sleep(0.005)
    raise AssertionError(f"still not true after {limit}s: {predicate}")


# Where an idle pool thread waits, and the code a finished job hands its result back
# through (its caller may resume before the thread is out of it).
_WAITING = (
    "threading.py",
    "queue.py",
    "concurrent/futures/thread.py",
    "anyio/_backends/_asyncio.py",
)
_HANDING_BACK = (
    "concurrent/futures/_base.py",
    "asyncio/base_events.py",
    "asyncio/selector_events.py",
    "asyncio/events.py",
    "asyncio/futures.py",
)


def threads_at_work(before: set[threading.Thread]) -> list[str]:
    """Threads running a job now: any of cancelkit's pools, or new since ``before``.

    A thread that has returned from its job and is handing the result back or
    going back to its pool's queue is not at work: the caller may already have
    resumed, which is all the contract says.
    """
    frames = sys._current_frames()
    return [
        thread.name
        for thread in threading.enumerate()
        if thread.is_alive()
        and (
            ":" in thread.name  # cancelkit's pools name a thread after its job while it runs
            if thread.name.startswith("cancelkit-")
            else thread not in before and _running_a_job(frames.get(thread.ident or 0))
        )
    ]


def _running_a_job(frame: FrameType | None) -> bool:
    """Whether a thread's stack, innermost ``frame`` first, is at work.

    In a ``concurrent.futures`` pool (asyncio's default executor) its job's future
    says so; elsewhere, any frame outside the pools' waiting and handing back does.
    """
    at_work = False
    while frame is not None:
        code = frame.f_code
        if code.co_name == "run" and code.co_filename.endswith("concurrent/futures/thread.py"):
            item = frame.f_locals.get("self")
            return item is not None and not item.future.done()
        if not code.co_filename.endswith(_WAITING + _HANDING_BACK):
            at_work = True
        frame = frame.f_back
    return at_work


def stop_landed(run: Run[Any]) -> float:
    """When the Stop reached ``run`` (its token's cancel, on ``time.monotonic()``).

    "At most one chunk after a Stop" counts from here: getting the Stop to the run
    (from another thread, through another process) takes as long as a busy machine
    makes it take, and is measured by the benches, not asserted.
    """
    landed = run.token.cancelled_at
    assert landed is not None, "the run was not stopped"
    return landed


async def cancel_once_started(
    started: threading.Event, call: Callable[[], Awaitable[object]]
) -> None:
    """Await ``call()``, cancelling it once ``started`` is set (by the function a
    worker thread runs): a call cancelled while still queued is withdrawn and never
    runs, and a busy machine may take any time to start a thread."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def cancel() -> None:
                await wait_until(started.is_set)
                scope.cancel()

            group.start_soon(cancel)
            await call()


ROOT = Path(__file__).parent.parent


def run_scenario(module: str, *args: str) -> str:
    """Run ``python -m tests.scenarios.<module> args`` and return what it printed.

    A scenario runs in its own process when it could hang or break the test
    process (a deadlock, signals, a crashed loop); it prints ``OK ...`` when every
    check inside it held. A hang fails here after 50 seconds.
    """
    done = subprocess.run(
        [sys.executable, "-m", f"tests.scenarios.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("OK "), done.stdout
    return done.stdout


async def released(event: anyio.Event, value: object = "value") -> object:
    """Wait for ``event``, then return ``value``: work that ends when the test says."""
    await event.wait()
    return value
