"""Adopting the asyncio tasks other code creates: no framework task outlives its run.

Agent frameworks start asyncio tasks of their own (a tool call, a stream reader) with
plain ``asyncio.create_task``, and a cancelled framework run can report done while
those still run. On trio this cannot happen (every task lives in a nursery); on
asyncio the only place every new task passes through is the loop's task factory.
So one factory is installed per loop, on first use, chaining any factory already
there; it hands each new task to the *adopter* of the context the task is created
in (a context variable set by :func:`cancelkit.adopt_tasks`), and does nothing when
there is none. Tasks created inside an adopted task inherit its context, so they
are adopted too.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ("adopter", "install_factory")

adopter: ContextVar[Callable[[asyncio.Task[Any]], None] | None] = ContextVar(
    "cancelkit_task_adopter", default=None
)
"""Who adopts the tasks created in this context, if anyone."""

_MARK = "_cancelkit_adopting"


def install_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Install the adopting task factory on ``loop`` (once; an existing one is chained)."""
    previous = loop.get_task_factory()
    if getattr(previous, _MARK, False):
        return

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        if previous is not None:
            task = previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        context = kwargs.get("context")
        adopt = context.get(adopter) if context is not None else adopter.get()
        if adopt is not None and isinstance(task, asyncio.Task):
            adopt(task)
        return task

    setattr(factory, _MARK, True)
    loop.set_task_factory(factory)  # type: ignore[arg-type]  # typeshed lags the kwargs form
