"""OpenAI Chat Completions as the local model speaks it: ``POST /v1/chat/completions``.

Every event is an unnamed ``chat.completion.chunk``; tool calls arrive as deltas by
index, usage (when asked for with ``stream_options``) in a last chunk without
choices, and the stream ends with ``[DONE]``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._script import RequestError
from ._wire import Conversation, ParsedRequest, Wire, sse, text_of

if TYPE_CHECKING:
    from .._types import CommonStopReason
    from ._script import Plan, PlannedToolCall

__all__ = ("OpenAIWire",)


_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
_OPENAI_ERRORS = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}


class OpenAIWire(Wire):
    """OpenAI Chat Completions: ``POST /v1/chat/completions``."""

    name = "openai"
    request_id_header = "x-request-id"

    def __init__(self, completion_id: str) -> None:
        self.completion_id = completion_id
        self.created = int(time.time())
        self.model = "local"
        self.include_usage = False

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        request = super().parse(body)
        options = body.get("stream_options") or {}
        self.model = request.model
        self.include_usage = request.include_usage = bool(options.get("include_usage", False))
        return request

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise RequestError("`max_tokens` must be a positive integer")
        return max_tokens

    def read(self, body: dict[str, Any], messages: list[Any]) -> Conversation:
        texts: list[str] = []
        directive = ""
        tool_names: dict[str, str] = {}
        results: list[tuple[str, str]] = []
        for message in messages:
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool"):
                raise RequestError("each message needs a valid `role`")
            text = text_of(message.get("content"))
            texts.append(text)
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                tool_names[call.get("id", "")] = function.get("name", "tool")
                texts.append(function.get("arguments", ""))
            if role == "tool":
                results.append((tool_names.get(message.get("tool_call_id", ""), "tool"), text))
            else:
                results = []
            if role == "user" and text:
                directive = text
        return Conversation(texts, directive, results)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def start(self, plan: Plan, request: ParsedRequest) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def text(self, tokens: list[str], first: bool) -> list[bytes]:
        return [self._chunk({"content": "".join(tokens)})]

    def text_done(self) -> list[bytes]:
        return []

    def tool_start(self, position: int, call: PlannedToolCall) -> list[bytes]:
        function = {"name": call.name, "arguments": ""}
        delta = {
            "tool_calls": [
                {"index": position, "id": call.id, "type": "function", "function": function}
            ]
        }
        return [self._chunk(delta)]

    def tool_args(self, position: int, piece: str) -> list[bytes]:
        return [
            self._chunk({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
        ]

    def tool_done(self, position: int) -> list[bytes]:
        return []

    def _usage(self, plan: Plan, output: int) -> dict[str, int]:
        return {
            "prompt_tokens": plan.input_tokens,
            "completion_tokens": output,
            "total_tokens": plan.input_tokens + output,
        }

    def finish(
        self, plan: Plan, request: ParsedRequest, stop: CommonStopReason, output: int
    ) -> list[bytes]:
        frames = [self._chunk({}, _FINISH[stop])]
        if self.include_usage:
            usage_chunk = {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self._usage(plan, output),
            }
            frames.append(sse(usage_chunk))
        frames.append(sse("[DONE]"))
        return frames

    def stream_error(self) -> list[bytes]:
        error = {
            "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
        }
        return [sse(error)]

    def complete(
        self, plan: Plan, request: ParsedRequest, text: str, stop: CommonStopReason, output: int
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if stop == "tool_use":
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                }
                for c in plan.tool_calls
            ]
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": request.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": _FINISH[stop], "logprobs": None}
            ],
            "usage": self._usage(plan, output),
        }

    def error(self, status: int, message: str) -> dict[str, Any]:
        kind = _OPENAI_ERRORS.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
