"""``stoppable(fn)``: a sync tool that a Stop actually stops, for any framework.

Frameworks run a sync tool in a thread (``asyncio.to_thread``, anyio's, an
executor) and, when the run is cancelled, stop waiting for it: the thread goes on
to the end of the tool while the run reports done. Decorated with ``stoppable``
the function becomes an async one that runs the sync function through
:func:`cancelkit.to_thread`: inside it, ``current_token()`` is cancelled the moment
the awaiting task is (with its reason), the caller waits a bounded grace for it,
and a thread that ignores its token is reported, never silently left. The
signature, name and docstring are kept (``functools.wraps``, so ``__wrapped__``
too): frameworks read them for the tool's schema. Each call is counted in the
run's receipt (tools started and finished).
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from ._exceptions import RunCancelled
from ._receipt import tool_finished, tool_started
from ._threads import DEFAULT_GRACE, to_thread
from ._validate import seconds

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ("stoppable",)

P = ParamSpec("P")
T = TypeVar("T")


@overload
def stoppable(fn: Callable[P, T], /) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def stoppable(
    *, grace: float = DEFAULT_GRACE
) -> Callable[[Callable[P, T]], Callable[P, Coroutine[Any, Any, T]]]: ...


def stoppable(fn: Callable[P, T] | None = None, /, *, grace: float = DEFAULT_GRACE) -> Any:
    """Make a sync function an async one that runs in a stoppable worker thread.

    Usage: ``@stoppable`` or ``@stoppable(grace=2.0)`` on a sync function that calls
    ``cancelkit.current_token().check()`` between units of work.

    Args:
        fn: the sync function.
        grace: seconds a cancelled caller waits for the thread before abandoning
            it (see :func:`cancelkit.to_thread`).

    Raises:
        TypeError: ``fn`` is not callable, or is already async.
        ValueError: a bad ``grace``.
    """
    limit = seconds(grace, "grace", allow_none=False)
    assert limit is not None

    def wrap(function: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
        if not callable(function):
            raise TypeError(f"stoppable() needs a function, not {type(function).__name__}")
        if inspect.iscoroutinefunction(function):
            raise TypeError(f"stoppable(): {function.__qualname__} is already async")
        name = getattr(function, "__name__", None) or repr(function)

        @functools.wraps(function)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            tool_started(name)
            outcome = "failed"
            try:
                value = await to_thread(functools.partial(function, *args, **kwargs), grace=limit)
                outcome = "completed"
                return value
            except BaseException as exc:
                # RunCancelled: the tool saw its token; a BaseException: the caller's
                # own cancellation.
                if isinstance(exc, RunCancelled) or not isinstance(exc, Exception):
                    outcome = "cancelled"
                raise
            finally:
                tool_finished(name, outcome)

        return call

    return wrap(fn) if fn is not None else wrap
