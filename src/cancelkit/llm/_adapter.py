"""``SDKModel``: the model protocol written once, over any provider's official SDK.

A call is the same flow whatever the provider: build the request, open a streamed
response with ``max_tokens`` clamped by the budget, translate each event to ours, map
the SDK's errors to ours. :class:`SDKModel` holds that flow (as httpx's
``BaseTransport`` holds what its transports share); a provider adapter supplies only
its payload, its create call, its translator, and the name of its SDK (whose
exception classes are mapped to cancelkit's).

The client may be the SDK's async one (``async with model.stream(...)``) or its sync
one (``with model.stream(...)``, for sync code: WSGI, Django, scripts): the create
call is the same, the first returns a coroutine and the second the response itself.
The call is made ``with_raw_response``, and its events are read by
:class:`~cancelkit.llm._sse.EventStream` (see there why), decoded by the adapter.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._errors import sdk_errors
from ._sse import EventStream
from ._stream import ModelStream
from ._tokens import estimate_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable, Sequence

    from .._budget import Budget
    from .._token import CancelToken
    from ._translator import Translator
    from ._types import Message, Tool

__all__ = ("SDKModel",)

ClientT = TypeVar("ClientT")


class SDKModel(ABC, Generic[ClientT]):
    """A model behind a provider's official SDK client, async or sync.

    Args:
        client: the SDK client (point its ``base_url`` at the local server for
            tests); with an async client, use ``async with model.stream(...)``, with
            a sync one ``with model.stream(...)``.
        model: the model name the provider knows.
    """

    sdk: ClassVar[str]
    """The SDK's package name: its exceptions are mapped (see :func:`sdk_errors`)."""

    def __init__(self, client: ClientT, model: str) -> None:
        self.client = client
        self.name = model

    def stream(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[Tool] = (),
        max_tokens: int = 1024,
        token: CancelToken | None = None,
        budget: Budget | None = None,
    ) -> ModelStream:
        """Start a streamed call; iterate its events inside ``async with`` (an async
        client) or ``with`` (a sync client).

        Raises:
            ValueError: ``max_tokens`` is not a positive int (before any request).
            TypeError: on entering the block, when the block does not match the
                client (``with`` on an async client, or the reverse); no request is
                sent.
        """
        payload = self._payload(messages, system, tools)

        async def open_stream(limit: int) -> AsyncIterable[Any]:
            opened = self._create(payload, limit)
            if not inspect.isawaitable(opened):
                opened.http_response.close()
                raise TypeError(
                    f"{type(self).__name__} has a sync client: use `with model.stream(...)`"
                )
            return EventStream((await opened).http_response, self._decode, self.sdk)

        def open_sync(limit: int) -> Iterable[Any]:
            opened = self._create(payload, limit)
            if inspect.iscoroutine(opened):
                opened.close()  # a coroutine never awaited sends nothing
                raise TypeError(
                    f"{type(self).__name__} has an async client: use `async with model.stream(...)`"
                )
            return EventStream(opened.http_response, self._decode, self.sdk)

        text = (system or "") + "".join(m.size_text() for m in messages)
        return ModelStream(
            model=self.name,
            open_stream=open_stream,
            open_sync=open_sync,
            translator=self._translator(),
            input_estimate=estimate_tokens(text),
            max_tokens=max_tokens,
            token=token,
            budget=budget,
            errors=sdk_errors(self.sdk),
        )

    @abstractmethod
    def _payload(
        self, messages: Sequence[Message], system: str | None, tools: Sequence[Tool]
    ) -> dict[str, Any]:
        """The request in the provider's shape, all but ``max_tokens`` and streaming."""

    @abstractmethod
    def _create(self, payload: dict[str, Any], max_tokens: int) -> Any:
        """The SDK's streamed create call ``with_raw_response``, with this
        ``max_tokens``: a coroutine of its response (an async client) or the
        response (a sync client), its body not read yet."""

    @abstractmethod
    def _decode(self, name: str | None, data: bytes, response: Any) -> dict[str, Any] | None:
        """One Server-Sent Event of the reply (its name, its data) as the payload the
        translator reads, ``None`` to skip it, or :data:`~cancelkit.llm._sse.END`.

        Raises:
            Exception: the SDK's own error for an error event (it is mapped).
        """

    @abstractmethod
    def _translator(self) -> Translator:
        """A fresh translator of the provider's events, for one call."""
