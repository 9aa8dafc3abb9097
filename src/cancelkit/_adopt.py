"""``adopt_tasks()``: tasks other code starts inside a block end with the block.

A framework run started inside a cancelkit run creates tasks of its own with plain
``asyncio.create_task`` (a tool call, a stream reader). If the framework reports
done, or is cancelled, while some of those still run, they are orphans: nobody
cancels them, nobody waits for them. Inside ``async with adopt_tasks():`` every
task created (directly or by an adopted task) is adopted: when the block is left,
for any cause, the ones still running are cancelled with the run's reason and
waited for, bounded by ``grace``, in the task that owns the block; each one's end
goes into the run's receipt (layer ``task``), and one that outlives ``grace`` is
reported by name. On trio every task already lives in a nursery, so the block
only has to be there.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._backends import current
from ._exceptions import CancelReason
from ._token import current_token
from ._validate import seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ("Adopted", "adopt_tasks")

logger = logging.getLogger("cancelkit")

_BLOCK_ENDED = CancelReason("parent", "the block that adopted the task ended")


class Adopted:
    """The tasks a block adopted: the ones still running, and how many in all."""

    __slots__ = ("count", "running", "stragglers")

    def __init__(self) -> None:
        self.running: set[Any] = set()
        self.count = 0
        self.stragglers: list[str] = []


@asynccontextmanager
async def adopt_tasks(*, grace: float = 5.0) -> AsyncIterator[Adopted]:
    """Adopt every task created inside the block; none outlives it.

    Usage::

        async with cancelkit.adopt_tasks():
            result = await framework_agent.run(prompt)

    Args:
        grace: seconds to wait for the adopted tasks still running when the block
            is left (after they are cancelled).

    Yields:
        The :class:`Adopted` tasks (``stragglers`` names the ones still running
        after ``grace``: logged, never silently left).
    """
    limit = seconds(grace, "grace", allow_none=False)
    assert limit is not None
    backend = current()
    adopted = Adopted()
    stop_adopting = backend.adopt_new_tasks(adopted)
    try:
        yield adopted
    finally:
        try:
            if adopted.running:
                reason = current_token().reason or _BLOCK_ENDED
                # Still adopting: tasks the ending ones start as they unwind are ours too.
                adopted.stragglers = await backend.end_adopted(adopted, reason, limit)
                if adopted.stragglers:
                    logger.warning(
                        "cancelkit: adopted tasks still running %ss after their block ended: %s",
                        limit,
                        ", ".join(adopted.stragglers),
                    )
        finally:
            stop_adopting()
