"""openai-agents runs that Stop stops: cancellable by id, no orphans, usage kept.

An openai-agents streamed run (``Runner.run_streamed``) has a Stop of its own,
``result.cancel()``, that the caller must reach: it holds no id, so another task,
thread or process cannot press it. Closing its event stream instead waits for the
whole run to end (the model goes on generating), and cancelling the task that
reads it leaves the framework's own tasks unwinding after the run reports done,
while a sync tool, in ``asyncio.to_thread``, runs to its end.

:func:`run_streamed` runs the agent inside the current cancelkit run (start it
with ``Runs.start`` or :func:`start`), so that:

- a Stop of the run (``Runs.cancel(run_id, reason)`` from any task or thread, or
  ``Runs.stop`` from another process) calls the framework's own
  ``result.cancel()``, which cancels its tasks and closes the model stream;
- the framework's own ``result.cancel()`` (called in ``on_event``) ends the
  cancelkit run ``cancelled``, kind ``user``, with a message naming it;
- every task the framework starts is adopted (:func:`cancelkit.adopt_tasks`):
  none is left running when the run reports done;
- the text and items so far are kept (``outcome.partial``, a :class:`Partial`),
  and the usage of a cut-off turn is in the receipt when the model's client is
  built on :func:`~cancelkit.integrations.metered_http_client`.

Sync tools become stoppable with ``function_tool(cancelkit.stoppable(fn))``.
openai-agents runs on asyncio only; so does this module.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anyio.lowlevel import checkpoint

from .._adopt import adopt_tasks
from .._backends import current_backend
from .._exceptions import CancelReason
from .._extras import require
from .._receipt import keep_partial
from .._run import _current_run
from .._streams import guard_stream
from .._token import current_token

require("agents", "openai-agents", "cancelkit.integrations.openai_agents")
from agents import Runner  # noqa: E402 - after the check that names the extra

if TYPE_CHECKING:
    from collections.abc import Callable

    from agents import Agent, RunItem, RunResultStreaming, StreamEvent, TResponseInputItem
    from agents.run_state import RunState

    from .._run import Run
    from .._runs import Runs

__all__ = ("Partial", "run_streamed", "start")


@dataclass(frozen=True, slots=True)
class Partial:
    """What a stopped openai-agents run hands back (``outcome.partial``).

    Attributes:
        text: the text the model streamed, every turn's, up to the Stop.
        items: the run items the framework completed (messages, tool calls, tool
            outputs), as ``result.new_items``.
        messages: the conversation so far as input items
            (``result.to_input_list()``): pass it as the next run's input to go on.
    """

    text: str
    items: tuple[RunItem, ...]
    messages: tuple[TResponseInputItem, ...]


async def run_streamed(
    agent: Agent[Any],
    input: str | list[TResponseInputItem] | RunState[Any],
    *,
    on_event: Callable[[StreamEvent, RunResultStreaming], object] | None = None,
    **runner_options: Any,
) -> RunResultStreaming:
    """Run ``agent`` streamed, inside the current cancelkit run, to its end or a Stop.

    Usage::

        run = runs.start(openai_agents.run_streamed, agent, "Hello", run_id="chat-1")
        runs.cancel("chat-1", CancelReason("user", "Stop pressed"))  # any thread

    Args:
        agent: the openai-agents ``Agent``.
        input: its input, as ``Runner.run_streamed`` takes it.
        on_event: ``on_event(event, result)`` for each stream event (sync or async);
            calling ``result.cancel()`` in it stops the run (the framework's Stop).
        **runner_options: passed to ``Runner.run_streamed`` (``context``,
            ``max_turns``, ``hooks``, ``run_config``, ``session``...).

    Returns:
        The framework's finished ``RunResultStreaming`` (``final_output``...).

    Raises:
        RuntimeError: not inside a cancelkit run, or not on asyncio.
    """
    if current_backend() != "asyncio":
        raise RuntimeError(
            "cancelkit.integrations.openai_agents: openai-agents runs on asyncio only "
            f"(this is {current_backend()})"
        )
    token = current_token(required=True)
    run = _current_run.get()
    text: list[str] = []
    result: RunResultStreaming | None = None
    framework_stop = "none"
    try:
        async with adopt_tasks():
            result = streamed = Runner.run_streamed(agent, input, **runner_options)

            def stop_framework() -> None:
                # Called when the events end, or at a Stop of ours: note the
                # framework's own cancel first, then cancel it ourselves if it runs.
                nonlocal framework_stop
                framework_stop = _framework_cancel_mode(streamed)
                if not streamed.is_complete:
                    streamed.cancel()

            events = guard_stream(
                streamed.stream_events(),
                token=token,
                close=stop_framework,
                name="openai-agents stream_events",
            )
            async with events:
                async for event in events:
                    if event.type == "raw_response_event" and (
                        event.data.type == "response.output_text.delta"
                    ):
                        text.append(event.data.delta)
                    if on_event is not None:
                        outcome = on_event(event, result)
                        if inspect.isawaitable(outcome):
                            await outcome
        if framework_stop != "none":
            # The framework's own Stop ended the events: the run ends cancelled too.
            reason = CancelReason(
                "user", f"openai-agents RunResultStreaming.cancel(mode={framework_stop!r})"
            )
            if run is not None:
                run.cancel(reason, source="openai-agents RunResultStreaming.cancel()")
            else:
                token.cancel(reason)
            await checkpoint()  # the run's own cancellation is delivered here
        return result
    finally:
        if result is not None:
            keep_partial(
                Partial("".join(text), tuple(result.new_items), tuple(result.to_input_list()))
            )


def _framework_cancel_mode(result: RunResultStreaming) -> str:
    """How the framework's own ``cancel()`` was called: ``none``, ``immediate`` or
    ``after_turn`` (openai-agents 0.24 keeps it in this one private field)."""
    return str(getattr(result, "_cancel_mode", "none"))


def start(
    runs: Runs,
    agent: Agent[Any],
    input: str | list[TResponseInputItem] | RunState[Any],
    *,
    run_id: str | None = None,
    owner: object = None,
    timeout: float | None = None,
    on_event: Callable[[StreamEvent, RunResultStreaming], object] | None = None,
    **runner_options: Any,
) -> Run[RunResultStreaming]:
    """Start :func:`run_streamed` as a run of ``runs``: cancellable by id from anywhere.

    Args:
        runs: the registry (``Runs(backend=...)`` reaches it from other processes).
        agent, input, on_event, runner_options: as :func:`run_streamed`.
        run_id, owner, timeout: as :meth:`cancelkit.Runs.start`.

    Returns:
        The :class:`cancelkit.Run`; its value is the framework's result.
    """
    fn = functools.partial(run_streamed, on_event=on_event, **runner_options)
    return runs.start(fn, agent, input, run_id=run_id, owner=owner, timeout=timeout)
