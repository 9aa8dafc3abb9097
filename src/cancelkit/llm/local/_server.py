"""Running the local model server: in a background thread, or in the foreground.

The thread form serves tests, benchmarks and the demo: it runs uvicorn on its own
asyncio loop, on a socket bound before start (so port 0 picks a free port and the
URL is known at once), and works the same whatever loop the caller runs.

The foreground form (``cancelkit model``) can be tied to the process that started it
(:func:`exit_with_parent`), so that it never outlives it, however that process ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time

import uvicorn

from ..._lifetime import StoppedWithItsBlock, set_parent_death_signal
from ._app import LocalModelApp, LocalModelConfig, StreamCut

__all__ = ("LocalModelServer", "exit_with_parent", "serve")


class _DropInjectedCuts(logging.Filter):
    """uvicorn logs an app exception as an error; an injected cut is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        return not isinstance(error, StreamCut)


logging.getLogger("uvicorn.error").addFilter(_DropInjectedCuts())


#: The HTTP implementation of every server cancelkit starts (the model server, the
#: demo): uvicorn's h11, whatever else is installed. With httptools (which uvicorn
#: picks when it can), a client that closes its connection with a second request
#: pipelined behind a streaming one is never reported to the app (uvicorn 0.55: the
#: disconnect goes to the queued request), so its run would not be stopped.
UVICORN_HTTP = "h11"


def _config(app: LocalModelApp, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=UVICORN_HTTP,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


class LocalModelServer(StoppedWithItsBlock):
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
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port``: what the SDKs take as ``base_url``."""
        return f"http://{self._host}:{self._port}"

    def start(self) -> None:
        """Start serving; returns once the server accepts connections (at once if it
        is serving already). A start that fails leaves nothing behind: no thread, no
        socket (a later ``start()`` begins again).

        Raises:
            OSError: the address could not be bound (a port in use).
            RuntimeError: the server did not start within 10 s, or its thread ended.
        """
        thread, server = self._thread, self._server
        if thread is not None and thread.is_alive() and server is not None and server.started:
            return
        self.stop()  # what a server that ended on its own left
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(1024)
        except BaseException:  # a port in use: the socket is not left to the collector
            sock.close()
            raise
        self._sock = sock
        self._port = sock.getsockname()[1]
        try:
            self._server = server = uvicorn.Server(_config(self.app, "warning"))
            thread = threading.Thread(
                target=lambda: asyncio.run(server.serve(sockets=[sock])),
                name="cancelkit-local-model",
                daemon=True,
            )
            thread.start()
            self._thread = thread
            deadline = time.monotonic() + 10
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the local model server did not start")
                time.sleep(0.005)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop serving, wait for the thread to end, and close the listening socket
        (uvicorn closes it only when it had started); idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        thread = self._thread
        if thread is not None:
            thread.join(10)
        sock, self._sock = self._sock, None
        if sock is not None and (thread is None or not thread.is_alive()):
            sock.close()  # (a thread still running keeps it: its loop may use it yet)
        self._server = self._thread = None


def serve(config: LocalModelConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve in the foreground until interrupted (the ``cancelkit model`` command)."""
    config_ = _config(LocalModelApp(config), "info")
    config_.host, config_.port = host, port
    uvicorn.Server(config_).run()


def exit_with_parent(parent_pid: int, *, watch_stdin: bool = True, grace: float = 5.0) -> None:
    """End this process when ``parent_pid`` ends, however it ends (SIGKILL included).

    Two guards, so that neither a signal the parent cannot catch nor a platform
    without the first one leaves this process behind:

    - on Linux, ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel sends SIGTERM when
      the parent (strictly, the parent's thread that started us) exits;
    - a pipe watchdog: the parent holds the write end of our stdin and never writes;
      when it is gone, for any reason, the kernel closes that end and reading stdin
      reaches EOF. We then ask ourselves to stop (SIGTERM: uvicorn shuts down
      gracefully) and, if that takes longer than ``grace``, exit at once.

    If the parent is already gone when this is called, exit at once.

    Args:
        parent_pid: the pid of the process this one must not outlive.
        watch_stdin: whether to run the stdin watchdog (stdin must be that pipe).
        grace: seconds a graceful stop may take before the process exits hard.
    """
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # it died before the guard was set
        os._exit(0)
    if not watch_stdin:
        return

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass  # the parent never writes; anything it does is ignored
        except OSError:
            pass  # a closed or broken stdin means the same: the parent is gone
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="cancelkit-parent-watchdog", daemon=True).start()
