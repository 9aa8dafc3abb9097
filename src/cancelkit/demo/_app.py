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
- ``GET /api/runs/{id}`` gives status, reason, usage, text, how many follow it now
  and, once it has ended, its Stop receipt (``receipt``: what stopped, and when, layer
  by layer; ``null`` while it runs; the ``done`` event carries the same);
  ``GET /api/stats`` the live counters and the model server's health; ``/`` the page.

A hostile client gets clear answers and no more: a body over the limit is a 413 before
it is read, too many runs a 429 with ``Retry-After``, bad input a 422 that never echoes
the input back, and no run outlives its maximum duration (kind ``timeout``).

With several workers (``--workers N``) each request may land on any of them, and every
route works on any: a run held elsewhere is found through the shared registry
(``runs.find``), stopped through it (``runs.stop``), and followed and described from
its event stream in Redis (``_feeds.py``). If Redis cannot be reached, a Stop or a
status of a run of another worker is a 503 saying so, never a silent 404 or 200. Every
response names the worker that answered in ``X-Cancelkit-Worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import statistics
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import BackendUnavailable, CancelReason, thread_stats
from ..agent import AgentRun
from ..web import CancelOnDisconnect, LimitBody, StopRoute
from ._events import Event, batches, describe, sse, summarize
from ._page import CONTENT_SECURITY_POLICY, PAGE
from ._state import COOKIE

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, MutableMapping

    from .. import RunInfo
    from ._state import DemoState

__all__ = ("StartRun", "WorkerHeader", "create_app")

logger = logging.getLogger("cancelkit.demo")

STOP = CancelReason("user", "Stop pressed")
STOP_PATH = "/api/runs/{run_id}/cancel"  # answered by StopRoute when the run is here
NOT_SHARED = CancelReason("error", "the run could not be shared with the other workers")
UNAVAILABLE = (
    "the workers' shared registry (Redis) cannot be reached; the run may be on another"
    " worker: try again shortly"
)
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


def _without_input(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as location, message and type: never the input, nor its keys."""
    loc = [
        part if isinstance(part, int) or part in _FIELDS else "(unexpected field)"
        for part in error.get("loc", ())
    ]
    return {"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}


def create_app(state: DemoState) -> Any:
    """The demo ASGI app: FastAPI, in :class:`~cancelkit.web.CancelOnDisconnect` and
    :class:`~cancelkit.web.LimitBody` (``state.limits.body_bytes``); every response
    names this worker in ``X-Cancelkit-Worker``.

    With ``state.feeds`` (several workers) the registry's backend is opened in the
    app's lifespan (``async with runs:``), then the feeds; both close after the runs
    have been shut down, so each run's last events are written first.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if state.feeds is not None:
                await stack.enter_async_context(state.agent.runs)
                await stack.enter_async_context(state.feeds)
            yield
            await state.agent.runs.shutdown(state.grace)

    app = FastAPI(title="cancelkit demo", version="0.1.0", lifespan=lifespan)
    app.state.demo = state

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_without_input(e) for e in error.errors()]}, 422)

    @app.exception_handler(BackendUnavailable)
    async def unavailable(_request: Request, error: Exception) -> JSONResponse:
        logger.warning("cancelkit demo: %s", error)
        return JSONResponse(
            {"detail": UNAVAILABLE}, 503, headers={"Retry-After": str(state.limits.retry_after)}
        )

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

    async def start(body: StartRun, owner: str) -> AgentRun:
        state.admit(owner)
        run = state.agent.start(body.prompt, owner=owner, timeout=state.limits.run_seconds)
        state.remember(run)
        run.run.add_done_callback(lambda _run: state.note_end(run.id))
        try:
            if state.feeds is not None:
                state.feeds.record(run)
                await _shared(run)
            if body.stop_when_unwatched:
                await state.ask_stop_when_unwatched(run.id)
        except BackendUnavailable:
            run.run.cancel(NOT_SHARED)
            raise
        return run

    async def find(run_id: str, owner: str) -> AgentRun | RunInfo:
        """The session's run: here, else wherever the registry says (404 alike for
        an unknown id and someone else's)."""
        here = state.local(run_id, owner)
        if here is not None:
            return here
        if state.feeds is not None:
            found = await state.agent.runs.find(run_id, owner=owner)
            if found is not None:
                return found
        raise HTTPException(404, "no such run")  # someone else's looks the same

    def follow(
        run_id: str,
        source: AsyncGenerator[list[Event], None],
        request: Request,
        owner: str,
        *,
        started_here: bool,
        headers: dict[str, str],
    ) -> StreamingResponse:
        token = request.state.cancel_token
        if started_here:  # this request's disconnect stops the run, even before it streams
            token.on_cancel(lambda reason: state.stop(run_id, reason, owner))

        async def events() -> AsyncIterator[bytes]:
            counted = await state.joined(run_id)
            try:
                if started_here:
                    yield sse("run", {"id": run_id})
                async with contextlib.aclosing(source) as sent:
                    async for batch in sent:  # one write for what is ready
                        yield b"".join([sse(name, data) for name, data in batch])
            except BackendUnavailable as exc:  # following a run of another worker
                logger.warning("cancelkit demo: following %s: %s", run_id, exc)
                yield sse("error", {"message": UNAVAILABLE})
            finally:
                left, asked = await state.left(run_id, counted=counted)
                # A follower that went away stops a run only if it was the last one of
                # a run that asked for it (one started here is stopped by on_cancel).
                if token.reason is not None and not left and asked:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(state.grace):
                        try:
                            await state.stop_anywhere(run_id, token.reason, owner)
                        except BackendUnavailable as exc:
                            logger.warning("cancelkit demo: could not stop %s: %s", run_id, exc)

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
        return {"id": (await start(body, session(request, response))).id}

    @app.post("/api/runs/stream")
    async def start_and_stream(body: StartRun, request: Request) -> StreamingResponse:
        cookie = Response()
        owner = session(request, cookie)
        run = await start(body, owner)
        headers = {"X-Run-Id": run.id}
        if "set-cookie" in cookie.headers:
            headers["Set-Cookie"] = cookie.headers["set-cookie"]
        return follow(run.id, batches(run), request, owner, started_here=True, headers=headers)

    @app.get("/api/runs/{run_id}")
    async def run_status(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        found = await find(run_id, session(request, response))
        if isinstance(found, AgentRun):
            answer = describe(found.result())
        else:  # held by another worker: the registry's record, and the run's stream
            assert state.feeds is not None
            answer = summarize(found, await state.feeds.events(run_id))
        return answer | {"followers": await state.followers_of(run_id)}

    def stop_here(run_id: str, scope: MutableMapping[str, Any]) -> bool | None:
        """A Stop of a run this process holds, answered before FastAPI (StopRoute);
        ``None`` leaves the rest to the route: no session, an unknown id or someone
        else's (404), a run of another worker."""
        owner = state.session_of(Request(scope).cookies.get(COOKIE))
        if owner is None or state.local(run_id, owner) is None:
            return None
        return state.stop(run_id, STOP, owner)

    @app.post(STOP_PATH)
    async def cancel_run(run_id: str, request: Request, response: Response) -> dict[str, Any]:
        owner = session(request, response)
        found = await find(run_id, owner)  # 404 for an unknown id and for someone else's alike
        if isinstance(found, AgentRun):
            return {"cancelled": state.stop(run_id, STOP, owner)}
        return {"cancelled": await state.agent.runs.stop(run_id, STOP, owner=owner)}

    @app.get("/api/runs/{run_id}/events")
    async def run_events(run_id: str, request: Request, response: Response) -> StreamingResponse:
        owner = session(request, response)
        found = await find(run_id, owner)
        if isinstance(found, AgentRun):
            source = batches(found)
        else:
            assert state.feeds is not None
            source = state.feeds.follow(
                run_id, lambda: state.agent.runs.find(run_id, owner=owner), state.closing
            )
        return follow(run_id, source, request, owner, started_here=False, headers={})

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        return await _stats(state)

    guarded = LimitBody(CancelOnDisconnect(app), state.limits.body_bytes)
    return WorkerHeader(StopRoute(guarded, STOP_PATH, stop_here), state.worker)


async def _shared(run: AgentRun) -> None:
    """Wait until the run's id is in the shared registry (the run's first step), so
    that any worker finds it as soon as its id is known.

    Raises:
        BackendUnavailable: the run could not be registered (Redis is down).
    """
    if not await run.run.claimed():
        outcome = run.run.outcome
        if outcome is not None and isinstance(outcome.error, BackendUnavailable):
            raise BackendUnavailable(str(outcome.error)) from outcome.error


class WorkerHeader:
    """ASGI middleware: every HTTP response says which worker answered
    (``X-Cancelkit-Worker``), for tests and curious users."""

    def __init__(self, app: Any, worker: str) -> None:
        self.app = app
        self.header = (b"x-cancelkit-worker", worker.encode("ascii", "replace"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = message | {"headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, named)


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
        "worker": state.worker,
        "model": model,
        "tokens_generated": counters.get("tokens_generated"),
        "tokens_saved_by_stop": counters.get("tokens_saved"),
        "tokens_after_disconnect": counters.get("tokens_after_disconnect"),
        "stop_latency_ms": _latency_summary(latencies),
    }


def _latency_summary(latencies: list[float]) -> dict[str, float | int | None]:
    """p50, p99 (nearest rank: a value that was measured) and max of the recent Stops."""
    ranked = sorted(latencies)
    if not ranked:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    p99 = ranked[max(0, math.ceil(0.99 * len(ranked)) - 1)]
    return {"p50": statistics.median(ranked), "p99": p99, "max": ranked[-1], "count": len(ranked)}
