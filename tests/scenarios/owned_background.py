"""An async generator owns a client with background work, and is abandoned.

Usage: ``python -m tests.scenarios.owned_background BACKEND IMPLEMENTATION``
with BACKEND ``asyncio`` or ``trio`` and IMPLEMENTATION ``naive`` (the client holds
an anyio task group) or ``background`` (the client holds a ``cancelkit.Background``).

The consumer breaks out of the generator early and drops it; the garbage collector
finalises it, and the event loop runs its ``finally`` (the client's ``aclose()``) in
a task of its own. Prints one JSON line: whatever went wrong, from every channel
that can report it (the loop's exception handler, unraisable exceptions, warnings,
log records, and the run itself).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import warnings
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from cancelkit import Background

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class NaiveClient:
    """Starts background work in a task group it holds: the pattern that breaks."""

    async def start(self) -> None:
        self._group: anyio.abc.TaskGroup = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(anyio.sleep, 100)

    async def aclose(self) -> None:
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)


class BackgroundClient:
    """The same client on ``cancelkit.Background``."""

    def __init__(self) -> None:
        self._background = Background("client")
        self.stopped = False

    async def start(self) -> None:
        self._background.spawn(self._heartbeat())

    async def _heartbeat(self) -> None:
        try:
            await anyio.sleep(100)
        finally:
            self.stopped = True

    async def aclose(self) -> None:
        await self._background.aclose(grace=1)


class LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


async def scenario(
    implementation: str, problems: dict[str, list[str]], state: dict[str, Any]
) -> None:
    if anyio.get_current_task() and "asyncio" in sys.modules and _on_asyncio():
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: problems["loop_exception_handler"].append(
                f"{context.get('message')}: {context.get('exception')!r}"
            )
        )
    clients: list[Any] = []

    async def stream() -> AsyncIterator[int]:
        client = NaiveClient() if implementation == "naive" else BackgroundClient()
        clients.append(client)
        await client.start()
        try:
            for index in range(10):
                yield index
                await anyio.lowlevel.checkpoint()
        finally:
            await client.aclose()

    generator = stream()
    async for _ in generator:
        break  # abandon it: no aclose() here
    del generator
    gc.collect()
    for _ in range(50):
        await anyio.sleep(0.01)
    state["loop_still_running"] = True
    if implementation == "background":
        state["background_work_stopped"] = clients[0].stopped


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def main() -> None:
    backend, implementation = sys.argv[1], sys.argv[2]
    problems: dict[str, list[str]] = {
        "loop_exception_handler": [],
        "unraisable": [],
        "warnings": [],
        "log_records": [],
        "run_raised": [],
    }
    state: dict[str, Any] = {"loop_still_running": False}
    sys.unraisablehook = lambda u: problems["unraisable"].append(f"{u.exc_value!r} in {u.object!r}")
    collector = LogCollector()
    logging.getLogger().addHandler(collector)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            anyio.run(scenario, implementation, problems, state, backend=backend)
        except BaseException as exc:
            problems["run_raised"].append(repr(exc))
        gc.collect()
    problems["warnings"] = [str(w.message) for w in caught]
    problems["log_records"] = collector.records
    print(json.dumps({"problems": problems, "state": state}))


if __name__ == "__main__":
    main()
