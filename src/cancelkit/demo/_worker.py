"""One worker process of ``cancelkit demo --workers N`` (started by ``_workers.py``).

``python -m cancelkit.demo._worker`` is not a command of its own: its configuration
comes in one environment variable (:data:`WORKER_VARIABLE`, JSON: a
:class:`WorkerSpec`) and the session secret in ``CANCELKIT_SECRET``, never on the
command line, where ``ps`` shows it. Both are removed from the environment once
read. The worker serves the listening socket its parent passed down, with the same
app and the same graceful shutdown as the one-process demo, its runs registered in
Redis (``Runs(backend=RedisBackend(...))``, opened in the app's lifespan) and their
events written to Redis Streams (``_feeds.py``). It never outlives its parent: it
watches a pipe from it (its stdin) and, on Linux, asks the kernel for SIGTERM when
the parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from .. import Runs
from ..distributed import RedisBackend
from ..llm.local._server import UVICORN_HTTP, exit_with_parent
from ..stores import SQLiteStore
from ._agent import build_agent, setup_tables
from ._app import create_app
from ._feeds import RunFeeds
from ._model_process import ModelCounters
from ._serve import (
    KEEP_ALIVE_SECONDS,
    SECRET_VARIABLE,
    DemoOptions,
    GracefulServer,
    _secret,
    exit_status,
    model_for,
    settle_heap,
)
from ._state import DemoState, Limits

__all__ = ("STARTUP_FAILED", "WORKER_VARIABLE", "WorkerSpec", "main")

WORKER_VARIABLE = "CANCELKIT_DEMO_WORKER"
#: The exit status of a worker that could not start serving (Redis unreachable, ...).
STARTUP_FAILED = 3


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker is told by its parent.

    Attributes:
        parent: the parent's pid (the worker ends with it).
        listen_fd: the listening socket, shared by every worker.
        ready_fd: the write end of a pipe; ``ready`` is written there once serving.
        redis: the Redis URL of the shared registry.
        prefix: its key prefix.
        model_url: the local model server's URL (run by the parent), if any.
        options: the demo's options (``secret`` is never part of them here).
    """

    parent: int
    listen_fd: int
    ready_fd: int
    redis: str
    prefix: str
    model_url: str | None
    options: DemoOptions

    def dumps(self) -> str:
        """The spec as the value of :data:`WORKER_VARIABLE`."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        options = dataclasses.asdict(self.options) | {"data": str(self.options.data)}
        options["secret"] = None  # the secret travels in its own variable
        return json.dumps(fields | {"options": options})

    @classmethod
    def loads(cls, text: str) -> WorkerSpec:
        """The spec from the value of :data:`WORKER_VARIABLE`."""
        fields: dict[str, Any] = json.loads(text)
        options = fields.pop("options")
        options["data"] = Path(options["data"])
        options["limits"] = Limits(**options["limits"])
        return cls(**fields, options=DemoOptions(**options))


class _ModelPeer:
    """The local model server, as a worker sees it: its parent runs and restarts it."""

    def __init__(self, base_url: str) -> None:
        self.counters = ModelCounters(base_url)
        self.reachable = True

    async def stats(self) -> dict[str, int] | None:
        found = await self.counters.read()
        self.reachable = found is not None
        return found

    def health(self) -> dict[str, Any]:
        return {"status": "up" if self.reachable else "unreachable", "run_by": "the parent"}


def main() -> int:
    """Serve as one worker; the exit status as the one-process demo's (or
    :data:`STARTUP_FAILED`)."""
    spec = WorkerSpec.loads(os.environ.pop(WORKER_VARIABLE))
    # Ended with the parent, whatever ends it; a hard exit if the graceful one stalls.
    exit_with_parent(spec.parent, grace=spec.options.grace + 15)
    secret = _secret(DemoOptions())
    os.environ.pop(SECRET_VARIABLE, None)
    if secret is None:
        print(f"cancelkit demo worker: no {SECRET_VARIABLE} from the parent", file=sys.stderr)
        return STARTUP_FAILED
    started, signals = asyncio.run(_serve(spec, secret))
    if not started:
        return STARTUP_FAILED
    return exit_status(signals)


async def _serve(spec: WorkerSpec, secret: bytes) -> tuple[bool, list[int]]:
    options = spec.options
    backend = RedisBackend(spec.redis, prefix=spec.prefix)
    store = SQLiteStore(options.data / "demo.db")
    model = _ModelPeer(spec.model_url) if spec.model_url else None
    agent = build_agent(model_for(options, spec.model_url), store, Runs(backend=backend))
    state = DemoState(
        agent,
        secret,
        model_stats=model.stats if model else None,
        model_health=model.health if model else None,
        grace=options.grace,
        limits=options.limits,
        worker=backend.worker,
        feeds=RunFeeds(backend, live=options.limits.run_seconds + 3600),
    )
    config = uvicorn.Config(
        create_app(state),
        http=UVICORN_HTTP,
        lifespan="on",  # the shared registry opens there: a worker without it must not serve
        log_level="warning",
        timeout_graceful_shutdown=max(1, int(options.grace)),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = _WorkerServer(config, state, spec.ready_fd)
    listening = socket.socket(fileno=spec.listen_fd)
    try:
        await setup_tables(agent, store)
        settle_heap()
        await server.serve(sockets=[listening])
        return server.started, server.signals
    finally:
        server.tell_parent(b"")  # if it never served: the parent reads EOF
        listening.close()
        if model is not None:
            await model.counters.aclose()
        await store.aclose()


class _WorkerServer(GracefulServer):
    """The demo's graceful server, telling the parent once it serves: ``ready`` on the
    pipe ``ready_fd``, closed either way."""

    def __init__(self, config: uvicorn.Config, state: DemoState, ready_fd: int) -> None:
        super().__init__(config, state, on_exit=None)
        self.ready_fd: int | None = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.tell_parent(b"ready\n")

    def tell_parent(self, message: bytes) -> None:
        """Write ``message`` to the parent's pipe (once), then close it."""
        fd, self.ready_fd = self.ready_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):  # a parent that stopped listening: no matter
                os.write(fd, message)
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
