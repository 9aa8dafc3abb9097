"""The Anthropic Messages API as the local model speaks it: ``POST /v1/messages``.

Events are named (``message_start``, ``content_block_delta``, ...), text and each tool
call are content blocks of their own, and usage comes in ``message_start`` and
``message_delta``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._script import RequestError
from ._wire import Conversation, ParsedRequest, Wire, require, sse, text_of

if TYPE_CHECKING:
    from .._types import CommonStopReason
    from ._script import Plan, PlannedToolCall

__all__ = ("AnthropicWire",)

_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class AnthropicWire(Wire):
    """Anthropic Messages API: ``POST /v1/messages``."""

    name = "anthropic"
    request_id_header = "request-id"

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.block = -1

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        max_tokens: int = require(body, "max_tokens", int)
        if max_tokens < 1:
            raise RequestError("`max_tokens` must be >= 1")
        return max_tokens

    def read(self, body: dict[str, Any], messages: list[Any]) -> Conversation:
        texts = [text_of(body.get("system"))]
        directive = ""
        tool_names: dict[str, str] = {}
        results: list[tuple[str, str]] = []
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise RequestError("each message needs a `role` of user or assistant")
            content = message.get("content")
            text = text_of(content)
            texts.append(text)
            results = []
            if isinstance(content, list):
                for block in content:
                    if block.get("type") == "tool_use":
                        tool_names[block.get("id", "")] = block.get("name", "tool")
                        texts.append(json.dumps(block.get("input", {})))
                    elif block.get("type") == "tool_result":
                        result = text_of(block.get("content"))
                        texts.append(result)
                        results.append(
                            (tool_names.get(block.get("tool_use_id", ""), "tool"), result)
                        )
            if message["role"] == "user" and text:
                directive = text
        if messages[-1]["role"] != "user":
            results = []
        return Conversation(texts, directive, results)

    def _message(self, request: ParsedRequest, plan: Plan, output: int) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": plan.input_tokens, "output_tokens": output},
        }

    def start(self, plan: Plan, request: ParsedRequest) -> list[bytes]:
        start = {"type": "message_start", "message": self._message(request, plan, 0)}
        return [sse(start, "message_start"), sse({"type": "ping"}, "ping")]

    def text(self, tokens: list[str], first: bool) -> list[bytes]:
        frames = []
        if first:
            self.block += 1
            frames.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": self.block,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
        delta = {"type": "text_delta", "text": "".join(tokens)}
        frames.append(
            sse(
                {"type": "content_block_delta", "index": self.block, "delta": delta},
                "content_block_delta",
            )
        )
        return frames

    def text_done(self) -> list[bytes]:
        return [sse({"type": "content_block_stop", "index": self.block}, "content_block_stop")]

    def tool_start(self, position: int, call: PlannedToolCall) -> list[bytes]:
        self.block += 1
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        return [
            sse(
                {"type": "content_block_start", "index": self.block, "content_block": block},
                "content_block_start",
            )
        ]

    def tool_args(self, position: int, piece: str) -> list[bytes]:
        delta = {"type": "input_json_delta", "partial_json": piece}
        return [
            sse(
                {"type": "content_block_delta", "index": self.block, "delta": delta},
                "content_block_delta",
            )
        ]

    def tool_done(self, position: int) -> list[bytes]:
        return self.text_done()

    def finish(
        self, plan: Plan, request: ParsedRequest, stop: CommonStopReason, output: int
    ) -> list[bytes]:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"input_tokens": plan.input_tokens, "output_tokens": output},
        }
        return [sse(delta, "message_delta"), sse({"type": "message_stop"}, "message_stop")]

    def stream_error(self) -> list[bytes]:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return [sse(error, "error")]

    def complete(
        self, plan: Plan, request: ParsedRequest, text: str, stop: CommonStopReason, output: int
    ) -> dict[str, Any]:
        message = self._message(request, plan, output)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        if stop == "tool_use":
            content += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in plan.tool_calls
            ]
        message.update(content=content, stop_reason=stop)
        return message

    def error(self, status: int, message: str) -> dict[str, Any]:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
