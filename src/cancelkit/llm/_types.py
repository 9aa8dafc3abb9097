"""The model protocol's vocabulary: messages in, one event stream shape out.

Whatever the provider, a call yields :class:`TextDelta`, :class:`ToolCall`,
:class:`Usage` and finally :class:`Done`; a conversation is a list of
:class:`Message`. Adapters translate to and from each provider's own shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = (
    "CommonStopReason",
    "Done",
    "Message",
    "ModelEvent",
    "StopReason",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
)

CommonStopReason = Literal["end_turn", "max_tokens", "tool_use"]
"""The ends every provider reports, and the only ones the local model produces."""

StopReason = Literal[CommonStopReason, "refusal", "cancelled", "error", "other"]
"""Why a call ended: a common end, a refusal, ``cancelled`` (left before the end: a
Stop, a ``break``, an exception of the caller's), ``error`` (the call failed: the
:class:`~cancelkit.llm.ModelError` raised says how) or ``other`` (a provider's reason
with no equivalent here)."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool to be run (an event, and part of a message)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of a tool call, sent back to the model."""

    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation.

    A user turn carries text and/or tool results; an assistant turn carries text
    and/or tool calls.
    """

    role: Literal["user", "assistant"]
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()

    @classmethod
    def user(cls, text: str) -> Message:
        return cls("user", text)

    def size_text(self) -> str:
        """All the text of the message, for estimating its tokens."""
        parts = [self.text]
        parts += [f"{c.name}{c.arguments}" for c in self.tool_calls]
        parts += [r.content for r in self.tool_results]
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens used by a call; ``estimated`` when the provider never reported them."""

    input_tokens: int
    output_tokens: int
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    """The last event of a call that ran to its end."""

    stop_reason: StopReason


ModelEvent = TextDelta | ToolCall | Usage | Done
