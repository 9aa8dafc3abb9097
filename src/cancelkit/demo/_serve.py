"""Running the demo service: the local model (or a real provider), SQLite, uvicorn.

On SIGTERM or Ctrl-C every active run is cancelled with kind ``shutdown`` *first*, so
its event stream ends and its staged writes are rolled back, and uvicorn's own
graceful shutdown (which waits for open connections) finishes within the grace. Then
the local model process is stopped (see ``_model_process.py``) and the store closed,
and only then is SIGTERM re-raised (so the exit status still says "terminated by
SIGTERM").

This is the one-process service (the default). With ``--workers N`` (N > 1) or
``--redis URL`` the same pieces run in N worker processes under a parent that owns
the model and Redis: see ``_workers.py`` (the parent) and ``_worker.py`` (one worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.server import HANDLED_SIGNALS

from .. import CancelReason
from ..llm import AnthropicModel, Model, OpenAIModel
from ..llm._network import asyncio_transport
from ..llm.local._server import UVICORN_HTTP
from ..stores import SQLiteStore
from ._agent import build_agent, setup_tables
from ._app import create_app
from ._model_process import LocalModelProcess
from ._state import MIN_SECRET_BYTES, DemoState, Limits

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = (
    "API_KEY_VARIABLES",
    "SECRET_VARIABLE",
    "DemoConfigError",
    "DemoOptions",
    "GracefulServer",
    "exit_status",
    "model_for",
    "serve_demo",
    "settle_heap",
)

API_KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
SECRET_VARIABLE = "CANCELKIT_SECRET"  # noqa: S105 - the name of a variable
KEEP_ALIVE_SECONDS = 65
"""How long an idle client connection is kept (uvicorn's default is 5 s). The page
polls ``/api/stats`` every second on a connection of its own beside the event
stream, and its Stop goes out on that one, already open: no new connection (on a
real network a TCP and TLS handshake, one to three round trips) before a Stop can
arrive. Above the 60 s idle timeout of the usual load balancers, so that they, not
the service, close an idle connection."""


@dataclass
class DemoOptions:
    """How to run the demo service (see ``cancelkit demo --help``).

    ``secret`` signs the session cookies; ``None`` reads ``CANCELKIT_SECRET``, and
    without either a random secret is made for this process (sessions then end when
    it does). ``limits`` are what sessions may ask of one worker
    (:class:`~cancelkit.demo._state.Limits`). ``workers`` processes serve the same
    port; with more than one, or with ``redis`` (a URL), they share their runs
    through Redis (without ``redis``, a private ``redis-server`` is started).
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
    workers: int = 1
    redis: str | None = None


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


def model_for(options: DemoOptions, local_url: str | None) -> Model:
    """The model client: the provider's SDK, on ``local_url`` for the local model.

    Its connection pool reads asyncio's sockets without churn
    (:func:`~cancelkit.llm._network.asyncio_transport`), and keeps a connection per
    call the service may have in flight (a run and its sub-agent's), so that a
    connection given back after a reply serves the next call instead of being closed:
    the SDKs keep 100, fewer than a busy demo uses.
    """
    import httpx2  # noqa: PLC0415 - comes with the SDKs

    key = _api_key(options)
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=2 * options.limits.runs)
    transport = asyncio_transport(limits)
    if options.provider == "openai":
        import openai  # noqa: PLC0415

        url = options.base_url or (local_url + "/v1" if local_url else None)
        client = openai.AsyncOpenAI(
            base_url=url,
            api_key=key,
            http_client=openai.DefaultAsyncHttpxClient(transport=transport),
        )
        return OpenAIModel(client, options.model or "local")
    import anthropic  # noqa: PLC0415

    url = options.base_url or local_url
    return AnthropicModel(
        anthropic.AsyncAnthropic(
            base_url=url,
            api_key=key,
            http_client=anthropic.DefaultAsyncHttpxClient(transport=transport),
        ),
        options.model or "local",
    )


def settle_heap() -> None:
    """Tune the garbage collector for serving, once the service is ready to serve.

    What starting made (modules, the SDKs' types, the app) is set aside for good
    (``gc.freeze()``): the full passes would otherwise walk those hundreds of thousands
    of objects again and again, each stopping every stream for tens of ms. And the
    young generation is collected every 10,000 net allocations rather than 700: a
    streamed token allocates dozens of short-lived objects, and collecting as often as
    the default does cost the service about a fifth of its CPU under load (measured
    with ``bench/bench_web.py``), twice what it costs with this threshold.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


class GracefulServer(uvicorn.Server):
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
            self.demo.closing.cancel(reason)  # followers of other workers' runs end too
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


def serve_demo(options: DemoOptions, *, with_local_model: bool) -> int:
    """Run the demo service in the foreground until SIGTERM or Ctrl-C.

    Returns:
        The exit status: 0, or 130 after Ctrl-C (SIGINT). After SIGTERM the signal
        is re-raised once everything is stopped, so the process ends by it.

    Raises:
        DemoConfigError: the options cannot work (a provider without its key, a
            session secret too short, several workers and no Redis); raised before
            anything is started.
    """
    secret = _secret(options)
    _api_key(options)
    if options.workers > 1 or options.redis is not None:
        from ._workers import serve_workers  # noqa: PLC0415 - a cycle otherwise

        return serve_workers(options, with_local_model=with_local_model)
    return exit_status(asyncio.run(_main(options, with_local_model, secret)))


def exit_status(signals: list[int]) -> int:
    """0, or 130 after Ctrl-C (SIGINT); after SIGTERM the signal is re-raised, so the
    process ends by it (call this once everything is stopped)."""
    if signal.SIGTERM in signals:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    return 130 if signal.SIGINT in signals else 0


async def _main(options: DemoOptions, with_local_model: bool, secret: bytes | None) -> list[int]:
    options.data.mkdir(parents=True, exist_ok=True)
    local = LocalModelProcess(options.model_rate, restarts=options.model_restarts)
    supervisor: asyncio.Task[None] | None = None
    store = SQLiteStore(options.data / "demo.db")
    try:
        if with_local_model:
            await local.start()
            supervisor = asyncio.create_task(local.supervise())
        agent = build_agent(model_for(options, local.base_url if with_local_model else None), store)
        state = DemoState(
            agent,
            secret or os.urandom(MIN_SECRET_BYTES),
            model_stats=local.stats if with_local_model else None,
            model_health=local.health if with_local_model else None,
            grace=options.grace,
            limits=options.limits,
        )
        config = uvicorn.Config(
            create_app(state),
            http=UVICORN_HTTP,
            host=options.host,
            port=options.port,
            log_level="warning",
            timeout_graceful_shutdown=max(1, int(options.grace)),
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        server = GracefulServer(
            config, state, on_exit=local.shutting_down if with_local_model else None
        )
        await setup_tables(agent, store)
        settle_heap()
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
