"""``AnthropicModel``: the model protocol on the official ``anthropic`` SDK.

Only what is Anthropic's: the Messages API payload, the streamed ``create`` call, the
translation of its events, and the SDK's name (its exceptions are mapped by it); the
flow is :class:`SDKModel`'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._adapter import SDKModel
from ._sse import json_payload
from ._translator import Translator, token_count, tool_call
from ._types import Done, ModelEvent, StopReason, TextDelta, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    import anthropic  # noqa: F401 - named in a string: SDKModel["anthropic.AsyncAnthropic"]

    from ._types import Message, Tool

__all__ = ("AnthropicModel",)

_STOPS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "max_tokens": "max_tokens",
    "tool_use": "tool_use",
    "refusal": "refusal",
}


def _content(message: Message) -> list[dict[str, Any]] | str:
    if not message.tool_calls and not message.tool_results:
        return message.text
    blocks: list[dict[str, Any]] = [
        {
            "type": "tool_result",
            "tool_use_id": r.call_id,
            "content": r.content,
            "is_error": r.is_error,
        }
        for r in message.tool_results
    ]
    if message.text:
        blocks.append({"type": "text", "text": message.text})
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in message.tool_calls
    ]
    return blocks


class _AnthropicTranslator(Translator):
    """Reads the Messages API's stream events, as JSON objects.

    A reply is complete once ``message_delta`` said why it stopped (``message_stop``
    follows it); a stream that ends before is the provider's failure (see
    :class:`~cancelkit.llm.ModelStream`).
    """

    ends_with = "a stop_reason (message_delta) or a message_stop"

    def __init__(self) -> None:
        super().__init__()
        self._tool: tuple[str, str] | None = None
        self._json: list[str] = []

    def feed(self, event: dict[str, Any]) -> list[ModelEvent]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                text = delta["text"]
                if type(text) is not str:
                    raise TypeError(f"a text_delta's text is not a string: {text!r}")
                self.output_chars += len(text)
                return [TextDelta(text)]
            if delta["type"] == "input_json_delta":
                self.output_chars += len(delta["partial_json"])
                self._json.append(delta["partial_json"])
            return []
        if kind == "message_start":
            self.input_tokens = token_count(event["message"]["usage"]["input_tokens"])
        elif kind == "content_block_start" and event["content_block"]["type"] == "tool_use":
            self._tool = (event["content_block"]["id"], event["content_block"]["name"])
            self._json = []
        elif kind == "content_block_stop" and self._tool is not None:
            call_id, name = self._tool
            self._tool = None
            return [tool_call(call_id, name, "".join(self._json))]
        elif kind == "message_delta":
            usage = event["usage"]
            self.output_tokens = token_count(usage["output_tokens"])
            if usage.get("input_tokens") is not None:
                self.input_tokens = token_count(usage["input_tokens"])
            self.stop_reason = _STOPS.get(event["delta"].get("stop_reason") or "", "other")
        elif kind == "message_stop":
            self.finished = True
            usage_now = Usage(self.input_tokens or 0, self.output_tokens or 0)
            return [usage_now, Done(self.stop_reason or "other")]
        return []


def _decode(name: str | None, data: bytes, response: Any) -> dict[str, Any] | None:
    """An event of the Messages stream, as the SDK reads it: pings and unnamed events
    skipped, an ``error`` event raised as the SDK's ``APIStatusError``."""
    if name is None or name == "ping":
        return None
    if name == "error":
        import anthropic  # noqa: PLC0415 - the client is the SDK's: it is installed

        try:
            body: Any = json.loads(data)
        except ValueError:
            body = data.decode(errors="replace")
        raise anthropic.APIStatusError(f"{body}", response=response, body=body)
    return json_payload(data)


class AnthropicModel(SDKModel["anthropic.AsyncAnthropic | anthropic.Anthropic"]):
    """A model behind the Anthropic Messages API, via ``anthropic.AsyncAnthropic``
    (``async with model.stream(...)``) or ``anthropic.Anthropic`` (``with``).

    Args:
        client: the SDK client (point ``base_url`` at the local server for tests).
        model: the model name, e.g. ``"claude-sonnet-4-5"``.
    """

    sdk = "anthropic"

    def _payload(
        self, messages: Sequence[Message], system: str | None, tools: Sequence[Tool]
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.name,
            "messages": [{"role": m.role, "content": _content(m)} for m in messages],
        }
        if system:
            payload["system"] = system
        if tools:
            payload["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
        return payload

    def _create(self, payload: dict[str, Any], max_tokens: int) -> Any:
        return self.client.messages.with_raw_response.create(
            max_tokens=max_tokens, stream=True, **payload
        )

    def _decode(self, name: str | None, data: bytes, response: Any) -> dict[str, Any] | None:
        return _decode(name, data, response)

    def _translator(self) -> Translator:
        return _AnthropicTranslator()
