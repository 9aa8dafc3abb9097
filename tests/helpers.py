"""Small async building blocks for the tests: children that record their life."""

from __future__ import annotations

import gc
import linecache
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


# The code a finished job hands its result back through: its caller may resume
# before the thread is out of it.
_HANDING_BACK = (
    "concurrent/futures/_base.py",
    "asyncio/base_events.py",
    "asyncio/selector_events.py",
    "asyncio/events.py",
    "asyncio/futures.py",
)


def threads_at_work(before: set[threading.Thread]) -> list[str]:
    """Threads running a job now: any of cancelkit's pools, or new since ``before``.

    A pool's thread that has returned from its job and is handing the result back
    or waiting for its next job is not at work: the caller may already have
    resumed, which is all the contract says. Any other new thread is at work while
    its ``run()`` runs.
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


def _running_a_job(innermost: FrameType | None) -> bool:
    """Whether a thread's stack, ``innermost`` frame first, is at work.

    In a ``concurrent.futures`` pool (asyncio's default executor) its job's future
    says so; in anyio's pool, what its loop called last (the queue's ``get``, or the
    handing back of a result, is not work); any other thread is at work until its
    ``run()`` has returned.
    """
    stack: list[FrameType] = []
    frame = innermost
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    for depth, frame in enumerate(stack):
        code = frame.f_code
        if code.co_filename.endswith("concurrent/futures/thread.py"):
            if code.co_name == "run":  # a _WorkItem's (or, on 3.14, its context's)
                future = getattr(frame.f_locals.get("self"), "future", None)
                if future is not None:
                    return not future.done()
            elif code.co_name == "_worker":
                return False  # between jobs
        elif code.co_name == "run" and code.co_filename.endswith("anyio/_backends/_asyncio.py"):
            if depth == 0:  # in its own loop: at work if that is the call of a job in C
                return "context.run(" in linecache.getline(code.co_filename, frame.f_lineno)
            called = stack[depth - 1].f_code.co_filename
            return not called.endswith(("queue.py", *_HANDING_BACK))
        elif code.co_name == "run" and code.co_filename.endswith("threading.py"):
            return True  # Thread.run: its target has not returned
    return False  # starting, or ending after its run() returned


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


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); ``None``
    once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a zombie has ended)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")
