"""Argument checks shared by the primitives: bad input fails before any work starts."""

from __future__ import annotations

import inspect
import math
from types import CoroutineType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = ("awaitables", "close_all", "positive_int", "seconds")

T = TypeVar("T")


def seconds(value: object, name: str, *, allow_none: bool = True) -> float | None:
    """Check a duration: a finite real number >= 0 (``None`` where allowed).

    Raises:
        TypeError: not a number (``bool`` is refused too).
        ValueError: negative, NaN or infinite.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return float(value)


def positive_int(value: object, name: str) -> int | None:
    """Check an optional count that must be >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, not {value}")
    return value


def close_all(values: tuple[Any, ...] | list[Any]) -> None:
    """Close every coroutine among ``values`` so none warns "never awaited"."""
    for value in values:
        if inspect.iscoroutine(value):
            value.close()


def awaitables(fn_name: str, values: tuple[Awaitable[T], ...]) -> tuple[Awaitable[T], ...]:
    """Check that every argument is an awaitable, each passed once.

    On a bad argument every coroutine passed is closed first (so no "coroutine was
    never awaited" warning follows), then the error is raised: nothing has started.

    Raises:
        TypeError: an argument is not awaitable, or the same one is passed twice.
    """
    for index, value in enumerate(values):
        if type(value) is not CoroutineType and not inspect.isawaitable(value):
            problem = f"argument {index} is not awaitable: {type(value).__name__}"
            if callable(value):
                problem += " (pass the coroutine, f(), not the function f)"
            close_all(values)
            raise TypeError(f"{fn_name}(): {problem}")
    if len(set(map(id, values))) != len(values):
        seen: set[int] = set()
        for index, value in enumerate(values):  # pragma: no branch - a duplicate exists
            if id(value) in seen:
                close_all(values)
                raise TypeError(f"{fn_name}(): argument {index} is passed twice: {value!r}")
            seen.add(id(value))
    return values
