"""Worker processes for the cross-process tests, and a Redis of their own per test.

A :class:`Worker` is ``python -m tests.distributed.worker``: a ``Runs`` on a shared
backend in another process, driven by JSON lines. Its events are collected as they
come; :meth:`Worker.expect` waits (bounded) for one that matches.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cancelkit.distributed import RedisServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture
def anyio_backend() -> str:
    """The backends' clients (redis-py, psycopg's pool) are asyncio-only."""
    return "asyncio"


@pytest.fixture
def prefix() -> str:
    """Keys of one test never meet another's in the session's Redis."""
    return f"ck{secrets.token_hex(4)}:"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, to stop and restart (append-only file on)."""
    server = RedisServer(persist=True, directory=tmp_path / "redis")
    server.directory.mkdir()
    with server:
        yield server


class Worker:
    """One worker process (see ``tests/distributed/worker.py``)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.name = ""

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(json.loads(line))
            self._arrived.set()

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())

    async def expect(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 30.0, since: int = 0
    ) -> dict[str, Any]:
        """The first event (from the ``since``-th on, already seen or to come) that
        ``match`` accepts."""
        with anyio_move_on_after(timeout):
            while True:
                for event in self.events[since:]:
                    if match(event):
                        return event
                if self._reader.done():
                    raise AssertionError(f"the worker ended; its events: {self.events[-5:]}")
                self._arrived.clear()
                await self._arrived.wait()
        raise AssertionError(f"no such event within {timeout}s; the last: {self.events[-5:]}")

    def seen(self, event: str, run_id: str) -> dict[str, Any] | None:
        return next(
            (e for e in self.events if e.get("event") == event and e.get("id") == run_id), None
        )

    async def ended(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return await self.expect(lambda e: e["event"] == "ended" and e["id"] == run_id, timeout)

    async def stop(self, run_id: str, owner: str | None = None) -> dict[str, Any]:
        since = len(self.events)
        self.send(op="stop", id=run_id, owner=owner)
        return await self.expect(lambda e: e["event"] == "stop" and e["id"] == run_id, since=since)

    async def quit(self, timeout: float = 30.0) -> int:
        self.send(op="quit")
        with anyio_fail_after(timeout):
            code = await self.process.wait()
        await self._reader
        return code

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def anyio_move_on_after(seconds: float) -> Any:
    import anyio  # noqa: PLC0415

    return anyio.move_on_after(seconds)


def anyio_fail_after(seconds: float) -> Any:
    import anyio  # noqa: PLC0415

    return anyio.fail_after(seconds)


@pytest.fixture
async def workers(prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """``await start(url, *options)``: a ready worker; every one is gone after the test."""
    started: list[Worker] = []

    async def start(url: str, *options: str, backend: str = "redis") -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.distributed.worker",
            backend,
            url,
            prefix,
            *options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        worker = Worker(process)
        started.append(worker)
        ready = await worker.expect(lambda e: e["event"] == "ready", timeout=60)
        worker.name = ready["worker"]
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
            await worker.process.wait()
            await worker._reader
