"""Small async building blocks for the tests: children that record their life."""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


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
