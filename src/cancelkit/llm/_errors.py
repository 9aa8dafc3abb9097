"""The model's failures in cancelkit's words, whichever SDK raised them.

An agent should not need ``except anthropic.RateLimitError`` and ``except
openai.RateLimitError`` to handle one event, so the adapters map the SDKs'
exceptions to these, as httpx maps httpcore's (``map_httpcore_exceptions``). The
SDK's exception is kept as ``__cause__``: nothing it said is lost, and code that walks
the chain for the transport's error (an ``OSError``, ``httpx2.TransportError``) still
finds it. The hierarchy::

    Exception
     └── ModelError                 a model call failed (``provider``, ``status``, ``request_id``)
          ├── ModelUnavailable      the connection failed or was lost (also a ConnectionError)
          ├── ModelRateLimited      429, or overloaded (529): try again after ``retry_after``
          ├── ModelRejected         any other 4xx: the request is wrong; a retry will not help
          └── ModelServerError      5xx, an error event, a malformed stream or a reply
                                    ended before its end: the provider failed

A cancellation (``RunCancelled``, the backend's own) is never mapped: it is not a
failure of the model. A malformed stream is not the SDK's to report (the events are
read off the response by :mod:`._sse`): that module raises ``ModelServerError``
itself, with the parser's error (a ``JSONDecodeError``, say) as the cause; so does
:class:`~cancelkit.llm.ModelStream` for an event its translator cannot read, and for
a reply that ended before its end. The
classes live with every other exception of cancelkit, in
:mod:`cancelkit._exceptions`; this module holds the mapping.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from .._exceptions import (
    ModelError,
    ModelRateLimited,
    ModelRejected,
    ModelServerError,
    ModelUnavailable,
)

__all__ = ("SDKErrors", "sdk_errors")


_BUSY = frozenset({"rate_limit_error", "overloaded_error"})  # error events' types, mid-stream


@dataclass(frozen=True)
class SDKErrors:
    """One SDK's exception classes, and how each becomes a :class:`ModelError`.

    Both official SDKs share the shape: a connection error, a status error carrying
    the ``response``, and a base ``APIError`` for the rest (an error event in a
    stream, a response that does not validate).

    Args:
        provider: the name reported on the errors.
        connection: what a failed or lost connection raises (the SDK's, and the
            transport's, which a stream being read can raise unwrapped).
        status: the SDK's error for an HTTP error status.
        api: the SDK's base of the errors it raises about the API.
    """

    provider: str
    connection: tuple[type[Exception], ...]
    status: type[Exception]
    api: type[Exception]

    def map(self, error: Exception) -> ModelError | None:
        """Our exception for ``error``, or ``None`` when it is not the SDK's to map."""
        provider = self.provider
        if isinstance(error, self.connection):
            return ModelUnavailable(
                f"{provider}: the model server could not be reached or the connection "
                f"was lost ({error})",
                provider=provider,
            )
        if not isinstance(error, self.api):
            return None
        body = getattr(error, "body", None)
        response = getattr(error, "response", None) if isinstance(error, self.status) else None
        status: int | None = getattr(response, "status_code", None)
        if status is not None and status < 400:
            status = None  # an error event in a stream that began well: no status of its own
        headers = getattr(response, "headers", None) or {}
        request_id = headers.get("request-id") or headers.get("x-request-id")
        if status in (429, 529) or (status is None and _error_type(body) in _BUSY):
            retry_after = _retry_after(headers) if status is not None else None
            later = "later" if retry_after is None else f"in {retry_after:g}s"
            return ModelRateLimited(
                f"{provider}: rate limited or overloaded; try again {later} ({error})",
                provider=provider,
                status=status,
                request_id=request_id,
                retry_after=retry_after,
            )
        if status is not None and 400 <= status < 500:
            return ModelRejected(
                f"{provider}: the request was rejected; fix it, a retry will not help ({error})",
                provider=provider,
                status=status,
                request_id=request_id,
            )
        return ModelServerError(
            f"{provider}: the provider failed ({error})",
            provider=provider,
            status=status,
            request_id=request_id,
        )


@functools.cache
def sdk_errors(sdk: str) -> SDKErrors:
    """The exception classes of the official SDK named ``sdk`` (``"anthropic"``,
    ``"openai"``): both name them alike, and both let the transport's
    ``httpx2.TransportError`` out unwrapped while a stream is read.

    The SDKs are optional dependencies, imported here when a call is made (by then a
    client exists, so they are installed).
    """
    module = importlib.import_module(sdk)
    transport = importlib.import_module("httpx2")
    return SDKErrors(
        sdk,
        connection=(module.APIConnectionError, transport.TransportError),
        status=module.APIStatusError,
        api=module.APIError,
    )


def _error_type(body: object) -> str | None:
    """``error.type`` of an error body: ``{"error": {"type": ...}}`` or ``{"type": ...}``."""
    if not isinstance(body, dict):
        return None
    inner: Any = body.get("error", body)
    kind = inner.get("type") if isinstance(inner, dict) else None
    return kind if isinstance(kind, str) else None


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (an HTTP date: None)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw) / scale
        except ValueError:
            continue
        if seconds >= 0 and seconds != float("inf"):
            return seconds
    return None
