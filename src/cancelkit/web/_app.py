"""The demo service: an agent behind HTTP, where Stop (or a closed tab) reaches every layer.

Routes:

- ``POST /api/runs`` ``{"prompt": ..., "stop_when_unwatched": false}`` starts an agent
  run for the browser session (a signed, expiring cookie names it) and returns its id;
- ``POST /api/runs/stream`` starts a run and streams its events in the response: this
  request's own disconnect cancels the run (kind ``disconnect``);
- ``GET /api/runs/{id}/events`` follows a run's events as Server-Sent Events. Following
  is passive: a follower going away does not cancel the run, unless the run was
  started with ``stop_when_unwatched`` and it was the last follower (kind
  ``disconnect``);
- ``POST /api/runs/{id}/cancel`` stops a run with kind ``user``, for its owner only
  (anyone else gets 404, as for an unknown id);
- ``GET /api/runs/{id}`` gives status, reason, usage, text and how many follow it
  now; ``GET /api/stats`` the live counters and the model server's health; ``/`` the
  page.

A hostile client gets clear answers and no more: a body over the limit is a 413 before
it is read, too many runs a 429 with ``Retry-After``, bad input a 422 that never echoes
the input back, and no run outlives its maximum duration (kind ``timeout``).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import statistics
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from itsdangerous import BadSignature, TimestampSigner
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._exceptions import CancelReason
from .._threads import thread_stats
from ..agent import Agent, AgentResult, AgentRun, ToolFinished
from ..llm import TextDelta, ToolCall, Usage
from ._middleware import CancelOnDisconnect
from ._page import CONTENT_SECURITY_POLICY, PAGE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ("MIN_SECRET_BYTES", "SESSION_SALT", "DemoState", "Limits", "StartRun", "create_app")

COOKIE = "cancelkit_session"
SESSION_SALT = "cancelkit.web.session"
MIN_SECRET_BYTES = 32
STOP = CancelReason("user", "Stop pressed")
MAX_PROMPT_CHARS = 4000

# The names a 422's ``loc`` may show: where the error is, and our own field names. Any
# other string in a location is a key the client sent, so it is not echoed back.
_KNOWN_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class StartRun(BaseModel):
    """The body of ``POST /api/runs`` and ``POST /api/runs/stream``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_CHARS, description="what to ask the agent"
    )
    stop_when_unwatched: bool = Field(
        default=False,
        description="cancel the run (kind disconnect) when its last follower of "
        "/api/runs/{id}/events goes away; by default following is passive",
    )

    @field_validator("prompt")
    @classmethod
    def _readable_text(cls, prompt: str) -> str:
        """Refuse what would only fail later, deep in a run: blank text, lone surrogates."""
        if not prompt.strip():
            raise ValueError("the prompt must not be blank")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the prompt must be valid Unicode text (no lone surrogates)") from None
        return prompt


_FIELDS = _KNOWN_LOCATIONS | frozenset(StartRun.model_fields)


@dataclass(frozen=True)
class Limits:
    """What one session, and all of them together, may ask of the demo service.

    Args:
        runs_per_session: runs one session may have active at once (then 429).
        runs: runs the service keeps active at once, all sessions together (429).
        run_seconds: a run still going after this long is cancelled (kind
            ``timeout``), whether or not anyone follows it.
        body_bytes: the largest request body read (413 beyond, before buffering).
        session_max_age: seconds a session cookie is honoured after it was issued.
        retry_after: the ``Retry-After`` seconds of a 429.

    Raises:
        ValueError: a limit that is not positive.
    """

    runs_per_session: int = 3
    runs: int = 50
    run_seconds: float = 300.0
    body_bytes: int = 64 * 1024
    session_max_age: int = 24 * 3600
    retry_after: int = 5

    def __post_init__(self) -> None:
        for name in ("runs_per_session", "runs", "body_bytes", "session_max_age", "retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if not math.isfinite(self.run_seconds) or self.run_seconds <= 0:
            raise ValueError(f"run_seconds must be positive, not {self.run_seconds!r}")


@dataclass
class DemoState:
    """What the service keeps, and the limits it enforces.

    Args:
        agent: the agent every run is started on.
        secret: signs the session cookie; at least :data:`MIN_SECRET_BYTES` bytes.
        model_stats: the model server's counters (``None`` when it cannot be reached).
        model_health: the model server's health, for ``/api/stats``: at least a
            ``status`` (``up``, ``restarting``, ``down``); ``None`` for an external one.
        grace: seconds active runs get to end when the service shuts down.
        limits: what sessions may ask of the service (:class:`Limits`).
    """

    agent: Agent
    secret: bytes
    model_stats: Callable[[], Awaitable[dict[str, int] | None]] | None = None
    model_health: Callable[[], dict[str, Any]] | None = None
    grace: float = 5.0
    limits: Limits = field(default_factory=Limits)
    runs: dict[str, AgentRun] = field(default_factory=dict)
    stop_latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    stopping: dict[str, float] = field(default_factory=dict)
    followers: dict[str, int] = field(default_factory=dict)
    stop_when_unwatched: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the session secret must be at least {MIN_SECRET_BYTES} bytes"
                f" (got {len(self.secret) if isinstance(self.secret, bytes) else 'no bytes'})"
            )
        self._signer = TimestampSigner(self.secret, salt=SESSION_SALT)

    def sign(self, session: str) -> str:
        """The cookie value for ``session``: signed, with the time it was issued."""
        return self._signer.sign(session).decode()

    def session_of(self, cookie: str | None) -> str | None:
        """The session a cookie names, if it is ours and younger than ``limits.session_max_age``."""
        if not cookie:
            return None
        try:
            return self._signer.unsign(cookie, max_age=self.limits.session_max_age).decode()
        except BadSignature:  # forged, tampered with, or expired (SignatureExpired)
            return None

    def remember(self, run: AgentRun, keep: int = 1000) -> None:
        """Track a new run; forget the oldest finished ones beyond ``keep``."""
        self.runs[run.id] = run
        if len(self.runs) > keep:
            finished = [i for i, r in self.runs.items() if r.run.done()]
            for old_id in finished[: len(self.runs) - keep]:
                del self.runs[old_id]

    def owned(self, run_id: str, session: str) -> AgentRun:
        """The session's run by id; 404 for someone else's, exactly as for an unknown id."""
        state = self.runs.get(run_id)
        if state is None or state.run.owner != session:
            raise HTTPException(404, "no such run")  # someone else's looks the same
        return state

    def admit(self, session: str) -> None:
        """Refuse a new run (429, or 503 with the model down) before any work starts."""
        health = self.model_health() if self.model_health else None
        if health is not None and health.get("status") == "down":
            raise HTTPException(503, "the model server is down; runs cannot start")
        active = [r for r in self.runs.values() if not r.run.done()]
        limits = self.limits
        retry = {"Retry-After": str(limits.retry_after)}
        if len(active) >= limits.runs:
            raise HTTPException(
                429, f"the service is running {limits.runs} runs, its limit", headers=retry
            )
        if sum(r.run.owner == session for r in active) >= limits.runs_per_session:
            raise HTTPException(
                429,
                f"at most {limits.runs_per_session} runs at once per session: "
                "stop one or wait for it to end",
                headers=retry,
            )

    def stop(self, state: AgentRun, reason: CancelReason) -> bool:
        if state.run.cancel(reason):
            self.stopping[state.id] = time.perf_counter()
            return True
        return False

    def note_end(self, state: AgentRun) -> None:
        started = self.stopping.pop(state.id, None)
        if started is not None:
            self.stop_latencies_ms.append((time.perf_counter() - started) * 1e3)
        self.stop_when_unwatched.discard(state.id)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _unreachable(error: BaseException | None) -> bool:
    """Whether a run failed because the model server could not be reached (or vanished)."""
    try:
        import httpx2  # noqa: PLC0415 - comes with the SDKs
    except ImportError:  # pragma: no cover - depends on the installation
        transport: tuple[type[BaseException], ...] = (OSError,)
    else:
        transport = (OSError, httpx2.TransportError)
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, transport):  # the SDKs' connection errors chain to these
            return True
        error = error.__cause__ or error.__context__
    return False


def _reason(result: AgentResult) -> dict[str, str] | None:
    if result.reason is None:
        return None
    message = result.reason.message
    if result.status == "failed" and _unreachable(result.error):
        message = f"the model server is unreachable ({message})"
    return {"kind": result.reason.kind, "message": message}


def _describe(result: AgentResult) -> dict[str, Any]:
    return {
        "id": result.run_id,
        "status": result.status,
        "reason": _reason(result),
        "text": result.text,
        "usage": asdict(result.usage),
        "turns": result.turns,
        "tool_calls": [c.name for c in result.tool_calls],
    }


class _LimitBody:
    """ASGI: read at most ``limit`` body bytes; answer 413 beyond, before buffering more.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a
    streamed (chunked) body is counted as it arrives and refused once it passes the
    limit. A body within the limit is handed to the app as it came.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)  # the app does not read their bodies
            return
        received: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before it finished sending: nothing to do
            received.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {"detail": f"the request body is larger than {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _without_input(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as location, message and type: never the input, nor its keys."""
    loc = [
        part if isinstance(part, int) or part in _FIELDS else "(unexpected field)"
        for part in error.get("loc", ())
    ]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


def create_app(state: DemoState) -> Any:
    """The demo ASGI app (FastAPI, in :class:`CancelOnDisconnect` and a body limit)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.agent.runs.shutdown(state.grace)

    app = FastAPI(title="cancelkit demo", version="0.1.0", lifespan=lifespan)
    app.state.demo = state

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_without_input(e) for e in error.errors()]}, 422)

    def session(request: Request, response: Response) -> str:
        found = state.session_of(request.cookies.get(COOKIE))
        if found is None:
            found = secrets.token_urlsafe(16)
            response.set_cookie(
                COOKIE,
                state.sign(found),
                max_age=state.limits.session_max_age,
                httponly=True,
                samesite="strict",
            )
        return found

    def start(body: StartRun, owner: str) -> AgentRun:
        state.admit(owner)
        run = state.agent.start(body.prompt, owner=owner, timeout=state.limits.run_seconds)
        state.remember(run)
        if body.stop_when_unwatched:
            state.stop_when_unwatched.add(run.id)
        run.run._on_settle.append(lambda _r: state.note_end(run))  # noqa: SLF001
        return run

    def follow(
        run: AgentRun, request: Request, *, started_here: bool, headers: dict[str, str]
    ) -> StreamingResponse:
        token = request.state.cancel_token
        if started_here:  # this request's disconnect stops the run, even before it streams
            token.on_cancel(lambda reason: state.stop(run, reason))

        async def events() -> AsyncIterator[bytes]:
            state.followers[run.id] = state.followers.get(run.id, 0) + 1
            try:
                if started_here:
                    yield _event("run", {"id": run.id})
                async for event in run.follow():
                    if isinstance(event, TextDelta):
                        yield _event("delta", {"text": event.text})
                    elif isinstance(event, ToolCall):
                        yield _event(
                            "tool_call", {"name": event.name, "arguments": event.arguments}
                        )
                    elif isinstance(event, ToolFinished):
                        result = {"name": event.name, "content": event.content}
                        yield _event("tool_result", result | {"is_error": event.is_error})
                    elif isinstance(event, Usage):
                        yield _event("usage", asdict(event))
                    elif isinstance(event, AgentResult):
                        yield _event("done", _describe(event))
            finally:
                left = state.followers[run.id] - 1
                if left:
                    state.followers[run.id] = left
                else:
                    del state.followers[run.id]
                # A follower that went away stops a run only if it was the last one of
                # a run that asked for it (one started here is stopped by on_cancel).
                if token.reason is not None and not left and run.id in state.stop_when_unwatched:
                    state.stop(run, token.reason)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        reply = HTMLResponse(
            PAGE,
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )
        session(request, reply)  # the page's first visit gets its session cookie
        return reply

    @app.post("/api/runs", status_code=201)
    async def start_run(body: StartRun, request: Request, response: Response) -> dict[str, str]:
        return {"id": start(body, session(request, response)).id}

    @app.post("/api/runs/stream")
    async def start_and_stream(body: StartRun, request: Request) -> StreamingResponse:
        cookie = Response()
        run = start(body, session(request, cookie))
        headers = {"X-Run-Id": run.id}
        if "set-cookie" in cookie.headers:
            headers["Set-Cookie"] = cookie.headers["set-cookie"]
        return follow(run, request, started_here=True, headers=headers)

    @app.get("/api/runs/{run_id}")
    async def run_status(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        run = state.owned(run_id, session(request, response))
        return _describe(run.result()) | {"followers": state.followers.get(run_id, 0)}

    @app.post("/api/runs/{run_id}/cancel")
    async def cancel_run(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        run = state.owned(run_id, session(request, response))
        return {"cancelled": state.stop(run, STOP)}

    @app.get("/api/runs/{run_id}/events")
    async def run_events(run_id: str, request: Request, response: Response) -> StreamingResponse:
        run = state.owned(run_id, session(request, response))
        return follow(run, request, started_here=False, headers={})

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        latencies = list(state.stop_latencies_ms)
        statuses: dict[str, int] = {}
        for run in state.runs.values():
            statuses[run.run.status] = statuses.get(run.run.status, 0) + 1
        # The model server being down is news for the page, never a failure of it.
        counters = await state.model_stats() if state.model_stats else None
        model = state.model_health() if state.model_health else {"status": "external"}
        model = model | {"reachable": counters is not None}
        counters = counters or {}
        return {
            "runs": statuses,
            "active_runs": len(state.agent.runs),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
            "worker_threads": thread_stats(),
            "model": model,
            "tokens_generated": counters.get("tokens_generated"),
            "tokens_saved_by_stop": counters.get("tokens_saved"),
            "tokens_after_disconnect": counters.get("tokens_after_disconnect"),
            "stop_latency_ms": {
                "p50": statistics.median(latencies) if latencies else None,
                "max": max(latencies) if latencies else None,
                "count": len(latencies),
            },
        }

    return _LimitBody(CancelOnDisconnect(app), state.limits.body_bytes)
