"""What a run's events look like on the wire: one JSON payload per event.

One translation for every path that shows a run: the Server-Sent Events of
``GET /api/runs/{id}/events`` (``delta``, ``tool_call``, ``tool_result``, ``usage``,
then ``done`` with the receipt), the Redis Stream through which other workers follow
a run (``_feeds.py``), and the answer of ``GET /api/runs/{id}``. A worker that does not
hold a run rebuilds that answer from the registry's record and the run's stream
(:func:`summarize`), so it reads the same as one built from the live run
(:func:`describe`).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from ..agent import AgentResult, ToolFinished
from ..llm import TextDelta, ToolCall, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable

    from .. import RunInfo
    from ..agent import AgentRun

__all__ = ("ENDED", "Event", "batches", "describe", "payload", "sse", "summarize")

#: One event as it travels: its name and its JSON-able data.
Event = tuple[str, dict[str, Any]]

#: The statuses of a run that has ended.
ENDED = frozenset({"completed", "cancelled", "failed"})


def sse(name: str, data: Any) -> bytes:
    """One Server-Sent Event."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def batches(run: AgentRun) -> AsyncGenerator[list[Event], None]:
    """A run's events, as they are sent: each batch is what the run had emitted and
    not yet sent when its follower looked, with consecutive text deltas as one.

    A follower that keeps up gets each event alone and at once (the first token, the
    ``done``, are never held back); one that fell behind catches up in one write, not
    one per token. Readers of ``delta`` events concatenate their texts either way.
    """
    batch: list[Event] = []
    texts: list[str] = []  # the deltas at the batch's end, joined once (not per token)
    seen = 0
    async with contextlib.aclosing(run.follow()) as events:
        async for event in events:
            seen += 1
            item = payload(event)
            if item is not None and item[0] == "delta":
                texts.append(item[1]["text"])
            elif item is not None:
                _end_text(batch, texts)
                batch.append(item)
            if seen >= len(run.events) and (batch or texts):  # a wait next, or the end
                _end_text(batch, texts)
                yield batch
                batch = []


def _end_text(batch: list[Event], texts: list[str]) -> None:
    """Close the batch's run of text deltas as one ``delta`` event."""
    if texts:
        batch.append(("delta", {"text": "".join(texts)}))
        texts.clear()


def _unreachable(error: BaseException | None) -> bool:
    """Whether a run failed because the model server could not be reached (or vanished)."""
    try:
        import httpx2  # noqa: PLC0415 - comes with the SDKs
    except ImportError:  # pragma: no cover - depends on the installation
        transport: tuple[type[BaseException], ...] = (OSError,)
    else:
        transport = (OSError, httpx2.TransportError)
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, transport):  # the SDKs' connection errors chain to these
            return True
        error = error.__cause__ or error.__context__
    return False


def _reason(result: AgentResult) -> dict[str, str] | None:
    if result.reason is None:
        return None
    message = result.reason.message
    if result.status == "failed" and _unreachable(result.error):
        message = f"the model server is unreachable ({message})"
    return {"kind": result.reason.kind, "message": message}


def describe(result: AgentResult) -> dict[str, Any]:
    """A run as ``GET /api/runs/{id}`` and the ``done`` event show it.

    ``receipt`` is the run's Stop receipt (:meth:`~cancelkit.StopReceipt.to_dict`,
    plain JSON, so it survives the Redis Stream unchanged) once the run has ended,
    ``None`` while it runs.
    """
    receipt = result.receipt
    return {
        "id": result.run_id,
        "status": result.status,
        "reason": _reason(result),
        "text": result.text,
        "usage": _usage(result.usage),
        "turns": result.turns,
        "tool_calls": [c.name for c in result.tool_calls],
        "receipt": None if receipt is None else receipt.to_dict(),
    }


def _usage(usage: Usage) -> dict[str, Any]:
    """``Usage`` as JSON: its fields by name (``dataclasses.asdict``'s answer, without
    its recursive deep copy: 0.07 us a call against 2.6 us, a few times per run)."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "estimated": usage.estimated,
    }


def payload(event: Any) -> Event | None:
    """One event of an agent run as it is sent (``None``: not shown)."""
    if isinstance(event, TextDelta):
        return "delta", {"text": event.text}
    if isinstance(event, ToolCall):
        return "tool_call", {"name": event.name, "arguments": event.arguments}
    if isinstance(event, ToolFinished):
        return "tool_result", {
            "name": event.name,
            "content": event.content,
            "is_error": event.is_error,
        }
    if isinstance(event, Usage):
        return "usage", _usage(event)
    if isinstance(event, AgentResult):
        return "done", describe(event)
    return None


def summarize(info: RunInfo, events: Iterable[Event]) -> dict[str, Any]:
    """A run held by another worker, as :func:`describe` would show it.

    The status and reason are the registry's (``info``). Once the run's ``done`` event
    is in its stream, that receipt is the answer; before it, the text is put together
    from the deltas still in the (bounded) stream, ``usage`` is the last one reported
    (``None`` before the first), ``turns`` is unknown (``None``), and so is the
    receipt: only the worker that held the run can write it.
    """
    text: list[str] = []
    tools: list[str] = []
    usage: dict[str, Any] | None = None
    new_turn = False
    for name, data in events:
        if name == "done":
            return data
        if name == "delta":
            text.append(("\n" if new_turn else "") + str(data.get("text", "")))
            new_turn = False
        elif name == "tool_call":
            tools.append(str(data.get("name")))
        elif name == "tool_result":
            new_turn = True  # the agent starts its next turn on a new line
        elif name == "usage":
            usage = data
    reason = info.reason
    return {
        "id": info.run_id,
        "status": info.status,
        "reason": None if reason is None else {"kind": reason.kind, "message": reason.message},
        "text": "".join(text),
        "usage": usage,
        "turns": None,
        "tool_calls": tools,
        "receipt": None,
    }
