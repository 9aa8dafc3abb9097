"""The local model server's ASGI application: it generates, it counts, it notices.

Every streamed reply is generated at a set rate while a watcher listens for the
client going away (``http.disconnect``); the moment it does, generation stops, so at
most the chunk being produced is wasted. The server counts what it generated, and
what it generated after a disconnect, per request and in total: ``GET /stats``;
one request: ``GET /stats/requests/{id}``; the requests of one ``[[label:TEXT]]``,
with the tokens each generated after a moment: ``GET /stats/requests?label=TEXT&after=T``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import secrets
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .._tokens import TOKEN_CHARS
from ._records import Counters, RequestRecord
from ._script import RATE, SECONDS, TOKENS, Range, RequestError, count_tokens, plan
from ._wire_anthropic import AnthropicWire
from ._wire_openai import OpenAIWire

if TYPE_CHECKING:
    from ._script import Plan
    from ._wire import ParsedRequest, Wire

__all__ = ("LocalModelApp", "LocalModelConfig", "RequestRecord", "StreamCut")

logger = logging.getLogger("cancelkit.llm.local")

Scope = dict[str, Any]
Message = dict[str, Any]


_CHUNK = Range(1, 1000, "tokens per chunk", whole=True)


class StreamCut(Exception):  # noqa: N818 - what happened, not an error of the server
    """Raised inside the app to drop a connection mid-stream (an injected fault)."""


@dataclass
class LocalModelConfig:
    """How the local model behaves.

    Args:
        rate: tokens generated per second, 1 to 1,000,000 (as ``[[rate:R]]``).
        chunk_tokens: tokens per streamed chunk, 1 to 1,000.
        first_token_latency: seconds before the first token, 0 to 300.
        default_tokens: reply length when the prompt asks for none, 0 to 1,000,000.

    Raises:
        ValueError: a value out of its range (``nan`` and ``inf`` included), or
            not a number (a whole one for the token counts).
    """

    rate: float = 50.0
    chunk_tokens: int = 1
    first_token_latency: float = 0.05
    default_tokens: int = 120

    def __post_init__(self) -> None:
        RATE.check(self.rate, "LocalModelConfig(rate=...)")
        _CHUNK.check(self.chunk_tokens, "LocalModelConfig(chunk_tokens=...)")
        SECONDS.check(self.first_token_latency, "LocalModelConfig(first_token_latency=...)")
        TOKENS.check(self.default_tokens, "LocalModelConfig(default_tokens=...)")


class LocalModelApp:
    """An ASGI app speaking the Anthropic and OpenAI streaming protocols."""

    def __init__(self, config: LocalModelConfig | None = None, *, history: int = 2000) -> None:
        self.config = config or LocalModelConfig()
        self.counters = Counters()
        self.records: OrderedDict[str, RequestRecord] = OrderedDict()
        self._history = history
        self._attempts: dict[str, int] = {}
        self._ids = itertools.count(1)

    def stats(self) -> dict[str, int]:
        """The totals: ``tokens_generated``, ``tokens_after_disconnect``, ``open_streams``,
        ``requests``, ``disconnects``, ``completed``, ``faults``, ``bad_requests``, and
        ``tokens_saved`` (planned but never generated because the client went away)."""
        return asdict(self.counters)

    def record(self, request_id: str) -> RequestRecord | None:
        """The record of one request, by the id sent in its response headers."""
        return self.records.get(request_id)

    def labelled(self, label: str) -> list[RequestRecord]:
        """The records of the requests whose prompt had ``[[label:LABEL]]``, oldest first
        (of the last ``history`` requests)."""
        return [record for record in self.records.values() if record.label == label]

    def _labelled(self, query: bytes) -> tuple[int, dict[str, Any]]:
        """``GET /stats/requests?label=L[&after=T]``: the records labelled L, each with
        ``tokens_after`` T (a ``time.monotonic()`` moment) when T is given."""
        params = urllib.parse.parse_qs(query.decode("latin-1"))
        label = params.get("label", [""])[0]
        after: float | None = None
        if "after" in params:
            try:
                after = float(params["after"][0])
            except ValueError:
                after = math.nan
            if not math.isfinite(after):
                return 400, {"error": "after must be a time.monotonic() value (seconds)"}
        if not label:
            return 400, {"error": "give ?label=TEXT (and optionally &after=MONOTONIC_SECONDS)"}
        return 200, {"requests": [record.summary(after) for record in self.labelled(label)]}

    def reset(self) -> None:
        """Zero the counters and forget the records."""
        self.counters = Counters()
        self.records.clear()
        self._attempts.clear()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/stats":
            await _json(send, 200, self.stats())
        elif method == "GET" and path == "/stats/requests":
            status, body = self._labelled(scope.get("query_string", b""))
            await _json(send, status, body)
        elif method == "GET" and path.startswith("/stats/requests/"):
            found = self.records.get(path.rsplit("/", 1)[-1])
            await _json(
                send,
                200 if found else 404,
                found.summary() if found else {"error": "unknown request id"},
            )
        elif method == "POST" and path == "/stats/reset":
            self.reset()
            await _json(send, 200, {"ok": True})
        elif method == "GET" and path in ("/", "/health"):
            await _json(send, 200, {"ok": True, "protocols": ["anthropic", "openai"]})
        elif method == "POST" and path == "/v1/messages":
            await self._generate(AnthropicWire(f"msg_{secrets.token_hex(12)}"), receive, send)
        elif method == "POST" and path == "/v1/chat/completions":
            await self._generate(OpenAIWire(f"chatcmpl-{secrets.token_hex(12)}"), receive, send)
        else:
            await _json(send, 404, {"error": f"no route for {method} {path}"})

    async def _generate(self, wire: Wire, receive: Any, send: Any) -> None:
        raw = await _read_body(receive)
        request_id = f"req_{next(self._ids):06d}_{secrets.token_hex(4)}"
        headers = [(wire.request_id_header.encode(), request_id.encode())]
        self.counters.requests += 1
        try:
            body = json.loads(raw or b"null")
            if not isinstance(body, dict):
                raise RequestError("the request body must be a JSON object")
            request = wire.parse(body)
            reply = plan(
                prompt_text=request.prompt_text,
                directive_text=request.directive_text,
                tool_results=request.tool_results,
                max_tokens=request.max_tokens,
                default_tokens=self.config.default_tokens,
            )
        except (RequestError, json.JSONDecodeError) as exc:
            self.counters.bad_requests += 1
            await _json(send, 400, wire.error(400, str(exc)), headers)
            return

        record = RequestRecord(
            request_id, wire.name, request.stream, time.monotonic(), label=reply.label
        )
        record.tokens_planned = reply.output_tokens
        self.records[request_id] = record
        while len(self.records) > self._history:
            self.records.popitem(last=False)

        fault = reply.fault
        if fault.kind == "status":
            key = hashlib.sha256(raw).hexdigest()
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            if fault.times is None or attempt < fault.times:
                self.counters.faults += 1
                record.status, record.outcome, record.ended_at = (
                    fault.status,
                    "fault",
                    time.monotonic(),
                )
                extra = (
                    [(b"retry-after", f"{fault.retry_after:g}".encode())]
                    if fault.retry_after is not None
                    else []
                )
                message = "Rate limited" if fault.status == 429 else "Overloaded"
                await _json(send, fault.status, wire.error(fault.status, message), headers + extra)
                return

        if request.stream:
            self.counters.open_streams += 1
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_disconnect, receive, record, group.cancel_scope)
                call = _Call(wire, request, reply, record, headers)
                await (self._stream if request.stream else self._complete)(call, send)
                group.cancel_scope.cancel()
        finally:
            if request.stream:
                self.counters.open_streams -= 1
            record.ended_at = time.monotonic()
            if record.outcome == "running":
                record.outcome = "disconnected" if record.disconnected_at else "completed"
            if record.outcome == "disconnected":  # what the Stop spared the provider
                spared = record.tokens_planned - record.tokens_generated
                self.counters.tokens_saved += max(0, spared)
            if record.outcome == "completed":
                self.counters.completed += 1

    async def _watch_disconnect(
        self, receive: Any, record: RequestRecord, scope: anyio.CancelScope
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if record.outcome != "running":
                    return  # uvicorn says "disconnect" once the reply is complete
                record.disconnected_at = time.monotonic()
                self.counters.disconnects += 1
                scope.cancel()
                return

    def _count(self, record: RequestRecord, tokens: int) -> None:
        now = time.monotonic()
        if record.first_token_at is None:
            record.first_token_at = now
        record.tokens_generated += tokens
        self.counters.tokens_generated += tokens
        record.add_tokens(now, tokens)
        if record.disconnected_at is not None:
            record.tokens_after_disconnect += tokens
            self.counters.tokens_after_disconnect += tokens

    def _timing(self, reply: Plan) -> tuple[float, float, int]:
        rate = reply.rate or self.config.rate
        latency = reply.first_token_latency
        if latency is None:
            latency = self.config.first_token_latency
        return rate, latency, self.config.chunk_tokens

    async def _steps(self, call: _Call, send_frames: Any) -> int:
        """Generate the reply at its rate; returns the output tokens produced."""
        wire, reply, record = call.wire, call.reply, call.record
        rate, latency, chunk = self._timing(reply)
        await anyio.sleep(latency)
        produced = 0
        fault = reply.fault

        async def tick(count: int, frames: list[bytes]) -> None:
            nonlocal produced
            # The disconnect may have been seen while this task was ready to resume:
            # produce nothing more then, not even the chunk it was about to make.
            await anyio.lowlevel.checkpoint_if_cancelled()
            if fault.kind in ("cut", "error", "end") and produced >= fault.after_tokens:
                self.counters.faults += 1
                record.outcome = "fault"
                if fault.kind == "cut":
                    raise StreamCut(f"injected: connection cut after {produced} tokens")
                # An error event, or (end) no more: the body ends before the reply does.
                await send_frames(wire.stream_error() if fault.kind == "error" else [], last=True)
                raise _Stop
            self._count(record, count)
            produced += count
            await send_frames(frames)
            await anyio.sleep(count / rate)

        tokens = reply.text_tokens
        for start in range(0, len(tokens), chunk):
            piece = tokens[start : start + chunk]
            await tick(len(piece), wire.text(piece, first=start == 0))
        if tokens:
            await send_frames(wire.text_done())
        for position, tool_call in enumerate(reply.tool_calls):
            await send_frames(wire.tool_start(position, tool_call))
            arguments = tool_call.arguments_json
            step = chunk * TOKEN_CHARS
            for start in range(0, len(arguments), step):
                json_piece = arguments[start : start + step]
                await tick(count_tokens(json_piece), wire.tool_args(position, json_piece))
            await send_frames(wire.tool_done(position))
        return produced

    async def _stream(self, call: _Call, send: Any) -> None:
        wire, request, reply, record = call.wire, call.request, call.reply, call.record
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    *call.headers,
                ],
            }
        )

        async def send_frames(frames: list[bytes], last: bool = False) -> None:
            if last and record.outcome == "running":
                record.outcome = "completed"
            if frames or last:
                await send(
                    {"type": "http.response.body", "body": b"".join(frames), "more_body": not last}
                )

        await send_frames(wire.start(reply, request))
        try:
            produced = await self._steps(call, send_frames)
        except _Stop:
            return
        await send_frames(wire.finish(reply, request, reply.stop_reason, produced), last=True)

    async def _complete(self, call: _Call, send: Any) -> None:
        wire, request, reply = call.wire, call.request, call.reply

        async def discard(frames: list[bytes], last: bool = False) -> None:
            del frames, last

        try:
            produced = await self._steps(call, discard)
        except _Stop:
            if reply.fault.kind == "end":  # a 200 whose body ends halfway through its JSON
                whole = wire.complete(reply, request, "".join(reply.text_tokens), "end_turn", 0)
                await _json(send, 200, whole, call.headers, cut=True)
                return
            await _json(send, 529, wire.error(529, "Overloaded"), call.headers)
            return
        text = "".join(reply.text_tokens)
        call.record.outcome = "completed"
        await _json(
            send,
            200,
            wire.complete(reply, request, text, reply.stop_reason, produced),
            call.headers,
        )


@dataclass
class _Call:
    """One request being answered: its protocol, what it asked, the reply, its record."""

    wire: Wire
    request: ParsedRequest
    reply: Plan
    record: RequestRecord
    headers: list[tuple[bytes, bytes]]


class _Stop(Exception):  # noqa: N818 - control flow: the reply ended early on purpose
    pass


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _json(
    send: Any,
    status: int,
    body: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    cut: bool = False,
) -> None:
    payload = json.dumps(body).encode()
    if cut:  # an injected fault: the first half only
        payload = payload[: len(payload) // 2]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
