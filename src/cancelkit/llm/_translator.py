"""Reading one provider's stream events as ours, and saying what was wrong when they
cannot be read.

A :class:`Translator` turns the payloads of one call's events (``dict``, as
:mod:`._sse` reads them) into :data:`~cancelkit.llm.ModelEvent` values, and keeps the
usage and the stop reason as they come. The provider is not trusted to send what its
API documents: reading a payload of the wrong shape raises what Python raises (a
``KeyError``, a ``TypeError``, a ``JSONDecodeError`` for tool arguments), and values
that would fail far from their cause are checked where they are read (a token count
is charged to a budget, the arguments of a tool call are a JSON object).
:class:`~cancelkit.llm.ModelStream` raises any of those as the provider's
:class:`~cancelkit.ModelServerError` (:func:`unreadable`), once, where it feeds the
translator; a try around the feed costs nothing per token while nothing is wrong.

A reply is complete once the provider said why it stopped. A stream that ends before
(a proxy's timeout, a crashed provider, a body of blank lines) is the provider's
failure too (:func:`cut_short`): never a quiet end that reads like a Stop.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from .._exceptions import ModelServerError
from ._tokens import estimate_tokens
from ._types import Done, ModelEvent, StopReason, ToolCall, Usage

__all__ = ("UNREADABLE", "Translator", "cut_short", "token_count", "tool_call", "unreadable")

UNREADABLE = (LookupError, TypeError, AttributeError, ValueError, RecursionError)
"""What reading a payload of the wrong shape raises: a key or an index missing, a
value of the wrong type, JSON that does not parse or nests too deep."""

_SAMPLE = 120  # characters of an unreadable event, or of its error, quoted


class Translator:
    """Turns one provider's stream events into :data:`ModelEvent` values.

    Subclasses implement :meth:`feed`; they report usage and the stop reason through
    the attributes here as they become known. ``feed`` may raise what reading a
    payload of the wrong shape raises (one of :data:`UNREADABLE`): the stream raises
    that as the provider's :class:`~cancelkit.ModelServerError`.
    """

    ends_with: ClassVar[str] = "its end"
    """What a complete reply ends with, for the error of one that ends without it."""

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None  # the provider's own final count
        self.output_chars = 0  # what arrived so far, for the estimate
        self.stop_reason: StopReason | None = None
        self.finished = False  # no more is read: the reply ended, or the call failed

    def feed(self, event: Any) -> list[ModelEvent]:
        raise NotImplementedError

    def end(self) -> list[ModelEvent] | None:
        """The provider's stream ended before the reply's last event: the events still
        owed when the provider had said why it stopped (``stop_reason`` is known: its
        usage, the provider's count or the estimate, and :class:`Done`), else ``None``:
        the reply never came to its end (it lacks :attr:`ends_with`)."""
        if self.stop_reason is None:
            return None
        output, input_tokens = self.output_tokens, self.input_tokens
        usage = Usage(
            input_tokens or 0,
            output if output is not None else self.estimated_output(),
            estimated=output is None or input_tokens is None,
        )
        return [usage, Done(self.stop_reason)]

    def estimated_output(self) -> int:
        """The output tokens so far, estimated from the characters that arrived."""
        return estimate_tokens(self.output_chars)


def token_count(value: Any) -> int:
    """A token count of the provider's payload, checked: it is summed and charged to
    a budget, where a string or a negative number would fail far from its cause.

    Raises:
        TypeError: not an int >= 0 (the stream raises it as the provider's failure).
    """
    if type(value) is not int or value < 0:
        raise TypeError(f"a token count is not an int >= 0: {value!r}")
    return value


def tool_call(call_id: Any, name: Any, arguments: str) -> ToolCall:
    """A tool call from the provider's pieces: its id, its name, and its arguments'
    JSON text (empty: no arguments), which must hold a JSON object.

    Raises:
        TypeError: the id or the name is not a string, or the arguments are JSON
            but not an object.
        json.JSONDecodeError: the arguments are not JSON.
    """
    if type(call_id) is not str or type(name) is not str:
        raise TypeError(f"a tool call's id and name are not strings: {call_id!r}, {name!r}")
    parsed = json.loads(arguments or "{}")
    if type(parsed) is not dict:
        raise TypeError(f"the arguments of tool call {name!r} are not a JSON object: {arguments!r}")
    return ToolCall(call_id, name, parsed)


def cut_short(
    translator: Translator, provider: str, request_id: str | None, text: str, tool_calls: int
) -> ModelServerError:
    """The error of a reply whose stream ended before the reply did, after ``text``
    and ``tool_calls`` tool calls."""
    also = f" and {tool_calls} tool call{'s' if tool_calls != 1 else ''}" if tool_calls else ""
    return ModelServerError(
        f"{provider}: the reply ended before its end: the response ended without "
        f"{translator.ends_with}, after {len(text)} characters of text{also}; "
        "it is incomplete (cut short by the provider or a proxy)",
        provider=provider,
        request_id=request_id,
    )


def unreadable(
    provider: str, request_id: str | None, event: Any, error: Exception
) -> ModelServerError:
    """The error of an event a translator could not read (``error``, one of
    :data:`UNREADABLE`): what was wrong, and a sample of the event, or of the JSON
    that did not parse."""
    if isinstance(error, json.JSONDecodeError):
        what, sample = "the JSON", repr(error.doc)
    else:
        what, sample = "the event", repr(event)
    if len(sample) > _SAMPLE:
        sample = f"{sample[:_SAMPLE]}... ({len(sample)} characters)"
    detail = str(error)
    if len(detail) > _SAMPLE:
        detail = detail[:_SAMPLE] + "..."
    return ModelServerError(
        f"{provider}: the provider sent an event that cannot be read "
        f"({type(error).__name__}: {detail}); {what}: {sample}",
        provider=provider,
        request_id=request_id,
    )
