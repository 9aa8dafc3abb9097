"""The two wire protocols the local model speaks, built from one reply plan.

A reply is a sequence of *steps* (start, text, tool call, finish); each protocol
turns a step into its own Server-Sent Events, or folds all steps into one JSON
response. Payload shapes follow the providers' published streaming formats and are
checked in the tests by the official SDKs with strict response validation.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from ._script import Plan, PlannedToolCall, RequestError, StopReason

__all__ = ("AnthropicWire", "OpenAIWire", "ParsedRequest", "Wire", "sse")


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One Server-Sent Event frame."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


@dataclass
class ParsedRequest:
    """What the server needs from a request body, whatever the protocol."""

    model: str
    stream: bool
    max_tokens: int | None
    prompt_text: str
    directive_text: str
    tool_results: list[tuple[str, str]]
    include_usage: bool = False


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    raise RequestError("message content must be a string or a list of content blocks")


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise RequestError(f"`{key}` is required and must be {getattr(kind, '__name__', kind)}")
    return value


class Wire:
    """A provider protocol: parse requests, frame steps, shape errors."""

    name: str
    request_id_header: str

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        raise NotImplementedError

    def start(self, plan: Plan, request: ParsedRequest) -> list[bytes]:
        raise NotImplementedError

    def text(self, tokens: list[str], first: bool) -> list[bytes]:
        raise NotImplementedError

    def text_done(self) -> list[bytes]:
        raise NotImplementedError

    def tool_start(self, position: int, call: PlannedToolCall) -> list[bytes]:
        raise NotImplementedError

    def tool_args(self, position: int, piece: str) -> list[bytes]:
        raise NotImplementedError

    def tool_done(self, position: int) -> list[bytes]:
        raise NotImplementedError

    def finish(
        self, plan: Plan, request: ParsedRequest, stop: StopReason, output: int
    ) -> list[bytes]:
        raise NotImplementedError

    def stream_error(self) -> list[bytes]:
        raise NotImplementedError

    def complete(
        self, plan: Plan, request: ParsedRequest, text: str, stop: StopReason, output: int
    ) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError


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

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        model = _require(body, "model", str)
        max_tokens = _require(body, "max_tokens", int)
        if max_tokens < 1:
            raise RequestError("`max_tokens` must be >= 1")
        messages = _require(body, "messages", list)
        if not messages:
            raise RequestError("`messages` must not be empty")
        texts = [_text_of(body.get("system"))]
        directive = ""
        tool_names: dict[str, str] = {}
        results: list[tuple[str, str]] = []
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise RequestError("each message needs a `role` of user or assistant")
            content = message.get("content")
            text = _text_of(content)
            texts.append(text)
            results = []
            if isinstance(content, list):
                for block in content:
                    if block.get("type") == "tool_use":
                        tool_names[block.get("id", "")] = block.get("name", "tool")
                        texts.append(json.dumps(block.get("input", {})))
                    elif block.get("type") == "tool_result":
                        result = _text_of(block.get("content"))
                        texts.append(result)
                        results.append(
                            (tool_names.get(block.get("tool_use_id", ""), "tool"), result)
                        )
            if message["role"] == "user" and text:
                directive = text
        if messages[-1]["role"] != "user":
            results = []
        return ParsedRequest(
            model=model,
            stream=bool(body.get("stream", False)),
            max_tokens=max_tokens,
            prompt_text="\n".join(texts),
            directive_text=directive,
            tool_results=results,
        )

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
        self, plan: Plan, request: ParsedRequest, stop: StopReason, output: int
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
        self, plan: Plan, request: ParsedRequest, text: str, stop: StopReason, output: int
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


_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


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
        model = _require(body, "model", str)
        messages = _require(body, "messages", list)
        if not messages:
            raise RequestError("`messages` must not be empty")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise RequestError("`max_tokens` must be a positive integer")
        texts: list[str] = []
        directive = ""
        tool_names: dict[str, str] = {}
        results: list[tuple[str, str]] = []
        for message in messages:
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool"):
                raise RequestError("each message needs a valid `role`")
            text = _text_of(message.get("content"))
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
        options = body.get("stream_options") or {}
        self.model = model
        self.include_usage = bool(options.get("include_usage", False))
        return ParsedRequest(
            model=model,
            stream=bool(body.get("stream", False)),
            max_tokens=max_tokens,
            prompt_text="\n".join(texts),
            directive_text=directive,
            tool_results=results,
            include_usage=self.include_usage,
        )

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
        self, plan: Plan, request: ParsedRequest, stop: StopReason, output: int
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
        self, plan: Plan, request: ParsedRequest, text: str, stop: StopReason, output: int
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
        kind: Literal[
            "invalid_request_error", "rate_limit_error", "server_error", "not_found_error"
        ] = (
            "invalid_request_error"
            if status == 400
            else "not_found_error"
            if status == 404
            else "rate_limit_error"
            if status == 429
            else "server_error"
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
