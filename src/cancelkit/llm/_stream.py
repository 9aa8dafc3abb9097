"""``ModelStream``: one model call, from budget reservation to a closed connection.

Shared by every adapter. Entering the block reserves budget (clamping
``max_tokens``), opens the provider's stream, and iterates it through
:func:`cancelkit.guard_stream`, so leaving the block for any reason (a ``break``, an
exception, the task's cancellation, the token firing) closes the HTTP response in
this task, and the provider stops generating. Usage is never lost: when the
provider's final count never came, the output seen so far is reported as an
estimate (and charged to the budget).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from .._budget import BudgetExceeded
from .._exceptions import CancelReason, RunCancelled
from .._streams import GuardedStream, guard_stream
from .._token import current_token
from ._types import Done, ModelEvent, StopReason, ToolCall, Usage, estimate_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
    from types import TracebackType

    from .._budget import Budget, Reservation
    from .._token import CancelToken
    from ._types import Message

__all__ = ("ModelStream", "Translator")

logger = logging.getLogger("cancelkit.llm")


class Translator:
    """Turns one provider's stream events into :data:`ModelEvent` values.

    Subclasses implement :meth:`feed`; they report usage through the attributes
    here as it becomes known.
    """

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None  # the provider's own final count
        self.output_chars = 0  # what arrived so far, for the estimate
        self.stop_reason: StopReason | None = None
        self.finished = False

    def feed(self, event: Any) -> list[ModelEvent]:
        raise NotImplementedError

    def end(self) -> list[ModelEvent]:
        """The provider's stream ended; the events still owed (none by default)."""
        return []


class ModelStream:
    """One streamed call; use as ``async with model.stream(...) as events``.

    After the block: ``text``, ``tool_calls``, ``usage``, ``stop_reason`` and
    ``request_id`` describe what happened, however it ended.
    """

    def __init__(
        self,
        *,
        model: str,
        open_stream: Callable[[int], Awaitable[AsyncIterable[Any]]],
        translator: Translator,
        input_estimate: int,
        max_tokens: int,
        token: CancelToken | None,
        budget: Budget | None,
        close_grace: float = 1.0,
    ) -> None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, not {max_tokens!r}")
        self.model = model
        self._open = open_stream
        self._translator = translator
        self._input_estimate = input_estimate
        self._max_tokens = max_tokens
        self._token = token
        self._budget = budget
        self._grace = close_grace
        self._reservation: Reservation | None = None
        self._guard: GuardedStream[Any] | None = None
        self._pending: deque[ModelEvent] = deque()
        self.text = ""
        self.tool_calls: list[ToolCall] = []
        self.usage: Usage | None = None
        self.stop_reason: StopReason | None = None
        self.request_id: str | None = None
        self.max_tokens_sent: int | None = None

    @classmethod
    def for_call(
        cls,
        *,
        model: str,
        open_stream: Callable[[int], Awaitable[AsyncIterable[Any]]],
        translator: Translator,
        system: str | None,
        messages: Sequence[Message],
        max_tokens: int,
        token: CancelToken | None,
        budget: Budget | None,
    ) -> ModelStream:
        """The stream of one adapter call, its input estimated from the conversation."""
        text = (system or "") + "".join(m.size_text() for m in messages)
        return cls(
            model=model,
            open_stream=open_stream,
            translator=translator,
            input_estimate=estimate_tokens(text),
            max_tokens=max_tokens,
            token=token,
            budget=budget,
        )

    async def __aenter__(self) -> ModelStream:
        token = self._token if self._token is not None else current_token()
        self._token = token
        if token.reason is not None:
            raise RunCancelled(token.reason)
        max_tokens = self._max_tokens
        if self._budget is not None:
            try:
                self._reservation = self._budget.reserve(
                    input_tokens=self._input_estimate, max_output_tokens=max_tokens
                )
            except BudgetExceeded as exceeded:
                token.cancel(exceeded.reason)
                raise
            max_tokens = self._reservation.max_output_tokens
        self.max_tokens_sent = max_tokens
        try:
            stream = await self._open(max_tokens)
        except BaseException:
            self._settle()
            raise
        response = getattr(stream, "response", None)
        headers = getattr(response, "headers", None) or {}
        self.request_id = headers.get("request-id") or headers.get("x-request-id")
        self._guard = guard_stream(stream, token=token, grace=self._grace)
        await self._guard.__aenter__()
        return self

    def __aiter__(self) -> ModelStream:
        return self

    async def __anext__(self) -> ModelEvent:
        """The next event; raises ``RunCancelled`` if the token fired (budget included)."""
        if self._guard is None:
            raise RuntimeError("iterate model.stream() inside its `async with` block")
        translator = self._translator
        while not self._pending:
            if translator.finished:
                raise StopAsyncIteration
            try:
                raw = await self._guard.__anext__()
            except StopAsyncIteration:
                translator.finished = True
                self._pending.extend(translator.end())
                continue
            events = translator.feed(raw)
            self._check_budget()
            self._pending.extend(events)
        event = self._pending.popleft()
        self._observe(event)
        return event

    def _observe(self, event: ModelEvent) -> None:
        if type(event) is ToolCall:
            self.tool_calls.append(event)
        elif type(event) is Done:
            self.stop_reason = event.stop_reason
        elif type(event) is Usage:
            self.usage = event
        else:
            self.text += event.text  # type: ignore[union-attr]

    def _estimated_output(self) -> int:
        return -(-self._translator.output_chars // 4)  # ceil(chars / 4), as estimate_tokens

    def _check_budget(self) -> None:
        """After every chunk: the reservation holds what arrived, or the stream stops.

        The output counted is the estimate from what arrived, or the provider's own
        count once it came, whichever is more: a provider ignoring ``max_tokens``
        is stopped within the chunk that took it past what the budget could hold.
        """
        if self._reservation is None or self._token is None:
            return
        output = max(self._estimated_output(), self._translator.output_tokens or 0)
        why = self._reservation.track(output)
        if why is not None:
            self._token.cancel(CancelReason("budget", why))
            raise RunCancelled(self._token.reason or CancelReason("budget", why))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._guard is not None:
                await self._guard.__aexit__(exc_type, exc, tb)
        finally:
            if self.stop_reason is None:  # left before the end: a break, an error, a Stop
                self.stop_reason = "cancelled"
            self._settle()

    def _settle(self) -> None:
        translator = self._translator
        if self.usage is None or self.usage.estimated:
            final = translator.output_tokens
            self.usage = Usage(
                input_tokens=translator.input_tokens
                if translator.input_tokens is not None
                else self._input_estimate,
                output_tokens=final if final is not None else self._estimated_output(),
                estimated=final is None or translator.input_tokens is None,
            )
        if self._reservation is not None:
            self._reservation.settle(self.usage.input_tokens, self.usage.output_tokens)
