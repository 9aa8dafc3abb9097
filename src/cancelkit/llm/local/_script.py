"""What the local model says: deterministic text, scripted tool calls, faults.

The reply is decided from the request alone, so tests and benchmarks are repeatable:
the text is a passage of a fixed corpus starting at an offset derived from the
prompt; one *token* is exactly four characters (so ``ceil(chars / 4)`` estimates are
exact here, and a fair rule of thumb for real providers).

Directives in the most recent user text steer a reply (documented in the README):

- ``[[tokens:N]]`` answer with exactly N tokens (still capped by ``max_tokens``);
- ``[[tool:NAME {"json": "arguments"}]]`` call tool NAME (repeat for parallel calls);
  once the conversation ends in tool results, the model answers in text instead;
- ``[[rate:R]]`` R tokens per second for this request;
- ``[[fault:429 retry-after=S times=N]]``, ``[[fault:529 times=N]]`` reject the first N
  identical requests (every one without ``times``), with ``retry-after`` seconds;
- ``[[fault:slow-first-token=S]]`` wait S seconds before the first token;
- ``[[fault:cut-after=N]]`` drop the connection after N tokens;
- ``[[fault:error-after=N]]`` send a mid-stream ``overloaded`` error after N tokens;
- ``[[fault:ignore-max-tokens]]`` a misbehaving provider that ignores ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = (
    "TOKEN_CHARS",
    "Fault",
    "Plan",
    "PlannedToolCall",
    "RequestError",
    "count_tokens",
    "plan",
)

TOKEN_CHARS = 4

CORPUS = (
    "When a user presses Stop, every layer of the service should hear it at once and "
    "with the reason: the request, the agent run, the model stream, the tools in "
    "their threads and the database writes that were staged. Work that nobody waits "
    "for is waste, and a stream that keeps generating after the tab was closed is "
    "billed all the same. Structured concurrency gives every task an owner, so that "
    "cancelling the owner reaches everything it started, and cleanup runs in the "
    "task that holds the resource, shielded and bounded in time. "
)

_DIRECTIVE = re.compile(r"\[\[(\w[\w-]*):?\s*(.*?)\]\]", re.DOTALL)

StopReason = Literal["end_turn", "max_tokens", "tool_use"]


class RequestError(ValueError):
    """The request is malformed; the server answers 400 with this message."""


def count_tokens(text: str) -> int:
    """Tokens in ``text`` as the local model counts them: ``ceil(chars / 4)``."""
    return math.ceil(len(text) / TOKEN_CHARS)


@dataclass(frozen=True)
class Fault:
    """An injected failure for one request."""

    kind: Literal["status", "cut", "error", "none"]
    status: int = 0
    retry_after: float | None = None
    times: int | None = None
    after_tokens: int = 0


@dataclass(frozen=True)
class PlannedToolCall:
    """A tool call the model will make."""

    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class Plan:
    """The whole reply to one request, before any timing is applied."""

    text_tokens: list[str]
    tool_calls: list[PlannedToolCall]
    stop_reason: StopReason
    input_tokens: int
    rate: float | None = None
    first_token_latency: float | None = None
    fault: Fault = field(default_factory=lambda: Fault("none"))
    ignore_max_tokens: bool = False

    @property
    def output_tokens(self) -> int:
        return len(self.text_tokens) + sum(
            count_tokens(call.arguments_json) for call in self.tool_calls
        )


def _split(text: str) -> list[str]:
    return [text[i : i + TOKEN_CHARS] for i in range(0, len(text), TOKEN_CHARS)]


def _corpus_tokens(seed: int, count: int) -> list[str]:
    start = seed % len(CORPUS)
    chars = count * TOKEN_CHARS
    text = (CORPUS * (chars // len(CORPUS) + 2))[start : start + chars]
    return _split(text)


def _parse_fault(spec: str) -> tuple[Fault | None, float | None, bool]:
    """A fault directive: (fault, slow-first-token seconds, ignore-max-tokens)."""
    words = spec.split()
    if not words:
        raise RequestError("empty [[fault:...]] directive")
    head, options = words[0], dict(w.split("=", 1) for w in words[1:] if "=" in w)
    try:
        if head in ("429", "529", "503"):
            times = int(options["times"]) if "times" in options else None
            retry = float(options["retry-after"]) if "retry-after" in options else None
            return Fault("status", status=int(head), retry_after=retry, times=times), None, False
        key, _, value = head.partition("=")
        if key == "slow-first-token":
            return None, float(value), False
        if key == "cut-after":
            return Fault("cut", after_tokens=int(value)), None, False
        if key == "error-after":
            return Fault("error", after_tokens=int(value)), None, False
        if key == "ignore-max-tokens":
            return None, None, True
    except (KeyError, ValueError) as exc:
        raise RequestError(f"bad fault directive [[fault:{spec}]]: {exc}") from exc
    raise RequestError(f"unknown fault directive [[fault:{spec}]]")


def plan(
    *,
    prompt_text: str,
    directive_text: str,
    tool_results: list[tuple[str, str]],
    max_tokens: int | None,
    default_tokens: int,
) -> Plan:
    """Decide the reply to a request.

    Args:
        prompt_text: all text of the request (system and messages), for counting.
        directive_text: the most recent user text, where directives are read.
        tool_results: (tool name or id, content) when the conversation ends in them.
        max_tokens: the request's cap, if any.
        default_tokens: reply length when no ``[[tokens:N]]`` is given.
    """
    seed = int.from_bytes(hashlib.sha256(prompt_text.encode()).digest()[:8], "big")
    wanted: int | None = None
    calls: list[PlannedToolCall] = []
    result = Plan([], [], "end_turn", count_tokens(prompt_text))
    for index, match in enumerate(_DIRECTIVE.finditer(directive_text)):
        name, argument = match.group(1), match.group(2).strip()
        if name == "tokens":
            try:
                wanted = int(argument)
            except ValueError as exc:
                raise RequestError(f"[[tokens:N]] needs a number, not {argument!r}") from exc
        elif name == "rate":
            try:
                result.rate = float(argument)
            except ValueError as exc:
                raise RequestError(f"[[rate:R]] needs a number, not {argument!r}") from exc
        elif name == "tool":
            tool_name, _, raw = argument.partition(" ")
            try:
                arguments = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise RequestError(f"[[tool:{tool_name} ...]] arguments: {exc}") from exc
            if not isinstance(arguments, dict):
                raise RequestError(f"[[tool:{tool_name} ...]] arguments must be a JSON object")
            calls.append(PlannedToolCall(f"call_{seed % 10**8:08d}_{index}", tool_name, arguments))
        elif name == "fault":
            fault, slow, ignore = _parse_fault(argument)
            if fault is not None:
                result.fault = fault
            if slow is not None:
                result.first_token_latency = slow
            result.ignore_max_tokens = result.ignore_max_tokens or ignore
        else:
            raise RequestError(f"unknown directive [[{name}:...]]")

    if tool_results:
        summary = "; ".join(f"{name} returned {content}" for name, content in tool_results)
        text = f"Tool results: {summary}. " + "".join(_corpus_tokens(seed, 8))
        tokens = _split(text)
        if wanted is not None:
            tokens = tokens[:wanted] + _corpus_tokens(seed, max(0, wanted - len(tokens)))
    elif calls:
        tokens = _split("Calling " + ", ".join(call.name for call in calls) + ". ")
        result.tool_calls = calls
        result.stop_reason = "tool_use"
    else:
        tokens = _corpus_tokens(seed, wanted if wanted is not None else default_tokens)

    result.text_tokens = tokens
    if (
        max_tokens is not None
        and not result.ignore_max_tokens
        and result.output_tokens > max_tokens
    ):
        result.text_tokens = tokens[:max_tokens]
        result.tool_calls = []
        result.stop_reason = "max_tokens"
    return result
