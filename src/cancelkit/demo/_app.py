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
import secrets
import statistics
import threading
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import CancelReason, thread_stats
from ..agent import AgentResult, AgentRun, ToolFinished
from ..llm import TextDelta, ToolCall, Usage
from ..web import CancelOnDisconnect, LimitBody
from ._page import CONTENT_SECURITY_POLICY, PAGE
from ._state import COOKIE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._state import DemoState

__all__ = ("StartRun", "create_app")

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


def _sse(event: Any) -> bytes | None:
    """One event of an agent run as Server-Sent Events (``None``: not shown)."""
    if isinstance(event, TextDelta):
        return _event("delta", {"text": event.text})
    if isinstance(event, ToolCall):
        return _event("tool_call", {"name": event.name, "arguments": event.arguments})
    if isinstance(event, ToolFinished):
        result = {"name": event.name, "content": event.content, "is_error": event.is_error}
        return _event("tool_result", result)
    if isinstance(event, Usage):
        return _event("usage", asdict(event))
    if isinstance(event, AgentResult):
        return _event("done", _describe(event))
    return None


def _without_input(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as location, message and type: never the input, nor its keys."""
    loc = [
        part if isinstance(part, int) or part in _FIELDS else "(unexpected field)"
        for part in error.get("loc", ())
    ]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


def create_app(state: DemoState) -> Any:
    """The demo ASGI app: FastAPI, in :class:`~cancelkit.web.CancelOnDisconnect` and
    :class:`~cancelkit.web.LimitBody` (``state.limits.body_bytes``)."""

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
        run.run.add_done_callback(lambda _run: state.note_end(run.id))
        return run

    def follow(
        run: AgentRun, request: Request, owner: str, *, started_here: bool, headers: dict[str, str]
    ) -> StreamingResponse:
        token = request.state.cancel_token
        if started_here:  # this request's disconnect stops the run, even before it streams
            token.on_cancel(lambda reason: state.stop(run.id, reason, owner))

        async def events() -> AsyncIterator[bytes]:
            state.followers[run.id] = state.followers.get(run.id, 0) + 1
            try:
                if started_here:
                    yield _event("run", {"id": run.id})
                async for event in run.follow():
                    data = _sse(event)
                    if data is not None:
                        yield data
            finally:
                left = state.followers[run.id] - 1
                if left:
                    state.followers[run.id] = left
                else:
                    del state.followers[run.id]
                # A follower that went away stops a run only if it was the last one of
                # a run that asked for it (one started here is stopped by on_cancel).
                if token.reason is not None and not left and run.id in state.stop_when_unwatched:
                    state.stop(run.id, token.reason, owner)

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
        owner = session(request, cookie)
        run = start(body, owner)
        headers = {"X-Run-Id": run.id}
        if "set-cookie" in cookie.headers:
            headers["Set-Cookie"] = cookie.headers["set-cookie"]
        return follow(run, request, owner, started_here=True, headers=headers)

    @app.get("/api/runs/{run_id}")
    async def run_status(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        run = state.owned(run_id, session(request, response))
        return _describe(run.result()) | {"followers": state.followers.get(run_id, 0)}

    @app.post("/api/runs/{run_id}/cancel")
    async def cancel_run(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        owner = session(request, response)
        state.owned(run_id, owner)  # 404 for an unknown id and for someone else's alike
        return {"cancelled": state.stop(run_id, STOP, owner)}

    @app.get("/api/runs/{run_id}/events")
    async def run_events(run_id: str, request: Request, response: Response) -> StreamingResponse:
        owner = session(request, response)
        run = state.owned(run_id, owner)
        return follow(run, request, owner, started_here=False, headers={})

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        return await _stats(state)

    return LimitBody(CancelOnDisconnect(app), state.limits.body_bytes)


async def _stats(state: DemoState) -> dict[str, Any]:
    """``/api/stats``: runs by status, live tasks and threads, the model, Stop latency."""
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
