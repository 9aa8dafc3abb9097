"""Usage that survives a Stop: model streams metered at the HTTP layer.

Agent frameworks take their usage from the provider's final chunk, which never comes
when a stream is cut off by a Stop: pydantic-ai, openai-agents and LangGraph all
report 0 output tokens for a reply the server generated 100 tokens of. All three
talk to the model through the ``openai`` SDK, so one place sees every stream: the
HTTP client under it. :class:`MeteredTransport` reads each Chat Completions event
stream as it passes (the text and tool-call arguments that arrived, the usage chunk
if one comes) and, when the response is closed, reports the stream to the current
run's receipt: the provider's own counts, or an estimate from what arrived (as
cancelkit's own adapters do) marked ``estimated``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .._extras import require
from .._receipt import record
from ..llm._tokens import estimate_tokens

require("httpx2", "openai", "cancelkit.integrations")  # a clear error if it is missing
import httpx2  # noqa: E402 - after the check that names the extra

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ("MeteredTransport", "StreamMeter", "metered_http_client")


class StreamMeter:
    """Reads one Chat Completions event stream, chunk by chunk, counting as it goes."""

    __slots__ = (
        "_buffer",
        "done",
        "input_estimate",
        "input_tokens",
        "model",
        "output_chars",
        "output_tokens",
    )

    def __init__(self, model: str, input_estimate: int) -> None:
        self.model = model
        self.input_estimate = input_estimate
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.output_chars = 0
        self.done = False
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        """Count the events complete in ``chunk`` (a partial line waits for the next)."""
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            return  # not ours to judge: the SDK reports a malformed stream
        if not isinstance(event, dict):
            return
        for choice in event.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            for key in ("content", "refusal", "reasoning_content"):
                text = delta.get(key)
                if isinstance(text, str):
                    self.output_chars += len(text)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    for key in ("name", "arguments"):
                        text = function.get(key)
                        if isinstance(text, str):
                            self.output_chars += len(text)
        usage = event.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int):
                self.input_tokens, self.output_tokens = prompt, completion

    def report(self) -> None:
        """Put this stream into the current run's receipt (nothing outside a run)."""
        reported = self.output_tokens is not None and self.input_tokens is not None
        record(
            "stream",
            self.model,
            "finished" if self.done else "closed",
            input_tokens=self.input_tokens if reported else self.input_estimate,
            output_tokens=self.output_tokens
            if reported and self.output_tokens is not None
            else estimate_tokens(self.output_chars),
            estimated=not reported,
            detail="usage reported" if reported else "usage estimated from what arrived",
        )


class _MeteredStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, meter: StreamMeter) -> None:
        self._inner = inner
        self._meter = meter
        self._reported = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._meter.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._reported:
                self._reported = True
                self._meter.report()


class MeteredTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that meters every streamed Chat Completion it carries.

    Args:
        inner: the transport that does the work (a default ``AsyncHTTPTransport``).
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self._inner = inner if inner is not None else httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        meter = _meter_for(request)
        response = await self._inner.handle_async_request(request)
        if meter is not None and "event-stream" in response.headers.get("content-type", ""):
            response.stream = _MeteredStream(response.stream, meter)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _meter_for(request: httpx2.Request) -> StreamMeter | None:
    """A meter for a streamed Chat Completions request, else ``None``."""
    if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
        return None
    try:
        body = json.loads(request.content or b"{}")
    except ValueError:
        return None
    if not isinstance(body, dict) or not body.get("stream"):
        return None
    messages = body.get("messages") or []
    chars = sum(
        len(json.dumps(message.get("content") or ""))
        for message in messages
        if isinstance(message, dict)
    )
    return StreamMeter(str(body.get("model") or "model"), estimate_tokens(chars))


def metered_http_client(**kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` for the ``openai`` SDK whose streams are metered.

    Usage: ``AsyncOpenAI(base_url=..., http_client=metered_http_client())``; give
    that client to the framework (pydantic-ai's ``OpenAIProvider(openai_client=)``,
    openai-agents' ``OpenAIChatCompletionsModel(openai_client=)``, LangChain's
    ``ChatOpenAI(http_async_client=)``).

    Args:
        **kwargs: passed to ``httpx2.AsyncClient`` (``timeout``, ``limits``...);
            ``transport`` is wrapped, not replaced.
    """
    kwargs["transport"] = MeteredTransport(kwargs.get("transport"))
    kwargs.setdefault("timeout", httpx2.Timeout(600.0, connect=5.0))
    return httpx2.AsyncClient(**kwargs)
