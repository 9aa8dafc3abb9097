"""What an agent run tells its followers: the events it emits and how it ended.

An :class:`AgentRun` is the live side of one run (its text so far, its usage, its
event log, which any number of tasks may follow); an :class:`AgentResult` is the
receipt once it has ended. They are kept apart from the loop that produces them
(``_agent.py``) so that code which only reads runs (a web service, a log) needs
nothing of how turns and tools are driven.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..llm import ToolCall, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from .. import CancelReason, Run, RunStatus, StopReceipt

__all__ = ("AgentResult", "AgentRun", "ToolFinished")


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """An event: a tool call returned (``is_error`` if it raised)."""

    call_id: str
    name: str
    content: str
    is_error: bool


@dataclass
class AgentResult:
    """How an agent run ended (or how it stands, while it runs)."""

    run_id: str
    status: RunStatus
    reason: CancelReason | None
    text: str
    usage: Usage
    turns: int
    tool_calls: list[ToolCall]
    error: BaseException | None = None
    receipt: StopReceipt | None = None
    """What the Stop stopped and when, once the run has ended."""


@dataclass
class AgentRun:
    """A live agent run: its run, what it has said so far, and its event log.

    ``events`` grows as the run goes; :meth:`follow` iterates it from any task.
    """

    run: Run[str]
    text: str = ""
    turns: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    events: list[Any] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    _changed: anyio.Event | None = None  # made by a follower about to wait, only

    def __post_init__(self) -> None:
        # Followers wait on _changed: the run's end must wake them as an event does.
        self.run.add_done_callback(lambda _run: self.wake())

    @property
    def id(self) -> str:
        """The run's id (as in its :class:`~cancelkit.Runs` registry)."""
        return self.run.id

    @property
    def usage(self) -> Usage:
        """Tokens used so far, over every model call of the run."""
        return Usage(self.input_tokens, self.output_tokens, self.estimated)

    def emit(self, event: Any) -> None:
        """Append ``event`` to the log and wake the followers."""
        self.events.append(event)
        self.wake()

    def wake(self) -> None:
        """Wake every follower (an event was added, or the run ended).

        The event exists only while a follower waits on it: a run emits an event per
        token, most of them while its followers are busy sending the last ones.
        """
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def add_usage(self, usage: Usage | None) -> None:
        """Count one model call's usage, and tell the followers the new total."""
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.estimated = self.estimated or usage.estimated
            self.emit(self.usage)

    def result(self) -> AgentResult:
        """The run as it stands: its receipt once it has ended."""
        outcome = self.run.outcome
        return AgentResult(
            self.run.id,
            self.run.status,
            self.run.reason,
            self.text,
            self.usage,
            self.turns,
            list(self.tool_calls),
            outcome.error if outcome else None,
            outcome.receipt if outcome else None,
        )

    async def follow(self) -> AsyncGenerator[Any, None]:
        """Every event, past and future, until the run has ended (then its result)."""
        index = 0
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.run.done():
                yield self.result()
                return
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()  # set by emit(), and by the run's end
