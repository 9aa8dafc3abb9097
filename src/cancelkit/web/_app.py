"""The demo service: an agent behind HTTP, where Stop (or a closed tab) reaches every layer.

Routes: ``POST /api/runs`` starts an agent run for the browser session (a signed
cookie names it); ``GET /api/runs/{id}/events`` streams its events as Server-Sent
Events, and a client that goes away cancels the run with kind ``disconnect``;
``POST /api/runs/{id}/cancel`` stops it with kind ``user``, for its owner only
(anyone else gets 404, as for an unknown id); ``GET /api/runs/{id}`` gives status,
reason, usage and text; ``GET /api/stats`` the live counters; ``/`` the page.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import statistics
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from .._exceptions import CancelReason
from .._threads import thread_stats
from ..agent import Agent, AgentResult, AgentRun, ToolFinished
from ..llm import TextDelta, ToolCall, Usage
from ._middleware import CancelOnDisconnect
from ._page import PAGE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ("DemoState", "create_app")

COOKIE = "cancelkit_session"
STOP = CancelReason("user", "Stop pressed")


class StartRun(BaseModel):
    """The body of ``POST /api/runs``."""

    prompt: str = Field(min_length=1, max_length=4000, description="what to ask the agent")


@dataclass
class DemoState:
    """What the service keeps: the agent, the runs by id, and what Stop cost."""

    agent: Agent
    secret: bytes
    model_stats: Callable[[], Awaitable[dict[str, int]]] | None = None
    grace: float = 5.0
    runs: dict[str, AgentRun] = field(default_factory=dict)
    stop_latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    stopping: dict[str, float] = field(default_factory=dict)

    def sign(self, session: str) -> str:
        mac = hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{session}.{mac}"

    def session_of(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        session = cookie.rsplit(".", 1)[0]
        return session if hmac.compare_digest(self.sign(session), cookie) else None

    def remember(self, run: AgentRun, keep: int = 1000) -> None:
        """Track a new run; forget the oldest finished ones beyond ``keep``."""
        self.runs[run.id] = run
        if len(self.runs) > keep:
            for old_id in [i for i, r in self.runs.items() if r.run.done][: len(self.runs) - keep]:
                del self.runs[old_id]

    def owned(self, run_id: str, session: str) -> AgentRun:
        state = self.runs.get(run_id)
        if state is None or state.run.owner != session:
            raise HTTPException(404, "no such run")  # someone else's looks the same
        return state

    def stop(self, state: AgentRun, reason: CancelReason) -> bool:
        if state.run.cancel(reason):
            self.stopping[state.id] = time.perf_counter()
            return True
        return False

    def note_end(self, state: AgentRun) -> None:
        started = self.stopping.pop(state.id, None)
        if started is not None:
            self.stop_latencies_ms.append((time.perf_counter() - started) * 1e3)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _describe(result: AgentResult) -> dict[str, Any]:
    return {
        "id": result.run_id,
        "status": result.status,
        "reason": {"kind": result.reason.kind, "message": result.reason.message}
        if result.reason
        else None,
        "text": result.text,
        "usage": asdict(result.usage),
        "turns": result.turns,
        "tool_calls": [c.name for c in result.tool_calls],
    }


def create_app(state: DemoState) -> Any:
    """The demo ASGI app (FastAPI, wrapped in :class:`CancelOnDisconnect`)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.agent.runs.shutdown(state.grace)

    app = FastAPI(title="cancelkit demo", version="0.1.0", lifespan=lifespan)
    app.state.demo = state

    def session(request: Request, response: Response) -> str:
        found = state.session_of(request.cookies.get(COOKIE))
        if found is None:
            found = secrets.token_urlsafe(16)
            response.set_cookie(COOKIE, state.sign(found), httponly=True, samesite="strict")
        return found

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        reply = HTMLResponse(PAGE)
        session(request, reply)  # the page's first visit gets its session cookie
        return reply

    @app.post("/api/runs", status_code=201)
    async def start_run(body: StartRun, request: Request, response: Response) -> dict[str, str]:
        owner = session(request, response)
        run = state.agent.start(body.prompt, owner=owner)
        state.remember(run)
        run.run._on_settle.append(lambda _r: state.note_end(run))  # noqa: SLF001
        return {"id": run.id}

    @app.get("/api/runs/{run_id}")
    async def run_status(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        return _describe(state.owned(run_id, session(request, response)).result())

    @app.post("/api/runs/{run_id}/cancel")
    async def cancel_run(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        run = state.owned(run_id, session(request, response))
        return {"cancelled": state.stop(run, STOP)}

    @app.get("/api/runs/{run_id}/events")
    async def run_events(run_id: str, request: Request, response: Response) -> StreamingResponse:
        run = state.owned(run_id, session(request, response))
        token = request.state.cancel_token

        async def events() -> AsyncIterator[bytes]:
            try:
                async for event in run.follow():
                    if isinstance(event, TextDelta):
                        yield _event("delta", {"text": event.text})
                    elif isinstance(event, ToolCall):
                        call = {"name": event.name, "arguments": event.arguments}
                        yield _event("tool_call", call)
                    elif isinstance(event, ToolFinished):
                        yield _event("tool_result", {"name": event.name, "content": event.content})
                    elif isinstance(event, Usage):
                        yield _event("usage", asdict(event))
                    elif isinstance(event, AgentResult):
                        yield _event("done", _describe(event))
            finally:
                if token.reason is not None:  # the client went away: so does its run
                    state.stop(run, token.reason)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        latencies = list(state.stop_latencies_ms)
        statuses: dict[str, int] = {}
        for run in state.runs.values():
            statuses[run.run.status] = statuses.get(run.run.status, 0) + 1
        try:
            model = await state.model_stats() if state.model_stats else {}
        except OSError:  # the model server is down: say so, do not fail the page
            model = {}
        return {
            "runs": statuses,
            "active_runs": len(state.agent.runs),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
            "worker_threads": thread_stats(),
            "tokens_generated": model.get("tokens_generated"),
            "tokens_saved_by_stop": model.get("tokens_saved"),
            "tokens_after_disconnect": model.get("tokens_after_disconnect"),
            "stop_latency_ms": {
                "p50": statistics.median(latencies) if latencies else None,
                "max": max(latencies) if latencies else None,
                "count": len(latencies),
            },
        }

    return CancelOnDisconnect(app)
