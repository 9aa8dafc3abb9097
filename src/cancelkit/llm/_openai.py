"""``OpenAIModel``: the model protocol on the official ``openai`` SDK.

Only what is OpenAI's: the Chat Completions payload, the streamed ``create`` call
(asking for usage in the last chunk), the translation of its chunks, and the SDK's
name (its exceptions are mapped by it); the flow is :class:`SDKModel`'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._adapter import SDKModel
from ._sse import END, json_payload
from ._translator import Translator, token_count, tool_call
from ._types import ModelEvent, StopReason, TextDelta

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
    """Reads Chat Completions chunks, as JSON objects.

    A reply is complete once a choice has its ``finish_reason`` (then comes the
    chunk with the usage, then ``[DONE]``, which :func:`_decode` reads); a stream
    that ends before, ``[DONE]`` or not, is the provider's failure (see
    :class:`~cancelkit.llm.ModelStream`).
    """

    ends_with = "a finish_reason"

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]

    def feed(self, chunk: dict[str, Any]) -> list[ModelEvent]:
        events: list[ModelEvent] = []
        usage = chunk.get("usage")
        if usage is not None:
            self.input_tokens = token_count(usage["prompt_tokens"])
            self.output_tokens = token_count(usage["completion_tokens"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                if type(content) is not str:
                    raise TypeError(f"a delta's content is not a string: {content!r}")
                self.output_chars += len(content)
                events.append(TextDelta(content))
            for call in delta.get("tool_calls") or ():
                parts = self._calls.setdefault(call["index"], ["", "", ""])
                if call.get("id"):
                    parts[0] = call["id"]
                function = call.get("function")
                if function is not None:
                    if function.get("name"):
                        parts[1] = function["name"]
                    if function.get("arguments"):
                        self.output_chars += len(function["arguments"])
                        parts[2] += function["arguments"]
            finish = choice.get("finish_reason")
            if finish is not None:
                self.stop_reason = _STOPS.get(finish, "other")
                events += [
                    tool_call(call_id, name, arguments)
                    for call_id, name, arguments in (self._calls[i] for i in sorted(self._calls))
                ]
                self._calls.clear()
        return events


def _decode(_name: str | None, data: bytes, response: Any) -> dict[str, Any] | None:
    """A chunk of the stream, as the SDK reads it: ``[DONE]`` ends it, a chunk with an
    ``error`` is raised as the SDK's ``APIError``."""
    if data.startswith(b"[DONE]"):
        return END
    payload = json_payload(data)
    if payload is not None and payload.get("error"):
        import openai  # noqa: PLC0415 - the client is the SDK's: it is installed

        error = payload["error"]
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = "An error occurred during streaming"
        raise openai.APIError(message, response.request, body=error)
    return payload


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
        return self.client.chat.completions.with_raw_response.create(
            max_completion_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            **payload,
        )

    def _decode(self, name: str | None, data: bytes, response: Any) -> dict[str, Any] | None:
        return _decode(name, data, response)

    def _translator(self) -> Translator:
        return _OpenAITranslator()
