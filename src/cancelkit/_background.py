"""``Background``: work owned by an object, closable from any task.

A client or session object often starts background work (a reader, a heartbeat) in
``start()`` and must be closable from somewhere else: a request handler, another
task, or Python's async-generator finalizer, which runs ``aclose()`` in a task of
its own. Holding an anyio task group or trio nursery for that work fails there with
"Attempted to exit cancel scope in a different task than it was entered in", and
bare asyncio tasks lose trio. ``Background`` owns loose tasks instead
(:mod:`cancelkit._tasks`): ``aclose()`` cancels and awaits them from any task, and
the sync ``close()`` is safe from a finalizer or another thread.

Work owned by an object belongs to the object, not to whichever run happened to
call ``start()``: its tasks are detached from the ambient run (a run started inside
them is not that run's child, and that run's end does not cancel them). Pass
``token=`` to tie them to something on purpose.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._exceptions import CancelReason
from ._run import work_context
from ._tasks import OwnedTask, start_task
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
    its handle's ``wait()`` or ``result()`` gets the error itself.

    Args:
        name: used in task names and log messages.
        token: when given, the tasks are also cancelled when it is (with its
            reason): ``Background("reader", token=run.token)`` ties them to a run.
            By default they belong to this object alone.
    """

    def __init__(self, name: str = "background", *, token: CancelToken | None = None) -> None:
        if token is not None and not isinstance(token, CancelToken):
            raise TypeError(f"token must be a CancelToken, not {type(token).__name__}")
        self.name = name
        self._lock = threading.Lock()
        self._tasks: dict[OwnedTask[Any], None] = {}  # insertion-ordered, for aclose(order=)
        self._closed = False
        self._reason = _CLOSED  # what close() cancels with (and a late spawn)
        # Tied to a token: one child of it for all the tasks, so that its cancel
        # reaches them; else each task has a token of its own, cancelled one by one.
        self._root = token.child() if token is not None else None

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._tasks)} running"
        return f"<Background {self.name!r} {state}>"

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``aclose()`` has been called."""
        return self._closed

    @property
    def tasks(self) -> list[OwnedTask[Any]]:
        """The tasks still running."""
        with self._lock:
            return list(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> OwnedTask[T]:
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
        token = self._root.child() if self._root is not None else CancelToken()
        # The object's own work: no run's child, sharing no run's worker threads.
        context = work_context(token, None, None)
        handle = start_task(coro, name=task_name, token=token, owner=self, context=context)
        with self._lock:
            self._tasks[handle] = None
        if self._closed:  # closed from another thread meanwhile: it missed this one
            handle.cancel(self._reason)
        return handle

    def _task_ended(self, handle: OwnedTask[Any]) -> None:
        """One of its tasks ended (see :class:`~cancelkit._tasks.TaskOwner`)."""
        with self._lock:
            self._tasks.pop(handle, None)
        if handle._state == "failed":  # noqa: SLF001 - its ending, as the owner hears it
            logger.error("cancelkit: background task %s failed", handle.name, exc_info=handle.error)

    def close(self, reason: CancelReason | None = None) -> None:
        """Cancel every task without waiting; safe from any thread or a finalizer.

        Args:
            reason: passed to the tasks' tokens (default: kind ``parent``).
        """
        self._cancel_all(reason or _CLOSED)

    async def aclose(
        self,
        grace: float | None = 5.0,
        reason: CancelReason | None = None,
        *,
        order: Literal["together", "reverse"] = "together",
    ) -> list[str]:
        """Cancel every task and wait for them, from any task.

        Waiting is shielded from cancellation of the caller and bounded by
        ``grace`` (``None``: no bound); tasks still running after it are named in a
        warning and returned.

        Args:
            grace: seconds to wait for the tasks in all, or ``None`` to wait until
                they have ended.
            reason: passed to the tasks' tokens (default: kind ``parent``).
            order: ``together`` cancels every task at once; ``reverse`` cancels the
                newest first and waits for it before the next (as an exit stack
                unwinds), for tasks that use what older ones provide.

        Returns:
            The names of tasks that did not stop within ``grace``.
        """
        limit = seconds(grace, "grace")
        if order not in ("together", "reverse"):
            raise ValueError(f"order must be 'together' or 'reverse', not {order!r}")
        why = reason or _CLOSED
        deadline = math.inf if limit is None else time.monotonic() + limit
        stragglers = []
        if order == "together":
            self._cancel_all(why)
        else:
            self._reason, self._closed = why, True
        for handle in reversed(self.tasks) if order == "reverse" else self.tasks:
            if order == "reverse":
                handle.cancel(why)
            if not await handle.wait_shielded(max(0.0, deadline - time.monotonic())):
                stragglers.append(handle.name)
        self._cancel_all(why)  # and whatever was spawned meanwhile
        if stragglers:
            warnings.warn(
                f"cancelkit: Background {self.name!r}: tasks still running {limit}s "
                f"after cancel: {', '.join(stragglers)}",
                RuntimeWarning,
                stacklevel=2,
            )
        return stragglers

    def _cancel_all(self, reason: CancelReason) -> None:
        """Closed from now on; cancel every task (and the shared token, if any)."""
        if not self._closed:
            self._reason, self._closed = reason, True
        if self._root is not None:
            self._root.cancel(reason)
        # No lock: close() may run in a finalizer that interrupted this thread while
        # it held it. A dict's copy is atomic, and a token's cancel never waits.
        for handle in self._tasks.copy():
            handle.cancel(reason)

    async def __aenter__(self) -> Background:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
