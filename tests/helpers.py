"""Small async building blocks for the tests: children that record their life."""

from __future__ import annotations

import gc
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
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
