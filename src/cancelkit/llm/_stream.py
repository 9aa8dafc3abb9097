"""``ModelStream``: one model call, from budget reservation to a closed connection.

Shared by every adapter. Entering the block reserves budget (clamping
``max_tokens``), opens the provider's stream, and iterates it through
:func:`cancelkit.guard_stream`, so leaving the block for any reason (a ``break``, an
exception, the task's cancellation, the token firing) closes the HTTP response in
this task, and the provider stops generating. With a sync SDK client the same call
is a ``with`` block iterated through :func:`cancelkit.guard_sync_stream`: the token
firing in any thread shuts the connection down at once, and the iteration raises
:class:`~cancelkit.Cancelled`. Usage is never lost: when the
provider's final count never came, the output seen so far is reported as an
estimate (and charged to the budget). The SDK's failures come out as
:class:`~cancelkit.llm.ModelError` (see :mod:`._errors`).

A reply is trusted only as far as it goes. One whose body ends before the provider
said why it stopped (a proxy's timeout, a crashed provider) did not complete, and
nobody stopped it: it is the provider's failure, :class:`~cancelkit.ModelServerError`,
never a quiet end that reads like a Stop. So is an event the translator cannot read
(see :mod:`._translator`): its error is mapped where events are fed to it, once.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio

from .._exceptions import BudgetExceeded, Cancelled, CancelReason, ModelError, RunCancelled
from .._receipt import record
from .._streams import GuardedStream
from .._sync_streams import SyncGuardedStream
from .._token import current_token
from ._translator import UNREADABLE, cut_short, unreadable
from ._types import Done, ModelEvent, StopReason, ToolCall, Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
    from types import TracebackType

    from .._budget import Budget, Reservation
    from .._token import CancelToken
    from ._errors import SDKErrors
    from ._translator import Translator

__all__ = ("ModelStream",)

logger = logging.getLogger("cancelkit.llm")


class ModelStream:
    """One streamed call: ``async with model.stream(...) as events`` over an async SDK
    client, ``with model.stream(...) as events`` over a sync one.

    After the block: ``text``, ``tool_calls``, ``usage``, ``stop_reason`` and
    ``request_id`` describe what happened, however it ended: after a
    :class:`~cancelkit.llm.ModelError` mid-reply, ``text`` and ``tool_calls`` hold
    what arrived before it, ``usage`` its estimate, and ``stop_reason`` is
    ``"error"`` (``"cancelled"`` is only for a block left before the end otherwise:
    a Stop, a ``break``, an exception of the caller's).

    Built by an adapter (:class:`~cancelkit.llm._adapter.SDKModel`), which passes how
    to open the provider's stream, a translator of its events, and its SDK's
    exception classes (``errors``), so that entering the block and iterating raise
    :class:`~cancelkit.llm.ModelError` rather than the SDK's own.
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
        errors: SDKErrors | None = None,
        close_grace: float = 1.0,
        open_sync: Callable[[int], Iterable[Any]] | None = None,
    ) -> None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, not {max_tokens!r}")
        self.model = model
        self._open = open_stream
        self._open_sync = open_sync
        self._sync_guard: SyncGuardedStream[Any] | None = None
        self._translator = translator
        self._input_estimate = input_estimate
        self._max_tokens = max_tokens
        self._token = token
        self._budget = budget
        self._errors = errors
        self._grace = close_grace
        self._reservation: Reservation | None = None
        self._guard: GuardedStream[Any] | None = None
        self._pending: deque[ModelEvent] = deque()
        self._failure: ModelError | None = None  # the provider's, raised mid-call
        self.text = ""
        self.tool_calls: list[ToolCall] = []
        self.usage: Usage | None = None
        self.stop_reason: StopReason | None = None
        self.request_id: str | None = None
        self.max_tokens_sent: int | None = None

    async def __aenter__(self) -> ModelStream:
        token = self._token if self._token is not None else current_token()
        self._token = token
        if token.reason is not None:
            raise RunCancelled(token.reason)
        max_tokens = self._reserve(token)
        try:
            stream = await self._open(max_tokens)
        except BaseException as exc:
            try:
                self._raise_mapped(exc)
            finally:
                self._settle()
            raise
        self._note_request_id(stream)
        self._guard = GuardedStream(stream, token, self._grace, report=False)
        await self._guard.__aenter__()
        return self

    def __enter__(self) -> ModelStream:
        """Open the call over a sync SDK client (``with model.stream(...)``).

        Raises:
            Cancelled: the token was already cancelled; no request is sent.
            BudgetExceeded: the call does not fit the budget; no request is sent.
            ModelError: the request failed.
            TypeError: the model's client is async (use ``async with``).
        """
        if self._open_sync is None:
            raise TypeError("this model stream has no sync client: use `async with`")
        token = self._token if self._token is not None else current_token()
        self._token = token
        token.check()
        max_tokens = self._reserve(token)
        try:
            stream = self._open_sync(max_tokens)
        except BaseException as exc:
            try:
                self._raise_mapped(exc)
            finally:
                self._settle()
            raise
        self._note_request_id(stream)
        self._sync_guard = SyncGuardedStream(stream, token, name=self.model, report=False)
        self._sync_guard.__enter__()
        return self

    def _reserve(self, token: CancelToken) -> int:
        """Reserve the budget, if any; the ``max_tokens`` to send."""
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
        return max_tokens

    def _note_request_id(self, stream: object) -> None:
        response = getattr(stream, "response", None)
        headers = getattr(response, "headers", None) or {}
        self.request_id = headers.get("request-id") or headers.get("x-request-id")

    def __aiter__(self) -> ModelStream:
        return self

    async def __anext__(self) -> ModelEvent:
        """The next event.

        Raises:
            RunCancelled: the token fired (a budget overrun included).
            ModelError: the provider failed mid-stream (its reply ended before its
                end, or was malformed: ``ModelServerError``), or the connection was
                lost.
        """
        if self._guard is None:
            raise RuntimeError("iterate model.stream() inside its `async with` block")
        while not self._pending:
            if self._translator.finished:
                if self._failure is None:  # (a failed reply's rest is not read)
                    await self._drain(self._guard)
                raise StopAsyncIteration
            try:
                raw = await self._guard.__anext__()
            except StopAsyncIteration:
                break
            except Exception as exc:
                self._raise_mapped(exc)
                raise
            self._fed(raw)
        else:
            return self._take()
        self._ended()  # (out of the except: its error is not "during" StopAsyncIteration)
        return self._take()

    async def _drain(self, guard: GuardedStream[Any]) -> None:
        """The reply is complete: read the response to its end (the provider ends it
        right after its last event), within the close grace, so that its connection
        goes back to the client's pool for the next call instead of being dropped.
        Whatever comes after the last event is not ours to report."""
        if guard.closed:
            return
        with anyio.move_on_after(self._grace), contextlib.suppress(Exception):
            while True:  # ends with StopAsyncIteration, at once
                await guard.__anext__()

    def __iter__(self) -> ModelStream:
        return self

    def __next__(self) -> ModelEvent:
        """The next event, over a sync client.

        Raises:
            Cancelled: the token fired, in any thread (a budget overrun included).
            ModelError: the provider failed mid-stream (its reply ended before its
                end, or was malformed: ``ModelServerError``), or the connection was
                lost.
        """
        if self._sync_guard is None:
            raise RuntimeError("iterate model.stream() inside its `with` block")
        while not self._pending:
            if self._translator.finished:
                raise StopIteration
            try:
                raw = next(self._sync_guard)
            except StopIteration:
                break
            except Exception as exc:
                self._raise_mapped(exc)
                raise
            try:
                self._fed(raw)
            except RunCancelled as stopped:  # sync code is told as a token's check() tells it
                raise Cancelled(stopped.reason) from None
        else:
            return self._take()
        try:
            self._ended()
        except RunCancelled as stopped:
            raise Cancelled(stopped.reason) from None
        return self._take()

    def _ended(self) -> None:
        """The provider's stream ended: queue the events still owed.

        Raises:
            ModelServerError: the reply had not come to its end (nobody stopped it).
            RunCancelled: it had not, and the token has fired: the Stop came first.
        """
        translator = self._translator
        owed = translator.end()
        if owed is None:
            token = self._token
            if token is not None and token.reason is not None:
                raise RunCancelled(token.reason)
            calls = len(self.tool_calls)
            error = cut_short(translator, self._provider(), self.request_id, self.text, calls)
            raise self._failed(error)
        translator.finished = True
        self._pending.extend(owed)

    def _fed(self, raw: Any) -> None:
        """Translate one raw event, hold the budget to it, queue what it gave.

        Raises:
            ModelServerError: the translator could not read the event (the cause).
            RunCancelled: the budget cannot hold what arrived.
        """
        try:
            events = self._translator.feed(raw)
        except UNREADABLE as exc:
            error = unreadable(self._provider(), self.request_id, raw, exc)
            raise self._failed(error) from exc
        self._check_budget()
        self._pending.extend(events)

    def _provider(self) -> str:
        return self._errors.provider if self._errors is not None else self.model

    def _failed(self, error: ModelError) -> ModelError:
        """Keep ``error`` as the call's failure (its ``stop_reason``, its receipt);
        nothing after it is an event of the reply (the iteration ends)."""
        self._failure = error
        self._translator.finished = True
        return error

    def _take(self) -> ModelEvent:
        event = self._pending.popleft()
        self._observe(event)
        return event

    def _raise_mapped(self, error: BaseException) -> None:
        """Raise the SDK's ``error`` as a :class:`ModelError`, if it is the SDK's; a
        :class:`ModelError` either way (one of ours already, a malformed stream's)
        is kept as the call's failure."""
        if self._errors is not None and isinstance(error, Exception):
            ours = self._errors.map(error)
            if ours is not None:
                raise self._failed(ours) from error
        if isinstance(error, ModelError):
            self._failed(error)

    def _observe(self, event: ModelEvent) -> None:
        if type(event) is ToolCall:
            self.tool_calls.append(event)
        elif type(event) is Done:
            self.stop_reason = event.stop_reason
        elif type(event) is Usage:
            self.usage = event
        else:
            self.text += event.text  # type: ignore[union-attr]

    def _check_budget(self) -> None:
        """After every chunk: the reservation holds what arrived, or the stream stops.

        The output counted is the estimate from what arrived, or the provider's own
        count once it came, whichever is more: a provider ignoring ``max_tokens``
        is stopped within the chunk that took it past what the budget could hold.
        """
        if self._reservation is None or self._token is None:
            return
        output = max(self._translator.estimated_output(), self._translator.output_tokens or 0)
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
            self._left()
            self._settle()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._sync_guard is not None:
                self._sync_guard.close()
        finally:
            self._left()
            self._settle()

    def _left(self) -> None:
        """The block was left: a call that did not end has failed, or was left early
        (a Stop, a ``break``, an exception of the caller's)."""
        if self.stop_reason is None:
            self.stop_reason = "error" if self._failure is not None else "cancelled"

    def _settle(self) -> None:
        translator = self._translator
        if self.usage is None or self.usage.estimated:
            final = translator.output_tokens
            self.usage = Usage(
                input_tokens=translator.input_tokens
                if translator.input_tokens is not None
                else self._input_estimate,
                output_tokens=final if final is not None else self._translator.estimated_output(),
                estimated=final is None or translator.input_tokens is None,
            )
        if self._reservation is not None:
            self._reservation.settle(self.usage.input_tokens, self.usage.output_tokens)
        failure = self._failure
        if failure is not None:  # the provider failed: not a Stop, not a break
            outcome, detail = "failed", f"{type(failure).__name__}: {failure}"
        else:
            outcome = "finished" if translator.finished else "closed"
            detail = f"stop reason {self.stop_reason}" if self.stop_reason else ""
        record(
            "stream",
            self.model,
            outcome,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            estimated=self.usage.estimated,
            detail=detail,
        )
