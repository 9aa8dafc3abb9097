"""What the two wire protocols of the local model share, built from one reply plan.

A reply is a sequence of *steps* (start, text, tool call, finish); each protocol
(:mod:`._wire_anthropic`, :mod:`._wire_openai`) turns a step into its own Server-Sent
Events, or folds all steps into one JSON response. This base reads what every request
has (a model, a non-empty list of messages) and frames events; the protocols supply
the rest. Payload shapes follow the providers' published streaming formats and are
checked in the tests by the official SDKs with strict response validation.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ._script import RequestError

if TYPE_CHECKING:
    from .._types import CommonStopReason
    from ._script import Plan, PlannedToolCall

__all__ = ("Conversation", "ParsedRequest", "Wire", "require", "sse", "text_of")


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


@dataclass
class Conversation:
    """What a protocol reads from the messages of a request.

    Attributes:
        texts: every text of the request, for counting its tokens.
        directive: the most recent user text, where directives are read.
        tool_results: (tool name, content) when the conversation ends in them.
    """

    texts: list[str]
    directive: str
    tool_results: list[tuple[str, str]]


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text of its blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    raise RequestError("message content must be a string or a list of content blocks")


def require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``body[key]``, or a :class:`RequestError` unless it is a ``kind``."""
    value = body.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise RequestError(f"`{key}` is required and must be {getattr(kind, '__name__', kind)}")
    return value


class Wire(ABC):
    """A provider protocol: parse requests, frame steps, shape errors.

    One instance serves one request (it may keep the state its framing needs).
    """

    name: ClassVar[str]
    request_id_header: ClassVar[str]

    def parse(self, body: dict[str, Any]) -> ParsedRequest:
        """Read and check a request body.

        Raises:
            RequestError: the body is malformed (the server answers 400).
        """
        model = require(body, "model", str)
        messages = require(body, "messages", list)
        if not messages:
            raise RequestError("`messages` must not be empty")
        max_tokens = self.max_tokens(body)
        conversation = self.read(body, messages)
        return ParsedRequest(
            model=model,
            stream=bool(body.get("stream", False)),
            max_tokens=max_tokens,
            prompt_text="\n".join(conversation.texts),
            directive_text=conversation.directive,
            tool_results=conversation.tool_results,
        )

    @abstractmethod
    def max_tokens(self, body: dict[str, Any]) -> int | None:
        """The request's cap on output tokens, checked (``None``: no cap)."""

    @abstractmethod
    def read(self, body: dict[str, Any], messages: list[Any]) -> Conversation:
        """The texts, directive and trailing tool results of the conversation."""

    @abstractmethod
    def start(self, plan: Plan, request: ParsedRequest) -> list[bytes]:
        """The frames that open a streamed reply."""

    @abstractmethod
    def text(self, tokens: list[str], first: bool) -> list[bytes]:
        """The frames of a piece of text (``first``: the first piece of the reply)."""

    @abstractmethod
    def text_done(self) -> list[bytes]:
        """The frames that close the text of the reply."""

    @abstractmethod
    def tool_start(self, position: int, call: PlannedToolCall) -> list[bytes]:
        """The frames that open tool call number ``position``."""

    @abstractmethod
    def tool_args(self, position: int, piece: str) -> list[bytes]:
        """The frames of a piece of a tool call's JSON arguments."""

    @abstractmethod
    def tool_done(self, position: int) -> list[bytes]:
        """The frames that close tool call number ``position``."""

    @abstractmethod
    def finish(
        self, plan: Plan, request: ParsedRequest, stop: CommonStopReason, output: int
    ) -> list[bytes]:
        """The frames that end a streamed reply, with its usage."""

    @abstractmethod
    def stream_error(self) -> list[bytes]:
        """The frames of an error event in the middle of a stream (``overloaded``)."""

    @abstractmethod
    def complete(
        self, plan: Plan, request: ParsedRequest, text: str, stop: CommonStopReason, output: int
    ) -> dict[str, Any]:
        """The whole reply of a request that did not ask to stream."""

    @abstractmethod
    def error(self, status: int, message: str) -> dict[str, Any]:
        """The error body the provider sends with ``status``."""
