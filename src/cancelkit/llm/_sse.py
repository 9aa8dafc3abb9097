"""A streamed reply's events read straight off its HTTP response, as JSON objects.

The SDKs parse every Server-Sent Event of a stream into their own typed models
(pydantic), through several layers of async generators. At tens of tokens a second
per call, over hundreds of calls, that parsing was the demo service's largest cost
(about a fifth of its CPU at 200 sessions). The adapters still make the request with
the SDK (its headers, retries and status errors), through ``with_raw_response``, and
read the events here: each event's payload as a ``dict``, all a translator needs.

A provider's stream is not trusted to be well formed: an event that never ends is
held up to :data:`MAX_EVENT_BYTES`, and a stream that is not Server-Sent Events of
UTF-8 JSON (an event too large, a name or data that is not UTF-8, data that is not
JSON) is the provider's failure, raised as :class:`~cancelkit.ModelServerError` once
the events before it are consumed, as the SDKs' own errors are.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any

from .._exceptions import ModelServerError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

__all__ = ("END", "MAX_DRAIN_BYTES", "MAX_EVENT_BYTES", "EventStream", "json_payload")

MAX_EVENT_BYTES = 4 * 1024 * 1024
"""The most one event may hold, in bytes: its ``data:`` lines, each counted with
``data:`` and a newline (the least a line takes on the wire), and, while the event
arrives, the line not ended yet. A reply's events are a few hundred bytes, a tool
call's whole input a few KiB: 4 MiB is far above any, and bounds what is held for a
provider that never ends a line or an event. Past it the stream is malformed
(:class:`~cancelkit.ModelServerError`); an event that does end is refused exactly
when it counts more, however its bytes were cut into chunks."""

_PER_LINE = len(b"data:\n")  # what a data line counts beside its data
_NEWLINE = ord("\n")  # an int: `in` is then a memchr, several times faster than b"\n"
_CR = ord("\r")
_SAMPLE = 64  # bytes of a malformed stream quoted in the error
_LIMIT = " (the limit is cancelkit.llm._sse.MAX_EVENT_BYTES)"

END: dict[str, Any] = {}
"""What a provider's ``decode`` returns for its end-of-stream marker (OpenAI's
``[DONE]``): the events after it are not read as events, and the response is read to
its end, up to :data:`MAX_DRAIN_BYTES` (so that its connection can serve another call)."""

MAX_DRAIN_BYTES = 64 * 1024
"""The most read of a body after its end marker (nothing, normally: the body ends
there): a provider that goes on sending is not read for ever. The iteration then ends,
and the connection is dropped when the stream is closed, not reused."""


class EventStream:
    """The events of one streamed response (an ``httpx2.Response``), as ``dict``.

    Iterate it with ``async for`` over an async client's response, with ``for`` over
    a sync one's. ``decode(name, data, response)`` turns one event (its ``event:``
    name, its ``data:`` bytes) into its payload, ``None`` to skip it, or :data:`END`;
    an error it raises is raised by the iteration once the events before it are
    consumed: a ``ValueError`` (data that is not UTF-8 JSON, as :func:`json_payload`
    raises) or a ``RecursionError`` (JSON nested too deep) as the provider's
    :class:`~cancelkit.ModelServerError`, any other as itself (the SDK's error of an
    error event, which the stream maps). A stream that is malformed (see the module)
    is raised the same way. After an error or :data:`END`, nothing more is parsed or
    held; after an error nothing more is read either (the iteration is over, as a
    generator's that raised), after :data:`END` the body is read to its end, for its
    connection's reuse, up to :data:`MAX_DRAIN_BYTES`.
    ``response`` is there for the request id and for the socket a sync guard shuts
    down; ``provider`` names the provider in the errors.
    """

    def __init__(
        self, response: Any, decode: Callable[[str | None, bytes, Any], Any], provider: str
    ) -> None:
        self.response = response
        self.provider = provider
        self._decode = decode
        self._ready: deque[Any] = deque()  # payloads, and an error last
        self._partial = b""  # the line not ended, but for _pieces
        self._cr = False  # the last chunk ended with CR: an LF next is the rest of a CRLF
        self._pieces: list[bytes] = []  # chunks since, none with a newline
        self._arrived = 0  # their bytes
        self._name: str | None = None
        self._data: list[bytes] = []
        self._held = 0  # what the first self._counted lines of self._data count
        self._counted = 0  # (see MAX_EVENT_BYTES): as of the last chunk, in _hold
        self._ended = False  # END or an error was seen: nothing more is an event
        self._drained = 0  # bytes read since then
        self._over = False  # an error was raised, or the drain passed its limit: no more reads
        self._chunks: Any = None

    def _feed(self, chunk: bytes) -> None:
        if self._ended:
            self._drained += len(chunk)
            self._over = self._drained > MAX_DRAIN_BYTES
            return
        if self._cr or _CR in chunk:
            chunk = self._lf_only(chunk)
        if _NEWLINE not in chunk:  # a line still arriving: kept in pieces, joined once
            self._arriving(chunk)
            return
        if self._pieces:
            buffer = b"".join([self._partial, *self._pieces, chunk])
            self._pieces, self._arrived = [], 0
        else:
            buffer = self._partial + chunk
        # Only an event that may pass the limit is measured: it counts at most what
        # was held of it after the last chunk and this chunk's bytes (_held is that,
        # or more: it is not reset when an event ends, only when the next is held).
        large = len(buffer) + self._held > MAX_EVENT_BYTES
        lines = buffer.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                if line.startswith(b"data:"):
                    data = line[5:]
                    self._data.append(data[1:] if data[:1] == b" " else data)
                elif line.startswith(b"event:"):
                    try:
                        self._name = line[6:].strip().decode()
                    except UnicodeDecodeError as exc:
                        self._fail(f"an event's name is not UTF-8 ({exc})", line, exc)
                        return
                continue  # comments, ids and retries mean nothing to a reply
            data_lines, name = self._data, self._name
            self._data, self._name, self._counted = [], None, 0
            if not data_lines:
                continue
            data = b"\n".join(data_lines)
            if large and len(data) + (_PER_LINE - 1) * len(data_lines) + 1 > MAX_EVENT_BYTES:
                self._fail(f"an event is over {MAX_EVENT_BYTES} bytes{_LIMIT}", data)
                return
            try:
                payload = self._decode(name, data, self.response)
            except (ValueError, RecursionError) as exc:
                self._fail(f"an event's data is not readable UTF-8 JSON ({exc})", data, exc)
                return
            except Exception as exc:  # noqa: BLE001 - raised in turn by the iteration
                self._ready.append(exc)
                self._end()
                return
            if payload is END:
                self._end()
                return
            if payload is not None:
                self._ready.append(payload)
        if self._data:  # (the line not ended is shorter than this chunk: see _arriving)
            self._hold()

    def _lf_only(self, chunk: bytes) -> bytes:
        """``chunk`` with its line ends as ``\\n`` alone: a line of Server-Sent
        Events may end in CRLF, LF or CR alone. A CR that ends the chunk is a line's
        end already; an LF starting the next chunk is then the rest of that CRLF."""
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _arriving(self, chunk: bytes) -> None:
        """A chunk without a newline: kept aside, not added to the line not ended, so
        that a line dribbled in small chunks is copied once, not once per chunk. It
        counts towards the limit like the rest of that line."""
        self._pieces.append(chunk)
        self._arrived += len(chunk)
        held = self._held if self._data else 0  # (counted as of the last chunk)
        if held + len(self._partial) + self._arrived > MAX_EVENT_BYTES + 1:
            what = f"an event or a line passed {MAX_EVENT_BYTES} bytes without ending{_LIMIT}"
            shown = b"".join(piece[:_SAMPLE] for piece in [self._partial, *self._pieces[:_SAMPLE]])
            self._fail(what, shown, size=len(self._partial) + self._arrived)

    def _hold(self) -> None:
        """After a chunk that left an event open: its data lines so far and the line
        not ended fit :data:`MAX_EVENT_BYTES`, or the stream is malformed. Only the
        lines that came in this chunk are counted, so that an event cut into many
        chunks is not summed again for each."""
        data_lines, counted = self._data, self._counted
        added = data_lines[counted:]
        held = (self._held if counted else 0) + sum(map(len, added)) + _PER_LINE * len(added)
        self._held, self._counted = held, len(data_lines)
        # + 1: a byte of slack, so an event that ends within the limit is never refused
        # while it arrives (the event's own count decides, exactly).
        if held + len(self._partial) > MAX_EVENT_BYTES + 1:
            what = f"an event or a line passed {MAX_EVENT_BYTES} bytes without ending{_LIMIT}"
            shown = b"\n".join(line[:_SAMPLE] for line in data_lines[:_SAMPLE])
            self._fail(what, shown, size=held + len(self._partial))

    def _end(self) -> None:
        """Nothing more is an event: what is held is dropped, the rest is not parsed."""
        self._ended = True
        self._partial, self._data, self._name, self._counted = b"", [], None, 0
        self._pieces, self._arrived = [], 0

    def _fail(
        self,
        what: str,
        sample: bytes,
        cause: BaseException | None = None,
        *,
        size: int | None = None,
    ) -> None:
        """The stream is malformed: raise that, in turn, as the provider's failure,
        with the first bytes of ``sample`` (of ``size`` bytes, if not all there)."""
        headers = getattr(self.response, "headers", None) or {}
        size = len(sample) if size is None else size
        quoted = repr(sample[:_SAMPLE])
        if size > _SAMPLE:
            quoted += f"... ({size} bytes)"
        error = ModelServerError(
            f"{self.provider}: the provider sent a malformed event stream: {what}: {quoted}",
            provider=self.provider,
            request_id=headers.get("request-id") or headers.get("x-request-id"),
        )
        error.__cause__ = cause
        self._ready.append(error)
        self._end()

    def _take(self) -> dict[str, Any]:
        item = self._ready.popleft()
        if isinstance(item, Exception):
            self._over = True  # as a generator that raised: the iteration is over
            raise item
        result: dict[str, Any] = item
        return result

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._ready:
            if self._over:
                raise StopAsyncIteration
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
            if self._over:
                raise StopIteration
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
    """An event's data as a JSON object (``None`` when it is JSON but not an object).

    Raises:
        ValueError: the data is not UTF-8 JSON (``json.JSONDecodeError``,
            ``UnicodeDecodeError``), or a string in it is not Unicode text (an escaped
            lone surrogate, ``"\\ud800"``: valid JSON, but no UTF-8 can hold it, so a
            reply with one fails when it is stored or sent on); :class:`EventStream`
            raises it as the provider's :class:`~cancelkit.ModelServerError`.
        RecursionError: the JSON is nested too deep to read (likewise).
    """
    payload = json.loads(data)
    if b"\\ud" in data or b"\\uD" in data:  # an escaped surrogate: half of a pair, or alone
        _unicode_only(payload)
    return payload if isinstance(payload, dict) else None


def _unicode_only(payload: Any) -> None:
    """Raise ``ValueError`` if a string in ``payload`` holds a lone surrogate."""
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        lone = exc.object[exc.start : exc.end]
        raise ValueError(f"a string holds a lone surrogate {lone!r}: not Unicode text") from None
