"""``OpenAIModel``: the model protocol on the official ``openai`` SDK.

Only what is OpenAI's: the Chat Completions payload, the streamed ``create`` call
(asking for usage in the last chunk), the translation of its chunks, and the SDK's
name (its exceptions are mapped by it); the flow is :class:`SDKModel`'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._adapter import SDKModel
from ._stream import Translator
from ._types import Done, ModelEvent, StopReason, TextDelta, ToolCall, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    import openai  # noqa: F401 - named in a string: SDKModel["openai.AsyncOpenAI"]

    from ._types import Message, Tool

__all__ = ("OpenAIModel",)

_STOPS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _messages(system: str | None, messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        for result in message.tool_results:
            out.append({"role": "tool", "tool_call_id": result.call_id, "content": result.content})
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for c in message.tool_calls
                ]
            out.append(entry)
        elif message.text:
            out.append({"role": "user", "content": message.text})
    return out


class _OpenAITranslator(Translator):
    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]

    def feed(self, chunk: Any) -> list[ModelEvent]:
        events: list[ModelEvent] = []
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                self.output_chars += len(delta.content)
                events.append(TextDelta(delta.content))
            for call in delta.tool_calls or []:
                parts = self._calls.setdefault(call.index, ["", "", ""])
                if call.id:
                    parts[0] = call.id
                if call.function is not None:
                    if call.function.name:
                        parts[1] = call.function.name
                    if call.function.arguments:
                        self.output_chars += len(call.function.arguments)
                        parts[2] += call.function.arguments
            if choice.finish_reason is not None:
                self.stop_reason = _STOPS.get(choice.finish_reason, "other")
                events += [
                    ToolCall(call_id, name, json.loads(arguments or "{}"))
                    for call_id, name, arguments in (self._calls[i] for i in sorted(self._calls))
                ]
                self._calls.clear()
        return events

    def end(self) -> list[ModelEvent]:
        if self.stop_reason is None:
            return []  # the stream ended without a finish: nothing was completed
        usage = Usage(
            self.input_tokens or 0,
            self.output_tokens if self.output_tokens is not None else self.estimated_output(),
            estimated=self.output_tokens is None,
        )
        return [usage, Done(self.stop_reason)]


class OpenAIModel(SDKModel["openai.AsyncOpenAI | openai.OpenAI"]):
    """A model behind OpenAI Chat Completions, via ``openai.AsyncOpenAI``
    (``async with model.stream(...)``) or ``openai.OpenAI`` (``with``).

    Args:
        client: the SDK client (``base_url`` ending in ``/v1``).
        model: the model name, e.g. ``"gpt-4.1"``.
    """

    sdk = "openai"

    def _payload(
        self, messages: Sequence[Message], system: str | None, tools: Sequence[Tool]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.name, "messages": _messages(system, messages)}
        if tools:
            payload["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        return payload

    def _create(self, payload: dict[str, Any], max_tokens: int) -> Any:
        return self.client.chat.completions.create(
            max_completion_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            **payload,
        )

    def _translator(self) -> Translator:
        return _OpenAITranslator()
