"""Running the demo service: the local model (or a real provider), SQLite, uvicorn.

On SIGTERM or Ctrl-C every active run is cancelled with kind ``shutdown`` *first*, so
its event stream ends and its staged writes are rolled back, and uvicorn's own
graceful shutdown (which waits for open connections) finishes within the grace. Then
the local model process is stopped and the store closed, and only then is SIGTERM
re-raised (so the exit status still says "terminated by SIGTERM").

The local model process never outlives the demo, whatever ends it (SIGKILL
included): it watches a pipe from the demo and, on Linux, asks the kernel for a
signal when its parent dies (see :func:`cancelkit.llm.local._server.exit_with_parent`). If
it dies while the demo runs, runs that were using it fail with a clear reason,
``/api/stats`` says so, and it is restarted (a bounded number of times; after that
the service reports it down and refuses new runs with 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from uvicorn.server import HANDLED_SIGNALS

from .._exceptions import CancelReason
from .._token import current_token
from ..agent import Agent, current_transaction, tool
from ..llm import AnthropicModel, Model, OpenAIModel
from ..stores import SQLiteStore
from ._app import MIN_SECRET_BYTES, DemoState, Limits, create_app

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ("API_KEY_VARIABLES", "DemoConfigError", "DemoOptions", "build_agent", "serve_demo")

SYSTEM = "You are a research assistant. Use the tools, then answer."
API_KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
SECRET_VARIABLE = "CANCELKIT_SECRET"  # noqa: S105 - the name of a variable

logger = logging.getLogger("cancelkit.demo")


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
    """How to run the demo service (see ``cancelkit demo --help``).

    ``secret`` signs the session cookies; ``None`` reads ``CANCELKIT_SECRET``, and
    without either a random secret is made for this process (sessions then end when
    it does). ``limits`` are what sessions may ask (:class:`~cancelkit.web._app.Limits`).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model_rate: float = 40.0
    provider: str = "local"  # local, anthropic, openai
    model: str | None = None
    base_url: str | None = None
    data: Path = Path(".cancelkit-demo")
    grace: float = 5.0
    secret: str | None = None
    limits: Limits = field(default_factory=Limits)
    model_restarts: int = 3


class DemoConfigError(ValueError):
    """The demo's options cannot work; the message says which, and what to do."""


def _secret(options: DemoOptions) -> bytes | None:
    """The configured session secret (``None``: make a random one), at least 32 bytes."""
    given = options.secret if options.secret is not None else os.environ.get(SECRET_VARIABLE)
    if given is None or (options.secret is None and not given):
        return None
    raw = given.encode()
    if len(raw) < MIN_SECRET_BYTES:
        raise DemoConfigError(
            f"the session secret (--secret or {SECRET_VARIABLE}) must be at least"
            f" {MIN_SECRET_BYTES} bytes, not {len(raw)}; make one with:"
            " python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return raw


def _api_key(options: DemoOptions) -> str:
    """The provider's key from its variable; refuse to start without one."""
    if options.provider == "local":
        return "local"  # the local model server takes any key
    variable = API_KEY_VARIABLES.get(options.provider)
    if variable is None:
        raise DemoConfigError(f"unknown provider {options.provider!r}: local, anthropic, openai")
    key = os.environ.get(variable, "").strip()
    if key:
        return key
    if options.base_url:
        return "none"  # a server of one's own at --base-url (say, cancelkit model)
    raise DemoConfigError(
        f"--provider {options.provider} needs an API key: set {variable} in the environment"
        " (or give --base-url of a server that needs none)"
    )


def _model(options: DemoOptions, local_url: str | None) -> Model:
    key = _api_key(options)
    if options.provider == "openai":
        import openai  # noqa: PLC0415

        url = options.base_url or (local_url + "/v1" if local_url else None)
        return OpenAIModel(openai.AsyncOpenAI(base_url=url, api_key=key), options.model or "local")
    import anthropic  # noqa: PLC0415

    url = options.base_url or local_url
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
    """uvicorn, but a shutdown signal first cancels every run (kind ``shutdown``), and
    the signal is re-raised by :func:`serve_demo` after cleanup, not by uvicorn before."""

    def __init__(
        self, config: uvicorn.Config, state: DemoState, *, on_exit: Callable[[], None] | None
    ) -> None:
        super().__init__(config)
        self.demo = state
        self.on_exit = on_exit
        self.signals: list[int] = []

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.signals.append(sig)
        if not self.should_exit:  # the first signal: cancel is safe from a handler
            if self.on_exit is not None:
                self.on_exit()
            reason = CancelReason("shutdown", "the server is shutting down")
            for run in self.demo.agent.runs.active:
                run.cancel(reason)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, except that it does not re-raise the signal when serving ends:
        uvicorn would, and the default action would end the process before the model
        process is stopped and the store closed."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _LocalModelProcess:
    """``cancelkit model`` in a process of its own, as a real provider is: its token
    generation never competes with the app for the interpreter.

    The process is tied to this one (``--exit-with-parent``: a stdin pipe it watches
    for EOF, and on Linux a parent-death signal), so it never outlives the demo. It is
    started from the event loop's thread, the main thread: the parent-death signal
    fires when the *thread* that started the child ends. :meth:`supervise` restarts it
    on the same port when it dies, at most ``restarts`` times.
    """

    def __init__(self, rate: float, *, restarts: int = 3) -> None:
        self.rate = rate
        self.max_restarts = restarts
        self.restarts = 0
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.status = "starting"
        self.last_exit: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start the process and wait until it serves (``RuntimeError`` if it does not)."""
        if not await self._launch():
            self.status = "down"
            raise RuntimeError("the local model server did not start")
        self.status = "up"

    async def _launch(self) -> bool:
        import httpx2  # noqa: PLC0415 - comes with the SDKs

        process = self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cancelkit",
            "model",
            "--port",
            str(self.port),
            "--rate",
            str(self.rate),
            "--exit-with-parent",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,  # the watchdog pipe: EOF when we are gone
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        async with httpx2.AsyncClient(timeout=1) as client:
            while process.returncode is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx2.HTTPError):
                    if (await client.get(self.base_url + "/health")).status_code == 200:
                        return True
                await asyncio.sleep(0.05)
        await self._end(process)
        return False

    async def supervise(self) -> None:
        """Wait for the process to die; restart it (bounded), or report it down."""
        while self.process is not None:
            self.last_exit = await self.process.wait()
            if self._stopping:
                return
            self.status = "restarting"
            logger.warning("the local model server exited (%s); restarting it", self.last_exit)
            while True:
                if self.restarts >= self.max_restarts:
                    self.status = "down"
                    logger.error(
                        "the local model server is down (restarted %s times)", self.restarts
                    )
                    return
                self.restarts += 1
                await asyncio.sleep(min(0.25 * 2 ** (self.restarts - 1), 5.0))
                if await self._launch():
                    self.status = "up"
                    break

    def health(self) -> dict[str, Any]:
        """For ``/api/stats``: ``status`` (up, restarting, down), restarts, last exit code."""
        return {"status": self.status, "restarts": self.restarts, "last_exit": self.last_exit}

    async def stats(self) -> dict[str, int] | None:
        """The model server's counters, or ``None`` if it cannot be reached."""
        import httpx2  # noqa: PLC0415 - comes with the SDKs

        try:
            async with httpx2.AsyncClient(timeout=2) as client:
                reply = await client.get(self.base_url + "/stats")
                reply.raise_for_status()
                result: dict[str, int] = reply.json()
                return result
        except (httpx2.HTTPError, OSError, ValueError):
            return None

    def shutting_down(self) -> None:
        """The demo is stopping: the process ending from now on is no cause to restart it
        (Ctrl-C in a terminal reaches it too). Safe from a signal handler."""
        self._stopping = True

    async def stop(self) -> None:
        """Stop the process for good (no restart): SIGTERM, then SIGKILL after 5 s."""
        self._stopping = True
        if self.process is not None:
            await self._end(self.process)

    async def _end(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.stdin is not None:
            process.stdin.close()


def serve_demo(options: DemoOptions, *, with_local_model: bool) -> int:
    """Run the demo service in the foreground until SIGTERM or Ctrl-C.

    Returns:
        The exit status: 0, or 130 after Ctrl-C (SIGINT). After SIGTERM the signal
        is re-raised once everything is stopped, so the process ends by it.

    Raises:
        DemoConfigError: the options cannot work (a provider without its key, a
            session secret too short); raised before anything is started.
    """
    secret = _secret(options)
    _api_key(options)
    signals = asyncio.run(_main(options, with_local_model, secret))
    if signal.SIGTERM in signals:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    return 130 if signal.SIGINT in signals else 0


async def _main(options: DemoOptions, with_local_model: bool, secret: bytes | None) -> list[int]:
    options.data.mkdir(parents=True, exist_ok=True)
    local = _LocalModelProcess(options.model_rate, restarts=options.model_restarts)
    supervisor: asyncio.Task[None] | None = None
    store = SQLiteStore(options.data / "demo.db")
    try:
        if with_local_model:
            await local.start()
            supervisor = asyncio.create_task(local.supervise())
        state = DemoState(
            build_agent(_model(options, local.base_url if with_local_model else None), store),
            secret or os.urandom(MIN_SECRET_BYTES),
            model_stats=local.stats if with_local_model else None,
            model_health=local.health if with_local_model else None,
            grace=options.grace,
            limits=options.limits,
        )
        config = uvicorn.Config(
            create_app(state),
            host=options.host,
            port=options.port,
            log_level="warning",
            timeout_graceful_shutdown=max(1, int(options.grace)),
        )
        server = _GracefulServer(
            config, state, on_exit=local.shutting_down if with_local_model else None
        )
        await store.setup()
        await store.execute("CREATE TABLE IF NOT EXISTS demo_notes (run_id TEXT, text TEXT)")
        print(f"cancelkit demo: http://{options.host}:{options.port}/", flush=True)
        if with_local_model:
            print(f"  local model server: {local.base_url} (rate {options.model_rate} tokens/s)")
        if secret is None:
            print(f"  sessions: a random secret for this process ({SECRET_VARIABLE} keeps them)")
        await server.serve()
        return server.signals
    finally:
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await local.stop()
        await store.aclose()
