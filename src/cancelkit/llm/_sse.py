"""A streamed reply's events read straight off its HTTP response, as JSON objects.

The SDKs parse every Server-Sent Event of a stream into their own typed models
(pydantic), through several layers of async generators. At tens of tokens a second
per call, over hundreds of calls, that parsing was the demo service's largest cost
(about a fifth of its CPU at 200 sessions). The adapters still make the request with
the SDK (its headers, retries and status errors), through ``with_raw_response``, and
read the events here: each event's payload as a ``dict``, all a translator needs.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

__all__ = ("END", "EventStream", "json_payload")

END: dict[str, Any] = {}
"""What a provider's ``decode`` returns for its end-of-stream marker (OpenAI's
``[DONE]``): the events after it are not read as events, and the response is read to
its end (so that its connection can serve another call)."""


class EventStream:
    """The events of one streamed response (an ``httpx2.Response``), as ``dict``.

    Iterate it with ``async for`` over an async client's response, with ``for`` over
    a sync one's. ``decode(name, data, response)`` turns one event (its ``event:``
    name, its ``data:`` bytes) into its payload, ``None`` to skip it, or :data:`END`;
    an error it raises is raised by the iteration once the events before it are
    consumed. ``response`` is there for the request id and for the socket a sync
    guard shuts down.
    """

    def __init__(self, response: Any, decode: Callable[[str | None, bytes, Any], Any]) -> None:
        self.response = response
        self._decode = decode
        self._ready: deque[Any] = deque()  # payloads, and an error last
        self._partial = b""
        self._name: str | None = None
        self._data: list[bytes] = []
        self._ended = False  # END or an error was seen: nothing more is an event
        self._chunks: Any = None

    def _feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if line:
                if line.startswith(b"data:"):
                    data = line[5:]
                    self._data.append(data[1:] if data[:1] == b" " else data)
                elif line.startswith(b"event:"):
                    self._name = line[6:].strip().decode()
                continue  # comments, ids and retries mean nothing to a reply
            data_lines, name = self._data, self._name
            self._data, self._name = [], None
            if not data_lines or self._ended:
                continue
            try:
                payload = self._decode(name, b"\n".join(data_lines), self.response)
            except Exception as exc:  # noqa: BLE001 - raised in turn by the iteration
                self._ready.append(exc)
                self._ended = True
                continue
            if payload is END:
                self._ended = True
            elif payload is not None:
                self._ready.append(payload)

    def _take(self) -> dict[str, Any]:
        item = self._ready.popleft()
        if isinstance(item, Exception):
            raise item
        result: dict[str, Any] = item
        return result

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._ready:
            if self._chunks is None:
                self._chunks = _body(self.response)
            chunks: AsyncIterator[bytes] = self._chunks
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                self._feed(b"\n\n")  # an event the response ended without a blank line
                if not self._ready:
                    raise
                break
            self._feed(chunk)
        return self._take()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._ready:
            if self._chunks is None:
                self._chunks = self.response.iter_bytes()
            chunks: Iterator[bytes] = self._chunks
            chunk = next(chunks, None)
            if chunk is None:
                self._feed(b"\n\n")
                if not self._ready:
                    raise StopIteration
                break
            self._feed(chunk)
        return self._take()

    async def aclose(self) -> None:
        """Close the response (its connection is dropped unless it was read to its end)."""
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            await chunks.aclose()
        await self.response.aclose()

    def close(self) -> None:
        """Close a sync client's response."""
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            chunks.close()
        self.response.close()


def _body(response: Any) -> AsyncIterator[bytes]:
    """The response's body as it arrives. Not encoded (the providers' event streams
    are not), straight from its byte stream, without the two layers of generators
    that decode and re-chunk it; encoded, through httpx2's decoding. The response is
    closed by :meth:`EventStream.aclose` either way (the guard calls it at the end)."""
    if response.headers.get("content-encoding", "identity").lower() in ("identity", ""):
        body: AsyncIterator[bytes] = aiter(response.stream)
        return body
    chunks: AsyncIterator[bytes] = response.aiter_bytes()
    return chunks


def json_payload(data: bytes) -> dict[str, Any] | None:
    """An event's data as a JSON object (``None`` when it is not one)."""
    payload = json.loads(data)
    return payload if isinstance(payload, dict) else None
