"""A LangGraph run as a cancelkit run: Stop by id, with a reason, and nothing left behind.

LangGraph's own stop is ``RunControl.request_drain(reason)``: the graph finishes the
step it is in (the model's whole reply, the tools' whole run) and raises
``GraphDrained``. Cancelling the task that iterates ``graph.astream()`` stops it at
once instead: LangGraph cancels its node tasks and the model's HTTP stream is
closed. :func:`run_graph` iterates the graph inside a run and bridges the two:

- cancelkit's Stop (``runs.cancel(run_id, reason)`` from any task, thread or, with a
  backend, process) asks LangGraph to drain with the reason's message, so node code
  that reads ``runtime.control`` sees it, and cancels the iterating task, so the
  graph unwinds its own way at once (model stream closed, tool tasks cancelled);
- LangGraph's own stop (``control.request_drain()``) ends the run ``cancelled``,
  kind ``user``, the message naming the drain, when the graph has drained.

The graph runs inside :func:`cancelkit.adopt_tasks`, so no task it starts outlives
the run; sync tools decorated with :func:`cancelkit.stoppable` stop at their next
``current_token().check()``; the run hands back a :class:`GraphPartial` (the last
complete state, the text of the turn cut off); with the model's client built on
:func:`~cancelkit.integrations.metered_http_client`, the receipt has the usage of
the cut-off turn. LangGraph runs on asyncio only.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .._adopt import adopt_tasks
from .._backends import current_backend
from .._exceptions import CancelReason, RunCancelled
from .._extras import require
from .._receipt import keep_partial
from .._run import _current_run
from .._streams import guard_stream
from .._token import current_token

_errors = require("langgraph.errors", "langgraph", "cancelkit.integrations.langgraph")
_runtime = require("langgraph.runtime", "langgraph", "cancelkit.integrations.langgraph")

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.pregel import Pregel
    from langgraph.runtime import RunControl

    from .._run import Run
    from .._runs import Runs

    OnMessage = Callable[[BaseMessage, dict[str, Any]], object]

__all__ = ("GraphPartial", "run_graph", "start_graph")

DRAIN_SOURCE = "LangGraph RunControl.request_drain"


@dataclass(frozen=True, slots=True)
class GraphPartial:
    """What a graph run hands back, however it ended (``run.outcome.partial``).

    Attributes:
        state: the graph's state after its last complete step (``None`` before
            the first one); for a ``MessagesState`` graph, ``state["messages"]``.
        text: the text the model had streamed in the step in progress: the turn
            a Stop cut off (empty if the run ended between steps).
        messages: how many message chunks were streamed in all.
    """

    state: dict[str, Any] | None
    text: str = ""
    messages: int = field(default=0)


def _require_asyncio(where: str) -> None:
    try:
        backend = current_backend()
    except RuntimeError:
        backend = None
    if backend != "asyncio":
        raise RuntimeError(
            f"{where}: LangGraph runs on asyncio only, not {backend or 'no event loop'}; "
            "run this under asyncio (asyncio.run, or anyio.run(..., backend='asyncio'))"
        )


async def run_graph(
    graph: Pregel[Any, Any, Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
    *,
    control: RunControl | None = None,
    on_message: OnMessage | None = None,
) -> dict[str, Any] | None:
    """Run a compiled LangGraph graph to its end inside the current run.

    Start it as a run: ``runs.start(run_graph, graph, input, run_id=...)`` (or
    :func:`start_graph`, which also passes the keyword arguments).

    Args:
        graph: a compiled graph (``StateGraph(...).compile()``).
        input: the graph's input (``{"messages": [("user", prompt)]}``).
        config: LangGraph's ``RunnableConfig`` (``thread_id`` for a checkpointer...).
        control: LangGraph's ``RunControl``, for LangGraph's own stop: its
            ``request_drain(reason)`` (from any thread) ends the run ``cancelled``
            once the graph has drained. A cancelkit Stop drains it too.
        on_message: called (sync or async) with each message chunk the graph
            streams and its metadata (LangGraph's ``stream_mode="messages"``).

    Returns:
        The graph's final state.

    Raises:
        RuntimeError: outside a run, or not on asyncio.
        RunCancelled: LangGraph's own stop drained the run (the run is cancelled
            with that reason); a cancelkit Stop cancels the run's task instead.
    """
    _require_asyncio("run_graph()")
    token = current_token(required=True)
    drain = control if control is not None else _runtime.RunControl()
    handle = token.on_cancel(lambda reason: drain.request_drain(_drain_message(reason)))
    state: dict[str, Any] | None = None
    text: list[str] = []
    count = 0
    try:
        stream = graph.astream(input, config, stream_mode=["messages", "values"], control=drain)
        async with (
            adopt_tasks(),
            guard_stream(stream, token=token, name="langgraph astream") as chunks,
        ):
            async for item in chunks:
                mode, chunk = cast("tuple[str, Any]", item)
                if mode == "values":
                    state, text = chunk, []
                    continue
                message, metadata = chunk
                count += 1
                content = getattr(message, "content", None)
                if isinstance(content, str) and getattr(message, "type", "") == "AIMessageChunk":
                    text.append(content)
                if on_message is not None:
                    outcome = on_message(message, metadata)
                    if inspect.isawaitable(outcome):
                        await outcome
    except _errors.GraphDrained as drained:
        raise _drained(drained.reason) from None
    finally:
        handle.remove()
        keep_partial(GraphPartial(state, "".join(text), count))
    return state


def _drain_message(reason: CancelReason) -> str:
    return f"cancelkit Stop ({reason.kind}): {reason.message}"


def _drained(why: str) -> RunCancelled:
    """LangGraph drained on its own: the run ends cancelled, saying so."""
    token = current_token()
    if token.reason is not None:  # a cancelkit Stop asked for the drain: its reason
        return RunCancelled(token.reason)
    reason = CancelReason("user", f"LangGraph's own stop: RunControl.request_drain({why!r})")
    run = _current_run.get()
    if run is not None:
        run.cancel(reason, source=DRAIN_SOURCE)
    else:
        token.cancel(reason)
    return RunCancelled(token.reason or reason)


def start_graph(
    runs: Runs,
    graph: Pregel[Any, Any, Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
    *,
    control: RunControl | None = None,
    on_message: OnMessage | None = None,
    run_id: str | None = None,
    owner: object = None,
    timeout: float | None = None,
) -> Run[dict[str, Any] | None]:
    """Start :func:`run_graph` as a run of ``runs``: cancellable by id from anywhere.

    Call it from a task of the asyncio loop the graph should run on. The keyword
    arguments are :func:`run_graph`'s and :meth:`cancelkit.Runs.start`'s.

    Raises:
        RuntimeError: not on asyncio.
        ValueError: ``run_id`` is in use by an active run.
    """
    _require_asyncio("start_graph()")
    body = functools.partial(
        run_graph, graph, input, config, control=control, on_message=on_message
    )
    return runs.start(body, run_id=run_id, owner=owner, timeout=timeout)
