"""What the local model says: deterministic text, scripted tool calls, faults.

The reply is decided from the request alone, so tests and benchmarks are repeatable:
the text is a passage of a fixed corpus starting at an offset derived from the
prompt; one *token* is exactly four characters (so the estimate of
:func:`cancelkit.llm.estimate_tokens` is exact here, and a fair rule of thumb for
real providers).

Directives in the most recent user text steer a reply (documented in the README):

- ``[[tokens:N]]`` answer with exactly N tokens (still capped by ``max_tokens``);
- ``[[tool:NAME {"json": "arguments"}]]`` call tool NAME (repeat for parallel calls);
  once the conversation ends in tool results, the model answers in text instead;
- ``[[rate:R]]`` R tokens per second for this request;
- ``[[label:TEXT]]`` names the request in the server's records (``GET
  /stats/requests?label=TEXT``), so a benchmark finds the requests of one session;
  TEXT is up to 100 characters (letters, digits, ``_.:-``) and changes nothing else;
- ``[[fault:429 retry-after=S times=N]]``, ``[[fault:529 times=N]]`` reject the first N
  identical requests (every one without ``times``), with ``retry-after`` seconds;
- ``[[fault:slow-first-token=S]]`` wait S seconds before the first token;
- ``[[fault:cut-after=N]]`` drop the connection after N tokens;
- ``[[fault:error-after=N]]`` send a mid-stream ``overloaded`` error after N tokens;
- ``[[fault:end-after=N]]`` end the response cleanly after N tokens, without the
  reply's end (no stop reason, no ``[DONE]``): a proxy's or a crashed provider's cut;
- ``[[fault:ignore-max-tokens]]`` a misbehaving provider that ignores ``max_tokens``.

Every number has a range (:data:`TOKENS`, :data:`RATE`, :data:`SECONDS`): token
counts 0 to 1,000,000, rates 1 to 1,000,000 tokens per second, waits 0 to 300
seconds. Anything else (``nan``, ``inf``, a negative number, ``rate:1e-9`` that would
stream for ever) is a :class:`RequestError` naming the directive and its range, so
the server answers 400 before it generates anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._tokens import TOKEN_CHARS, estimate_tokens

if TYPE_CHECKING:
    from .._types import CommonStopReason

__all__ = (
    "RATE",
    "SECONDS",
    "TOKENS",
    "Fault",
    "Plan",
    "PlannedToolCall",
    "Range",
    "RequestError",
    "count_tokens",
    "plan",
)

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
_LABEL = re.compile(r"[\w.:-]{1,100}", re.ASCII)


class RequestError(ValueError):
    """The request is malformed; the server answers 400 with this message."""


@dataclass(frozen=True)
class Range:
    """The values a number of the local model may take, and what they measure."""

    low: float
    high: float
    unit: str
    whole: bool

    def parse(self, text: str, what: str) -> float:
        """``text`` as a number in range, or a :class:`RequestError` about ``what``."""
        value: float
        try:
            value = int(text) if self.whole else float(text)
        except ValueError:
            value = math.nan
        if not self.low <= value <= self.high:  # nan is in no range
            raise RequestError(f"{what} needs {self.describe()}, not {text!r}")
        return value

    def check(self, value: object, what: str) -> None:
        """Raise ``ValueError`` unless ``value`` (a Python number) is in range."""
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if self.whole and not isinstance(value, int):
            number = False
        if not number or not self.low <= value <= self.high:  # type: ignore[operator]
            raise ValueError(f"{what} must be {self.describe()}, not {value!r}")

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} from {_plain(self.low)} to {_plain(self.high)} ({self.unit})"


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


TOKENS = Range(0, 1_000_000, "tokens", whole=True)
"""Token counts: ``[[tokens:N]]``, ``cut-after``, ``error-after``, ``end-after``."""
RATE = Range(1, 1_000_000, "tokens per second", whole=False)
"""``[[rate:R]]``: at least one token a second, so no reply streams for ever."""
SECONDS = Range(0, 300, "seconds", whole=False)
"""Waits: ``retry-after``, ``slow-first-token``."""
_TIMES = Range(0, 1_000_000, "requests", whole=True)  # ``times=N`` of a status fault


def count_tokens(text: str) -> int:
    """Tokens in ``text`` as the local model counts them: exactly the estimate."""
    return estimate_tokens(text)


@dataclass(frozen=True)
class Fault:
    """An injected failure for one request."""

    kind: Literal["status", "cut", "error", "end", "none"]
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
    stop_reason: CommonStopReason
    input_tokens: int
    rate: float | None = None
    first_token_latency: float | None = None
    fault: Fault = field(default_factory=lambda: Fault("none"))
    ignore_max_tokens: bool = False
    label: str | None = None

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
    head, rest = words[0], words[1:]
    if head in ("429", "529", "503"):
        times: int | None = None
        retry: float | None = None
        for word in rest:
            option, sign, value = word.partition("=")
            if option == "times" and sign:
                times = int(_TIMES.parse(value, f"[[fault:{head} times=N]]"))
            elif option == "retry-after" and sign:
                retry = SECONDS.parse(value, f"[[fault:{head} retry-after=S]]")
            else:
                raise RequestError(
                    f"unknown option {word!r} in [[fault:{spec}]] "
                    "(retry-after=S and times=N are known)"
                )
        return Fault("status", status=int(head), retry_after=retry, times=times), None, False
    if rest:
        raise RequestError(f"[[fault:{spec}]]: unexpected {' '.join(rest)!r} after {head!r}")
    key, sign, value = head.partition("=")
    if key == "slow-first-token" and sign:
        return None, SECONDS.parse(value, "[[fault:slow-first-token=S]]"), False
    if key == "cut-after" and sign:
        after = int(TOKENS.parse(value, "[[fault:cut-after=N]]"))
        return Fault("cut", after_tokens=after), None, False
    if key == "error-after" and sign:
        after = int(TOKENS.parse(value, "[[fault:error-after=N]]"))
        return Fault("error", after_tokens=after), None, False
    if key == "end-after" and sign:
        after = int(TOKENS.parse(value, "[[fault:end-after=N]]"))
        return Fault("end", after_tokens=after), None, False
    if key == "ignore-max-tokens":
        if sign:
            raise RequestError(f"[[fault:ignore-max-tokens]] takes no value, not {value!r}")
        return None, None, True
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
            wanted = int(TOKENS.parse(argument, "[[tokens:N]]"))
        elif name == "rate":
            result.rate = RATE.parse(argument, "[[rate:R]]")
        elif name == "label":
            if not _LABEL.fullmatch(argument):
                raise RequestError(
                    "[[label:TEXT]] needs 1 to 100 letters, digits or _.:- characters,"
                    f" not {argument[:120]!r}"
                )
            result.label = argument
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
