"""Running the local model server: in a background thread, or in the foreground.

The thread form serves tests, benchmarks and the demo: it runs uvicorn on its own
asyncio loop, on a socket bound before start (so port 0 picks a free port and the
URL is known at once), and works the same whatever loop the caller runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from ._app import LocalModelApp, LocalModelConfig, StreamCut

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("LocalModelServer", "serve")


class _DropInjectedCuts(logging.Filter):
    """uvicorn logs an app exception as an error; an injected cut is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        return not isinstance(error, StreamCut)


logging.getLogger("uvicorn.error").addFilter(_DropInjectedCuts())


def _config(app: LocalModelApp, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


class LocalModelServer:
    """The local model server in a background thread.

    Usage::

        with LocalModelServer(LocalModelConfig(rate=200)) as server:
            client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="local")
            ...
            server.app.stats()["tokens_after_disconnect"]

    Args:
        config: how the model behaves.
        host: the address to bind (loopback by default).
        port: the port; 0 picks a free one.
    """

    def __init__(
        self, config: LocalModelConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = LocalModelApp(config)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port``: what the SDKs take as ``base_url``."""
        return f"http://{self._host}:{self._port}"

    def start(self) -> None:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(1024)
        self._port = sock.getsockname()[1]
        self._server = server = uvicorn.Server(_config(self.app, "warning"))
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="cancelkit-local-model",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local model server did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(config: LocalModelConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve in the foreground until interrupted (the ``cancelkit model`` command)."""
    config_ = _config(LocalModelApp(config), "info")
    config_.host, config_.port = host, port
    uvicorn.Server(config_).run()
