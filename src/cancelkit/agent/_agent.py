"""``Agent``: an agent loop built only on cancelkit's lower layers.

One run per prompt (in a :class:`~cancelkit.Runs` registry): model turns streamed
through the model protocol, tool calls run in parallel with :func:`cancelkit.gather`
(sync tools in threads via :func:`cancelkit.to_thread`, sub-agents as child runs), an
optional :class:`~cancelkit.Budget`, and an optional :func:`~cancelkit.transaction`
for every write of the run. One Stop cancels all of it with one reason.
"""

from __future__ import annotations

import functools
import json
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio

from .. import RunCancelled, Runs, Transaction, gather, keep_partial, to_thread, transaction
from .._exceptions import is_cancellation
from .._receipt import tool_finished, tool_prevented, tool_started
from ..llm import Message, TextDelta, ToolCall, ToolResult
from ._events import AgentResult, AgentRun, ToolFinished
from ._store import create_tables, record_reply
from ._tools import FunctionTool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from .. import Budget, Store
    from ..llm import Model

__all__ = ("Agent", "current_transaction")

_transaction: ContextVar[Transaction | None] = ContextVar("cancelkit_agent_tx", default=None)


def current_transaction() -> Transaction | None:
    """The transaction of the agent run this tool runs in (stage writes on it)."""
    return _transaction.get()


class Agent:
    """An agent: a model, tools, and the limits of a run.

    Args:
        model: an :class:`~cancelkit.llm.AnthropicModel`, an ``OpenAIModel``, ...
        tools: :func:`tool` functions, and sub-agents via :meth:`as_tool`.
        system: the system prompt.
        max_turns: model calls per run, at most.
        max_tokens: per model call.
        runs: the registry runs are started in (a new one by default).
        store: where the run's writes go, in one transaction (see
            :func:`current_transaction`); the final reply and usage are recorded
            there, in ``cancelkit_replies`` (created by :meth:`setup`).
    """

    def __init__(
        self,
        model: Model,
        *,
        tools: Sequence[FunctionTool] = (),
        system: str | None = None,
        max_turns: int = 8,
        max_tokens: int = 1024,
        runs: Runs | None = None,
        store: Store | None = None,
    ) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique: {names}")
        self.model = model
        self.tools = {t.name: t for t in tools}
        self.system = system
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.runs = runs if runs is not None else Runs()  # an empty Runs is falsy
        self.store = store

    async def setup(self) -> None:
        """Create the agent's table (``cancelkit_replies``) on its store, if missing.

        Call it once, after the store's own ``setup()`` and before the first run; a
        no-op without a store. Safe to repeat.

        Raises:
            TypeError: the store cannot run a statement (it has no ``execute()``).
        """
        if self.store is not None:
            await create_tables(self.store)

    def start(
        self,
        prompt: str,
        *,
        run_id: str | None = None,
        owner: object = None,
        budget: Budget | None = None,
        timeout: float | None = None,
    ) -> AgentRun:
        """Start a run for ``prompt``; call from a task of the loop it should run on."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt must be a non-empty string")
        holder: list[AgentRun] = []
        run = self.runs.start(
            self._loop, holder, prompt, budget, run_id=run_id, owner=owner, timeout=timeout
        )
        state = AgentRun(run)  # wakes its followers when the run ends
        holder.append(state)
        return state

    async def run(self, prompt: str, **kwargs: Any) -> AgentResult:
        """Run to the end (completed, cancelled or failed); never raises the run's error."""
        state = self.start(prompt, **kwargs)
        try:
            await state.run.wait()
        finally:
            if not state.run.done():  # the caller was cancelled: so is the run
                state.run.cancel()
                with anyio.CancelScope(shield=True):
                    await state.run.wait()
        return state.result()

    @asynccontextmanager
    async def stream(self, prompt: str, **kwargs: Any) -> AsyncIterator[AsyncIterator[Any]]:
        """Events of a new run; leaving the block early cancels the run (any task)."""
        state = self.start(prompt, **kwargs)
        events = state.follow()
        try:
            yield events
        finally:
            state.run.cancel()
            with anyio.CancelScope(shield=True):
                await events.aclose()  # closed here, in the consuming task, not by the GC
                await state.run.wait()

    def as_tool(self, name: str, description: str) -> FunctionTool:
        """This agent as a tool of another: a child run for the ``task`` argument."""

        async def delegate(task: str) -> str:
            result = await self.run(task)
            if result.status != "completed":
                raise RuntimeError(f"sub-agent {name} {result.status}: {result.reason}")
            return result.text

        return FunctionTool(
            name,
            description,
            delegate,
            {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]},
        )

    async def _loop(self, holder: list[AgentRun], prompt: str, budget: Budget | None) -> str:
        await anyio.lowlevel.checkpoint()  # start() has stored the state by now
        state = holder[0]
        if self.store is None:
            return await self._turns(state, prompt, budget, None)
        async with transaction(self.store, state.id) as tx:
            reset = _transaction.set(tx)
            try:
                text = await self._turns(state, prompt, budget, tx)
            finally:
                _transaction.reset(reset)
            record_reply(tx, state)
        return text

    async def _turns(
        self, state: AgentRun, prompt: str, budget: Budget | None, tx: Transaction | None
    ) -> str:
        messages = [Message.user(prompt)]
        specs = [t.spec for t in self.tools.values()]
        for turn in range(1, self.max_turns + 1):
            state.turns = turn
            stream = self.model.stream(
                messages, system=self.system, tools=specs, max_tokens=self.max_tokens, budget=budget
            )
            try:
                async with stream:
                    async for event in stream:
                        if isinstance(event, TextDelta):
                            state.text += event.text
                            state.emit(event)
                        elif isinstance(event, ToolCall):
                            state.tool_calls.append(event)
                            state.emit(event)
            except BaseException as exc:
                keep_partial(state.text)
                # Asked for, never begun: the Stop came first (a failure prevented nothing).
                if is_cancellation(exc):
                    for call in stream.tool_calls:
                        tool_prevented(call.name)
                raise
            finally:
                state.add_usage(stream.usage)
            if not stream.tool_calls:
                return state.text
            started: set[str] = set()
            try:
                results = await gather(
                    *(self._call(call, state, started) for call in stream.tool_calls)
                )
            except BaseException as exc:
                keep_partial(state.text)
                if is_cancellation(exc):
                    for call in stream.tool_calls:
                        if call.id not in started:
                            tool_prevented(call.name)
                raise
            messages += [
                Message("assistant", stream.text, tool_calls=tuple(stream.tool_calls)),
                Message("user", tool_results=tuple(results)),
            ]
            state.text += "\n"
        return state.text

    async def _call(self, call: ToolCall, state: AgentRun, started: set[str]) -> ToolResult:
        found = self.tools.get(call.name)
        started.add(call.id)
        tool_started(call.name)
        outcome = "cancelled"
        try:
            if found is None:
                raise LookupError(f"no tool named {call.name!r}")
            if found.is_async:
                value = await found.fn(**call.arguments)
            else:
                value = await to_thread(functools.partial(found.fn, **call.arguments))
            content, is_error = (value if isinstance(value, str) else json.dumps(value)), False
            outcome = "completed"
        except Exception as exc:  # noqa: BLE001 - the model is told, and may try another way
            content, is_error = f"{type(exc).__name__}: {exc}", True
            outcome = "cancelled" if isinstance(exc, RunCancelled) else "failed"
        finally:
            tool_finished(call.name, outcome)
        state.emit(ToolFinished(call.id, call.name, content, is_error))
        return ToolResult(call.id, content, is_error)
