"""``Background``: work owned by an object, closable from any task.

A client or session object often starts background work (a reader, a heartbeat) in
``start()`` and must be closable from somewhere else: a request handler, another
task, or Python's async-generator finalizer, which runs ``aclose()`` in a task of
its own. Holding an anyio task group or trio nursery for that work fails there with
"Attempted to exit cancel scope in a different task than it was entered in", and
bare asyncio tasks lose trio. ``Background`` owns loose tasks instead
(:mod:`cancelkit._tasks`): ``aclose()`` cancels and awaits them from any task, and
the sync ``close()`` is safe from a finalizer or another thread.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

from ._exceptions import CancelReason
from ._tasks import TaskHandle, TaskState, start_task
from ._token import CancelToken
from ._validate import close_all, seconds

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from types import TracebackType

__all__ = ("Background",)

T = TypeVar("T")

logger = logging.getLogger("cancelkit")

_CLOSED = CancelReason("parent", "its Background was closed")


class Background:
    """A set of background tasks owned by one object.

    Usage::

        class Client:
            def __init__(self) -> None:
                self._background = Background("client")

            async def start(self) -> None:
                self._background.spawn(self._read_loop())

            async def aclose(self) -> None:  # from any task
                await self._background.aclose()

    A task that fails is logged (logger ``cancelkit``) with its traceback; awaiting
    its handle's ``result()`` gets the error itself.

    Args:
        name: used in task names and log messages.
    """

    def __init__(self, name: str = "background") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._tasks: set[TaskHandle[Any]] = set()
        self._closed = False
        self._root = CancelToken()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._tasks)} running"
        return f"<Background {self.name!r} {state}>"

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``aclose()`` has been called."""
        return self._closed

    @property
    def tasks(self) -> list[TaskHandle[Any]]:
        """The tasks still running."""
        with self._lock:
            return list(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> TaskHandle[T]:
        """Start ``coro`` as a task owned by this object.

        Callable from any task of the event loop the work should run on.

        Returns:
            The task's handle.

        Raises:
            RuntimeError: the object has been closed (the coroutine is closed too).
            TypeError: ``coro`` is not a coroutine.
        """
        if self._closed:
            close_all([coro])
            raise RuntimeError(f"Background {self.name!r} is closed")
        task_name = name or f"{self.name}:{getattr(coro, '__qualname__', 'task')}"
        handle = start_task(coro, name=task_name, token=self._root.child())
        with self._lock:
            self._tasks.add(handle)
        handle.add_done_callback(self._on_done)
        return handle

    def _on_done(self, handle: TaskHandle[Any]) -> None:
        with self._lock:
            self._tasks.discard(handle)
        if handle.state is TaskState.FAILED:
            logger.error("cancelkit: background task %s failed", handle.name, exc_info=handle.error)

    def close(self, reason: CancelReason | None = None) -> None:
        """Cancel every task without waiting; safe from any thread or a finalizer.

        Args:
            reason: passed to the tasks' tokens (default: kind ``parent``).
        """
        self._closed = True
        self._root.cancel(reason or _CLOSED)

    async def aclose(self, grace: float = 5.0, reason: CancelReason | None = None) -> list[str]:
        """Cancel every task and wait for them, from any task.

        Waiting is shielded from cancellation of the caller and bounded by
        ``grace``; tasks still running after it are named in a warning and returned.

        Returns:
            The names of tasks that did not stop within ``grace``.
        """
        limit = seconds(grace, "grace", allow_none=False)
        assert limit is not None
        self.close(reason)
        deadline = time.monotonic() + limit
        stragglers = []
        for handle in self.tasks:
            if not await handle.wait_shielded(max(0.0, deadline - time.monotonic())):
                stragglers.append(handle.name)
        if stragglers:
            warnings.warn(
                f"cancelkit: Background {self.name!r}: tasks still running {limit}s "
                f"after cancel: {', '.join(stragglers)}",
                RuntimeWarning,
                stacklevel=2,
            )
        return stragglers

    async def __aenter__(self) -> Background:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
