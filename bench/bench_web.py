"""Load on the demo service: 200 sessions, a third stopped, a third gone, a third done.

Run: ``python bench/bench_web.py`` (``--sessions N`` to change the load). Starts the real
``cancelkit demo`` command (local model at 50 tokens/s, SQLite) on a free port and
drives it with httpx2, each session with its own cookie: it starts a run whose agent
saves a note (a staged write) and streams a long answer, and then

- presses Stop at a random moment (with its event stream still open), or
- closes its event stream at a random moment (a closed tab), or
- reads to the end.

Reported: Stop latency (the cancel request until the run's final event, which is sent
once every layer has stopped), tokens saved, and after the run the live tasks and
threads of the service and the database's verdict: no partial writes.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2

from _harness import Row, report

PROMPT = 'Research [[tool:save_note {"text": "session %d"}]] [[tokens:300]]'


def start(data: Path) -> tuple[str, subprocess.Popen[bytes]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cancelkit",
            "demo",
            "--port",
            str(port),
            "--data",
            str(data),
            "--model-rate",
            "50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            httpx2.get(url + "/api/stats", timeout=1)
            return url, process
        except httpx2.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the demo did not start")


async def session(url: str, index: int, kind: str, rng: random.Random, out: dict[str, Any]) -> None:
    async with httpx2.AsyncClient(base_url=url, timeout=60) as client:
        reply = await client.post("/api/runs", json={"prompt": PROMPT % index})
        run_id = reply.json()["id"]
        out[run_id] = {"kind": kind}
        stop_after = rng.randint(5, 120)
        deltas = 0
        async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            async for line in response.aiter_lines():
                if line == "event: delta":
                    deltas += 1
                    if deltas == stop_after and kind == "stop":
                        out[run_id]["stop_sent"] = time.perf_counter()
                        await client.post(f"/api/runs/{run_id}/cancel")
                    elif deltas == stop_after and kind == "disconnect":
                        break
                elif line.startswith("data: ") and '"status"' in line:
                    out[run_id]["done_at"] = time.perf_counter()
                    out[run_id]["final"] = json.loads(line[6:])
                    break


async def load(url: str, sessions: int) -> dict[str, Any]:
    rng = random.Random(42)
    kinds = ["stop", "disconnect", "complete"] * (sessions // 3 + 1)
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as group:
        for index in range(sessions):
            group.start_soon(session, url, index, kinds[index], rng, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="ck-bench-web-"))
    url, process = start(data)
    try:
        baseline = httpx2.get(url + "/api/stats").json()
        started = time.perf_counter()
        out = anyio.run(load, url, args.sessions)
        elapsed = time.perf_counter() - started
        deadline = time.monotonic() + 15
        while True:  # let the disconnected runs finish unwinding
            after = httpx2.get(url + "/api/stats").json()
            if after["active_runs"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(1.0)
        after = httpx2.get(url + "/api/stats").json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)

    stop_ms = [
        (v["done_at"] - v["stop_sent"]) * 1e3
        for v in out.values()
        if "stop_sent" in v and "done_at" in v
    ]
    db = sqlite3.connect(data / "demo.db")
    ledger = dict(db.execute("SELECT run_id, status FROM cancelkit_runs").fetchall())
    notes = {run for (run,) in db.execute("SELECT run_id FROM demo_notes").fetchall()}
    replies = {run for (run,) in db.execute("SELECT run_id FROM cancelkit_replies").fetchall()}
    partial = [
        run
        for run, status in ledger.items()
        if (status == "committed") != (run in notes) or (status == "committed") != (run in replies)
    ]
    outcomes: dict[str, dict[str, int]] = {}
    for run_id, value in out.items():
        status = ledger.get(run_id, "missing")
        outcomes.setdefault(value["kind"], {}).setdefault(status, 0)
        outcomes[value["kind"]][status] += 1
    print(
        f"{args.sessions} sessions in {elapsed:.1f}s; database outcome by session kind: {outcomes}"
    )
    print(
        f"service after the load: {after['active_runs']} active runs, {after['tasks']} tasks "
        f"(before: {baseline['tasks']}), {after['threads']} threads "
        f"(before: {baseline['threads']}), "
        f"worker pool {after['worker_threads']}"
    )
    print(
        f"partial writes: {len(partial)}; tokens generated {after['tokens_generated']}, "
        f"saved by Stop {after['tokens_saved_by_stop']}, "
        f"after disconnect {after['tokens_after_disconnect']}"
    )
    server_ms = after["stop_latency_ms"]
    rows = [
        Row(
            "Stop: cancel request -> run's final event (client)",
            "p50",
            "ms",
            statistics.median(stop_ms),
            min(stop_ms),
        ),
        Row(
            "Stop: cancel request -> run's final event (client)",
            "p99",
            "ms",
            statistics.quantiles(stop_ms, n=100)[98],
            min(stop_ms),
        ),
        Row(
            "Stop: cancel -> every layer stopped (server)",
            "p50",
            "ms",
            server_ms["p50"],
            server_ms["p50"],
        ),
        Row(
            "Stop: cancel -> every layer stopped (server)",
            "max",
            "ms",
            server_ms["max"],
            server_ms["max"],
        ),
        Row("after the load", "active runs", "n", after["active_runs"], after["active_runs"]),
        Row("after the load", "tasks above baseline", "n", after["tasks"] - baseline["tasks"], 0),
        Row(
            "after the load",
            "abandoned threads",
            "n",
            after["worker_threads"]["abandoned_running"],
            0,
        ),
        Row("after the load", "partial writes", "n", len(partial), 0),
        Row("tokens", "saved by Stop", "tok", after["tokens_saved_by_stop"], 0),
        Row("tokens", "generated after disconnect", "tok", after["tokens_after_disconnect"], 0),
    ]
    report("web", rows)


if __name__ == "__main__":
    main()
