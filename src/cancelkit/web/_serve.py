"""Running the demo service: the local model (or a real provider), SQLite, uvicorn.

On SIGTERM or Ctrl-C every active run is cancelled with kind ``shutdown`` *first*, so
its event stream ends and its staged writes are rolled back, and uvicorn's own
graceful shutdown (which waits for open connections) finishes within the grace.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from .._exceptions import CancelReason
from .._token import current_token
from ..agent import Agent, current_transaction, tool
from ..llm import AnthropicModel, Model, OpenAIModel
from ..stores import SQLiteStore
from ._app import DemoState, create_app

__all__ = ("DemoOptions", "build_agent", "serve_demo")

SYSTEM = "You are a research assistant. Use the tools, then answer."


@tool
async def search_notes(query: str) -> str:
    """Search the team's notes (an async tool: cancelled at its next await)."""
    for _ in range(20):
        await anyio.sleep(0.1)
    return f"3 notes mention {query!r}"


@tool
def crunch_numbers(n: int) -> str:
    """Crunch numbers (a sync tool in a worker thread: it checks its token)."""
    token = current_token()
    total = 0
    for step in range(n):
        token.check()  # raises Cancelled once the run is stopped
        time.sleep(0.01)
        total += step
    return f"crunched {n} numbers: {total}"


@tool
async def save_note(text: str) -> str:
    """Save a note (staged in the run's transaction: written only if the run completes)."""
    tx = current_transaction()
    if tx is not None:
        tx.insert("demo_notes", {"run_id": tx.run_id, "text": text})
    return "saved"


@dataclass
class DemoOptions:
    """How to run the demo service."""

    host: str = "127.0.0.1"
    port: int = 8000
    model_rate: float = 40.0
    provider: str = "local"  # local, anthropic, openai
    model: str | None = None
    base_url: str | None = None
    data: Path = Path(".cancelkit-demo")
    grace: float = 5.0


def _model(options: DemoOptions, local_url: str | None) -> Model:
    if options.provider == "openai":
        import openai  # noqa: PLC0415

        url = options.base_url or (local_url + "/v1" if local_url else None)
        key = os.environ.get("OPENAI_API_KEY") or "local"
        return OpenAIModel(openai.AsyncOpenAI(base_url=url, api_key=key), options.model or "local")
    import anthropic  # noqa: PLC0415

    url = options.base_url or local_url
    key = os.environ.get("ANTHROPIC_API_KEY") or "local"
    return AnthropicModel(
        anthropic.AsyncAnthropic(base_url=url, api_key=key), options.model or "local"
    )


def build_agent(model: Model, store: SQLiteStore) -> Agent:
    """The demo's agent: three tools and a research sub-agent, writing to ``store``."""
    researcher = Agent(model, tools=[search_notes], system="You research one question.")
    return Agent(
        model,
        tools=[
            search_notes,
            crunch_numbers,
            save_note,
            researcher.as_tool("researcher", "Delegate a question"),
        ],
        system=SYSTEM,
        store=store,
        max_tokens=2048,
    )


class _GracefulServer(uvicorn.Server):
    """uvicorn, but a shutdown signal first cancels every run (kind ``shutdown``)."""

    def __init__(self, config: uvicorn.Config, state: DemoState) -> None:
        super().__init__(config)
        self.demo = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:  # the first signal: cancel is safe from a handler
            reason = CancelReason("shutdown", "the server is shutting down")
            for run in self.demo.agent.runs.active:
                run.cancel(reason)
        super().handle_exit(sig, frame)


class _LocalModelProcess:
    """``cancelkit model`` in a process of its own, as a real provider is: its token
    generation never competes with the app for the interpreter."""

    def __init__(self, rate: float) -> None:
        import socket  # noqa: PLC0415
        import subprocess  # noqa: PLC0415
        import sys  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            [sys.executable, "-m", "cancelkit", "model", "--port", str(port), "--rate", str(rate)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.base_url + "/health", timeout=1).close()  # noqa: S310
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the local model server did not start") from None
                time.sleep(0.05)

    async def stats(self) -> dict[str, int]:
        import httpx2  # noqa: PLC0415 - comes with the SDKs

        async with httpx2.AsyncClient(timeout=2) as client:
            reply = await client.get(self.base_url + "/stats")
            result: dict[str, int] = reply.json()
            return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:  # noqa: BLE001 - it must go, one way or the other
                self.process.kill()
                self.process.wait()


def serve_demo(options: DemoOptions, *, with_local_model: bool) -> None:
    """Run the demo service in the foreground until SIGTERM or Ctrl-C."""
    local = _LocalModelProcess(options.model_rate) if with_local_model else None
    try:
        _serve(options, local)
    finally:
        if local is not None:
            local.stop()


def _serve(options: DemoOptions, local: _LocalModelProcess | None) -> None:
    options.data.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(options.data / "demo.db")
    model = _model(options, local.base_url if local else None)
    secret = os.environ.get("CANCELKIT_SECRET", "").encode() or os.urandom(32)
    state = DemoState(
        build_agent(model, store),
        secret,
        model_stats=local.stats if local else None,
        grace=options.grace,
    )
    app = create_app(state)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        timeout_graceful_shutdown=max(1, int(options.grace)),
    )
    server = _GracefulServer(config, state)

    async def main() -> None:
        await store.setup()
        await store.execute("CREATE TABLE IF NOT EXISTS demo_notes (run_id TEXT, text TEXT)")
        print(f"cancelkit demo: http://{options.host}:{options.port}/", flush=True)
        if local is not None:
            print(f"  local model server: {local.base_url} (rate {options.model_rate} tokens/s)")
        await server.serve()
        await store.aclose()

    asyncio.run(main())
