"""A worker process for the cross-process tests: a ``Runs`` on a shared backend,
driven by JSON lines on stdin, reporting JSON lines on stdout.

Run as ``python -m tests.distributed.worker BACKEND URL PREFIX [--lease S]
[--backstop S] [--store PATH]``. It prints ``{"event": "ready", "worker": ...}``
once its backend is open. Commands (one JSON object per line):

- ``{"op": "start", "id": ..., "owner": ..., "seconds": ...}``: start a run that
  sleeps ``seconds`` (in a transaction staging one note, with ``--store``);
- ``{"op": "stop", "id": ..., "owner": ..., "sent": <monotonic>}``: ``runs.stop``;
  answers ``{"event": "stop", "id": ..., "result": true|false|"unavailable"}``;
- ``{"op": "find", "id": ..., "owner": ...}``: answers ``{"event": "find", ...}``;
- ``{"op": "quit"}``: shut down cleanly and exit 0.

Events: ``began`` when a run's function starts, ``cancelled`` when it sees its
cancellation (with ``time.monotonic()``: the clock every process of a host shares),
``ended`` with the run's status and reason. End of stdin (the test is gone) ends
the process too, and the kernel ends it if the test process is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from typing import Any

from cancelkit import BackendUnavailable, CancelReason, Runs, RunsBackend, transaction
from cancelkit._lifetime import set_parent_death_signal
from cancelkit.stores import SQLiteStore


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _backend(kind: str, url: str, prefix: str, lease: float, backstop: float) -> RunsBackend:
    if kind == "redis":
        from cancelkit.distributed import RedisBackend  # noqa: PLC0415

        return RedisBackend(url, prefix=prefix, lease=lease, backstop=backstop)
    from cancelkit.distributed import PostgresBackend  # noqa: PLC0415

    backend: RunsBackend = PostgresBackend(url, prefix=prefix, lease=lease, backstop=backstop)
    return backend


def _stdin_lines() -> asyncio.Queue[str]:
    """Lines of stdin, read by a daemon thread (never holds up the loop's exit);
    ``""`` at its end."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        with contextlib.suppress(RuntimeError):  # the loop may be gone already
            loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return lines


async def _main(options: argparse.Namespace) -> None:
    store = SQLiteStore(options.store) if options.store else None
    if store is not None:
        await store.setup()
    backend = _backend(
        options.backend, options.url, options.prefix, options.lease, options.backstop
    )
    async with Runs(backend=backend) as runs:
        _say(event="ready", worker=backend.worker)

        async def work(run_id: str, seconds: float) -> None:
            _say(event="began", id=run_id)
            try:
                if store is None:
                    await asyncio.sleep(seconds)
                else:
                    async with transaction(store, run_id) as tx:
                        tx.insert("notes", {"run_id": run_id, "body": "staged"})
                        _say(event="staged", id=run_id)  # its transaction has begun
                        await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                _say(event="cancelled", id=run_id, at=time.monotonic())
                raise

        def ended(run: Any) -> None:
            reason = [run.reason.kind, run.reason.message] if run.reason else None
            error = repr(run.outcome.error) if run.outcome.error else None
            _say(event="ended", id=run.id, status=run.status, reason=reason, error=error)

        lines = _stdin_lines()
        while True:
            line = await lines.get()
            if not line:
                return  # the test is gone
            command = json.loads(line)
            op = command["op"]
            if op == "quit":
                return
            if op == "start":
                run = runs.start(
                    work,
                    command["id"],
                    command["seconds"],
                    run_id=command["id"],
                    owner=command.get("owner"),
                )
                run.add_done_callback(ended)
            elif op == "stop":
                reason = CancelReason("user", f"stopped through {backend.worker}")
                try:
                    result: bool | str = await runs.stop(
                        command["id"], reason, command.get("owner")
                    )
                except BackendUnavailable:
                    result = "unavailable"
                _say(event="stop", id=command["id"], result=result, sent=command.get("sent"))
            elif op == "find":
                info = await runs.find(command["id"], command.get("owner"))
                _say(
                    event="find",
                    id=command["id"],
                    status=info.status if info else None,
                    kind=info.reason.kind if info and info.reason else None,
                )


def main() -> None:
    set_parent_death_signal(signal.SIGKILL)
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=["redis", "postgres"])
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--backstop", type=float, default=1.0)
    parser.add_argument("--store", default=None)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
