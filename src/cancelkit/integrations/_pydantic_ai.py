"""The bridge between a pydantic-ai run and the cancelkit run it works for.

pydantic-ai has its own cancel (a thread-safe ``CancellationToken``, ``RunCancelled``
with the messages so far); cancelkit has the run's token. Each fires the other, so
the run ends once, with one reason, however it was stopped. Public as
:mod:`cancelkit.integrations.pydantic_ai`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anyio.lowlevel import checkpoint

from .._adopt import adopt_tasks
from .._backends import current_backend
from .._exceptions import CancelReason
from .._extras import require
from .._receipt import keep_partial
from .._run import _current_run
from .._token import current_token

require("pydantic_ai", "pydantic-ai", "cancelkit.integrations.pydantic_ai")
import pydantic_ai  # noqa: E402 - after the check that names the extra
from pydantic_ai.messages import ModelResponse, TextPart  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Sequence

    from pydantic_ai.agent import AbstractAgent
    from pydantic_ai.messages import AgentStreamEvent, ModelMessage, UserContent
    from pydantic_ai.run import AgentRunResult
    from pydantic_ai.tools import RunContext

    from .._run import Run
    from .._runs import Runs

__all__ = ("AgentPartial", "run_agent", "start_agent")

logger = logging.getLogger("cancelkit")

_SOURCE = "pydantic-ai's own cancel"


@dataclass(frozen=True, slots=True)
class AgentPartial:
    """What a stopped pydantic-ai run had: its ``outcome.partial``.

    Attributes:
        messages: the run's messages so far, the cut-off response included (pass
            them as ``message_history`` to a new run to resume).
        text: the text of the last model response, as far as it arrived.
    """

    messages: list[ModelMessage]
    text: str


async def run_agent(
    agent: AbstractAgent[Any, Any],
    user_prompt: str | Sequence[UserContent] | None = None,
    /,
    **run_kwargs: Any,
) -> AgentRunResult[Any]:
    """Run ``agent.run(user_prompt, **run_kwargs)`` as the current cancelkit run's work.

    Start it as a run: ``runs.start(run_agent, agent, prompt, run_id=...)``, or with
    keyword arguments for ``agent.run`` through :func:`start_agent`.

    Args:
        agent: a pydantic-ai agent.
        user_prompt: the prompt.
        **run_kwargs: passed to ``agent.run`` (``deps``, ``message_history``...). A
            ``cancellation_token`` given here is bridged like the run's own; an
            ``event_stream_handler`` replaces the one that drains the events.

    Returns:
        pydantic-ai's result.

    Raises:
        RuntimeError: not inside a cancelkit run, or on trio.
    """
    _require_asyncio()
    token = current_token(required=True)
    run = _current_run.get()
    theirs = run_kwargs.pop("cancellation_token", None) or pydantic_ai.CancellationToken()
    run_kwargs.setdefault("event_stream_handler", _drain)
    bridge = token.on_cancel(lambda _reason: _cancel_theirs(theirs))
    try:
        async with adopt_tasks():
            try:
                return await agent.run(user_prompt, cancellation_token=theirs, **run_kwargs)
            except pydantic_ai.RunCancelled as exc:  # pydantic-ai's own stop (or ours, relayed)
                keep_partial(_partial(exc))
                if run is not None and run.token is token:
                    run.cancel(_reason_for(exc), source=_SOURCE)
                else:  # a task spawned inside a run: end that task, not the whole run
                    token.cancel(_reason_for(exc))
                await checkpoint()  # our cancellation lands here (first reason wins)
                # Reached only if it had already been delivered, and consumed: the
                # token is cancelled, so this task ends cancelled all the same.
                raise asyncio.CancelledError from exc
            except BaseException as exc:
                # Our own Stop arrives as the loop's cancellation; pydantic-ai hangs the
                # run's state on it.
                found = pydantic_ai.RunCancelled.from_cancellation(exc)
                if found is not None:
                    keep_partial(_partial(found))
                raise
    finally:
        bridge.remove()


def start_agent(
    runs: Runs,
    agent: AbstractAgent[Any, Any],
    user_prompt: str | Sequence[UserContent] | None = None,
    /,
    *,
    run_id: str | None = None,
    owner: object = None,
    timeout: float | None = None,
    **run_kwargs: Any,
) -> Run[AgentRunResult[Any]]:
    """Start ``agent.run(user_prompt, **run_kwargs)`` as a run of ``runs``.

    Usage::

        run = start_agent(runs, agent, "Summarise the report", run_id="chat-1", owner=user)
        ...
        runs.cancel("chat-1", CancelReason("user", "Stop pressed"))  # any task, any thread
        outcome = await run.wait()  # outcome.partial: AgentPartial, outcome.receipt

    Args:
        runs: the registry.
        agent: a pydantic-ai agent.
        user_prompt: the prompt.
        run_id, owner, timeout: as :meth:`cancelkit.Runs.start`.
        **run_kwargs: passed to ``agent.run`` (see :func:`run_agent`).

    Raises:
        RuntimeError: on trio (pydantic-ai runs on asyncio only); as
            :meth:`cancelkit.Runs.start` otherwise.
    """
    _require_asyncio()

    async def body() -> AgentRunResult[Any]:
        return await run_agent(agent, user_prompt, **run_kwargs)

    return runs.start(body, run_id=run_id, owner=owner, timeout=timeout)


def _require_asyncio() -> None:
    backend = current_backend()
    if backend != "asyncio":
        raise RuntimeError(
            f"cancelkit.integrations.pydantic_ai: pydantic-ai runs on asyncio only, not "
            f"{backend} (run this code under asyncio: anyio.run(main, backend='asyncio'))"
        )


def _cancel_theirs(theirs: pydantic_ai.CancellationToken) -> None:
    try:
        theirs.cancel()  # thread-safe: delivered on the run's loop
    except pydantic_ai.UserError:  # a loop it cannot reach: our own cancel still lands
        logger.warning("cancelkit: pydantic-ai's CancellationToken could not reach its run")


def _reason_for(exc: pydantic_ai.RunCancelled) -> CancelReason:
    if isinstance(exc, pydantic_ai.RunTimedOut):
        return CancelReason("timeout", "pydantic-ai's own timeout (agent.run(timeout=)) expired")
    return CancelReason(
        "user",
        "pydantic-ai's own cancel stopped the run (AgentRun.cancel(), "
        f"RunContext.cancel() or CancellationToken.cancel()): {exc.message}",
    )


def _partial(exc: pydantic_ai.RunCancelled) -> AgentPartial:
    messages = exc.all_messages()
    text = ""
    for message in reversed(messages):
        if isinstance(message, ModelResponse):
            text = "".join(part.content for part in message.parts if isinstance(part, TextPart))
            break
    return AgentPartial(messages, text)


async def _drain(_ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
    """The default event handler: streams the model's replies, drops the events."""
    async for _event in events:
        pass
