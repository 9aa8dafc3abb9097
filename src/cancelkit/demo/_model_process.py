"""The demo's local model, in a process of its own that never outlives the demo.

``cancelkit model`` runs beside the demo as a real provider would: its token
generation never competes with the app for the interpreter. It is tied to the demo,
whatever ends the demo (SIGKILL included): it watches a pipe from the demo and, on
Linux, asks the kernel for a signal when its parent dies (``cancelkit model
--exit-with-parent``). If it dies while the demo runs, runs that were using it fail
with a clear reason, ``/api/stats`` says so, and it is restarted (a bounded number of
times; after that the service reports it down and refuses new runs with 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from typing import Any

__all__ = ("LocalModelProcess", "ModelCounters")

logger = logging.getLogger("cancelkit.demo")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ModelCounters:
    """The counters of the model server at ``base_url`` (its ``/stats``), read through
    one client kept open until :meth:`aclose`.

    ``/api/stats`` reads them on every poll, and the page polls every second per open
    tab: a client made per read costs about 18 ms of the event loop's time (its TLS
    context loads the CA bundle), a stall for every run streaming beside it. One client
    also keeps its connection to the server alive between polls.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._client: Any = None  # an httpx2.AsyncClient, made at the first read
        self._closed = False

    async def read(self) -> dict[str, int] | None:
        """The counters, or ``None`` if the server cannot be reached (or after
        :meth:`aclose`)."""
        import httpx2  # noqa: PLC0415 - comes with the SDKs

        if self._closed:
            return None
        if self._client is None:
            self._client = httpx2.AsyncClient(base_url=self.base_url, timeout=2)
        try:
            reply = await self._client.get("/stats")
            reply.raise_for_status()
            result: dict[str, int] = reply.json()
            return result
        except (httpx2.HTTPError, OSError, ValueError):
            return None

    async def aclose(self) -> None:
        """Close the client; reads from now on say ``None``."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class LocalModelProcess:
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
        self.counters = ModelCounters(self.base_url)
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
        return await self.counters.read()

    def shutting_down(self) -> None:
        """The demo is stopping: the process ending from now on is no cause to restart it
        (Ctrl-C in a terminal reaches it too). Safe from a signal handler."""
        self._stopping = True

    async def stop(self) -> None:
        """Stop the process for good (no restart): SIGTERM, then SIGKILL after 5 s."""
        self._stopping = True
        await self.counters.aclose()
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
