"""The naive peer of bench_web: the agent service as it is written without cancelkit.

What a competent developer writes in an afternoon, on the same stack as the demo
(FastAPI, uvicorn, the official ``anthropic`` SDK against the same model server, SQLite):
a ``dict[str, asyncio.Task]`` of runs; ``task.cancel()`` on Stop; the run's events in
an ``asyncio.Queue`` that ``GET /api/runs/{id}/events`` streams as Server-Sent Events.
The same routes as the demo's, so one load generator drives both:

- ``POST /api/runs`` ``{"prompt": ...}`` -> ``{"id": ...}`` (other fields are ignored);
- ``GET /api/runs/{id}/events``: ``delta`` events, then ``done`` ``{"status": ...}``;
- ``POST /api/runs/{id}/cancel`` -> ``{"cancelled": bool}``;
- ``GET /api/stats``: active runs and live tasks, for the bench's leftover check.

Its agent loop is the textbook one: stream a turn; if the model asked for tools, run
them (``save_note`` writes its note at once, in a thread) and stream the next turn.
Nothing here is sabotaged: Stop cancels the task, and the SDK's ``async with`` closes
the model stream on the way out. What it does not do is what nobody writes in 60
lines: stop a run whose viewer closed the tab, make the note depend on the run
completing, or say how long a Stop took.

Run: ``python bench/_naive_service.py --port P --model-url URL --data DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from cancelkit.llm.local._server import UVICORN_HTTP, exit_with_parent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

SYSTEM = "You are a research assistant. Use the tools, then answer."
TOOLS: Any = [
    {
        "name": "save_note",
        "description": "Save a note",
        "input_schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    }
]


class StartRun(BaseModel):
    """The body of ``POST /api/runs``."""

    prompt: str


def event_text(name: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def run_agent(
    client: anthropic.AsyncAnthropic,
    prompt: str,
    events: asyncio.Queue[tuple[str, dict[str, Any]]],
    save_note: Callable[[str], None],
) -> None:
    """The textbook agent loop: stream a turn, run the tools it asked for (``save_note``
    in a thread), stream the next; its events into ``events``, ``done`` last."""
    messages: list[Any] = [{"role": "user", "content": prompt}]
    status = "failed"
    try:
        for _turn in range(5):
            async with client.messages.stream(
                model="local", max_tokens=2048, system=SYSTEM, messages=messages, tools=TOOLS
            ) as stream:
                async for text in stream.text_stream:
                    events.put_nowait(("delta", {"text": text}))
                message = await stream.get_final_message()
            messages.append({"role": "assistant", "content": message.content})
            calls = [block for block in message.content if block.type == "tool_use"]
            if not calls:
                break
            results = []
            for call in calls:
                arguments: Any = call.input
                await asyncio.to_thread(save_note, str(arguments.get("text")))
                results.append({"type": "tool_result", "tool_use_id": call.id, "content": "ok"})
            messages.append({"role": "user", "content": results})
        status = "completed"
    except asyncio.CancelledError:
        status = "cancelled"
        raise
    finally:
        events.put_nowait(("done", {"status": status}))


def create_app(model_url: str, database: Path) -> FastAPI:
    """The naive service: runs as tasks in a dict, events through a queue per run."""
    app = FastAPI()
    client = anthropic.AsyncAnthropic(base_url=model_url, api_key="local")
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (run_id TEXT, text TEXT)")
        db.commit()
    runs: dict[str, asyncio.Task[None]] = {}
    queues: dict[str, asyncio.Queue[tuple[str, dict[str, Any]]]] = {}

    def save_note(run_id: str, text: str) -> None:  # a connection per call: threads
        with contextlib.closing(sqlite3.connect(database)) as db, db:
            db.execute("INSERT INTO notes VALUES (?, ?)", (run_id, text))

    @app.post("/api/runs", status_code=201)
    async def start_run(body: StartRun) -> dict[str, str]:
        run_id = uuid.uuid4().hex
        queues[run_id] = asyncio.Queue()
        note = functools.partial(save_note, run_id)
        agent = run_agent(client, body.prompt, queues[run_id], note)
        runs[run_id] = task = asyncio.create_task(agent)
        task.add_done_callback(lambda _task: runs.pop(run_id, None))
        return {"id": run_id}

    @app.get("/api/runs/{run_id}/events")
    async def run_events(run_id: str) -> StreamingResponse:
        events = queues.get(run_id)
        if events is None:
            raise HTTPException(404, "no such run")

        async def stream() -> AsyncIterator[str]:
            while True:
                name, data = await events.get()
                yield event_text(name, data)
                if name == "done":
                    queues.pop(run_id, None)
                    return

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/api/runs/{run_id}/cancel")
    async def cancel_run(run_id: str) -> dict[str, bool | float]:
        reached = time.time()  # for the bench: when the Stop reached the handler
        task = runs.get(run_id)
        if task is None or task.done():
            return {"cancelled": False, "reached": reached}
        return {"cancelled": task.cancel(), "reached": reached}

    @app.get("/api/stats")
    async def stats() -> dict[str, int]:
        return {"active_runs": len(runs), "tasks": len(asyncio.all_tasks())}

    return app


def main() -> None:
    """Serve the naive service in the foreground (the bench stops it with SIGTERM)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--exit-with-parent", type=int, default=None, metavar="PID")
    args = parser.parse_args()
    if args.exit_with_parent is not None:  # the bench's own plumbing, not the service's
        exit_with_parent(args.exit_with_parent)
    args.data.mkdir(parents=True, exist_ok=True)
    app = create_app(args.model_url, args.data / "naive.db")
    # The demo's HTTP implementation and keep-alive (cancelkit.demo._serve's
    # KEEP_ALIVE_SECONDS): the same server settings for both peers.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http=UVICORN_HTTP,
        log_level="warning",
        timeout_keep_alive=65,
    )


if __name__ == "__main__":
    main()
