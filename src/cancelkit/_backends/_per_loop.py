"""One object per event loop (or trio run), made on first use, gone with the loop.

A loop's :class:`~cancelkit._loop_caller.LoopCaller`, its shared deadline timer:
each lives no longer than its loop, so a program that runs many loops one after the
other (``asyncio.run`` per request, a test suite) keeps none of the finished ones.
The map holds its keys and its values weakly, and a value should not refer to its
own key strongly (through a bound method of the loop, say). Most calls come from
the loop asked for last, remembered whole.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("PerLoop", "weak_method")

K = TypeVar("K")
V = TypeVar("V")


def _nothing() -> None:
    return None


class PerLoop(Generic[K, V]):
    """``make(key)`` once per live key (a loop, a trio token), then the same value
    while something else holds it.

    Values are held weakly too: a value lives as long as what uses it holds it (the
    tokens a loop's caller stops, the timer a deadline keeper has armed on its loop),
    and is made again when next asked for after that. Held strongly here, a value that
    came to refer to its own loop (a queued task does) would keep it for good.
    """

    __slots__ = ("_last", "_made", "_make")

    def __init__(self, make: Callable[[K], V]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[K, weakref.ref[V]] = weakref.WeakKeyDictionary()
        self._last: tuple[Callable[[], object], Callable[[], V | None]] = (_nothing, _nothing)

    def __len__(self) -> int:
        """How many live keys have a live value."""
        return sum(1 for held in self._made.values() if held() is not None)

    def get(self, key: K) -> V:
        """The value for ``key``, made now if it has none (alive)."""
        last_key, held = self._last
        if last_key() is key:
            value = held()
            if value is not None:
                return value
        held = self._made.get(key, _nothing)
        value = held()
        if value is None:
            value = self._make(key)
            held = self._made[key] = weakref.ref(value)
        self._last = (weakref.ref(key), held)  # replaced whole: thread-safe
        return value


def weak_method(owner: object, name: str, gone: type[Exception]) -> Callable[[object], object]:
    """``owner.<name>(arg)`` without a strong reference to ``owner``: for a value of
    :class:`PerLoop` that schedules on its own loop. Raises ``gone`` once ``owner``
    has been freed."""
    ref = weakref.ref(owner)

    def call(arg: object) -> object:
        alive = ref()
        if alive is None:
            raise gone(f"{name}: its event loop is gone")
        return getattr(alive, name)(arg)

    return call
