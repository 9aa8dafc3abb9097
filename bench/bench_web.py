"""Load on the demo service, beside the naive one: where Stop lands, and what it costs.

Run: ``python bench/bench_web.py`` (``--sizes 50,100,200,400 --repeats 3 --stops 60``
by default; ``--quick`` for a fast check; ``--peers cancelkit`` for one peer).

One local model server (``cancelkit model``, 50 tokens/s, one token a chunk) runs in
a process of its own for the whole bench. Against it, in turn, for each size and each
repeat, a fresh service is started in its own process and driven by httpx2 sessions,
each with its own cookie:

- **cancelkit**: the real ``cancelkit demo`` (SQLite, one process) on that model
  server (``--base-url``);
- **naive**: ``_naive_service.py``, the same routes written the usual way (a dict of
  asyncio tasks, ``task.cancel()``, the ``anthropic`` SDK, SQLite).

Each session starts a run whose agent saves a note (a tool call) and then streams a
300-token answer, follows its events, and a third of them press Stop at a random
moment, a third close their stream at a random moment (a closed tab; runs are started
with ``stop_when_unwatched`` as the demo's page does), a third read to the end. The
same seed gives both peers the same moments. As the page, each session polls
``/api/stats`` beside its event stream (once, on a second connection, which stays
open: both services keep idle connections 65 s), and its Stop goes out on that
connection. Then **60 concurrent Stops**: 60 sessions streaming press Stop at the
same moment; and again, each Stop on a new connection (a client that had no other
connection open: 60 connections opened at once). Last, **one Stop request**: what
each Stop of a burst costs the ones queued behind it, the service's CPU per cancel
request (2,000 in a row on one connection, of a run that has ended, so that only the
request's own path is counted).

Measured, per run, and reported as the median of the repeats:

- client Stop latency: the cancel request until the run's final event (and until
  the cancel request's own response, for where the time goes);
- when the Stop reached the service: from the client's Stop until the run's token
  was cancelled (the receipt's ``asked_at``; one machine, one wall clock), or until
  the naive service's cancel handler ran (its reply says when): the trip of the
  cancel request and its wait in the service's queue. Split in two: until the
  client's send of the request returned (an upper bound on when it was written, so
  the service's part can read a little below zero when the service is quick), and
  the rest, the service's;
- service Stop latency (cancelkit only, the service's own measure): the cancel until
  every layer stopped, the ``stopped_in_ms`` of each stopped run's receipt (also
  ``/api/stats`` ``stop_latency_ms``: p50, p99 and max of the last 200), and from the same
  receipts when the model stream was closed and the staged writes rolled back;
- service CPU per streamed token: the service process's user+system CPU time
  (``/proc/<pid>/stat``) from the start of the load until the model server has no
  open stream, over the tokens the clients received. The model server is another
  process and is not counted;
- tokens generated after the Stop moment, counted by the model server (its records
  of the session's requests, by ``[[label:...]]``, and the time of each token): per
  Stop from the moment the client sent the cancel request, per closed tab from the
  moment it closed its stream;
- the database's outcome by session kind and partial writes (cancelkit: a note or a
  reply without a committed run; naive: a note of a run that was stopped), and what
  is left in the service after the load (active runs, tasks, abandoned threads).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

from _harness import Row, save
from _harness import measure as interleaved
from _web_load import (
    REPLY_TOKENS,
    SESSION_SECONDS,
    Session,
    Together,
    cpu_seconds,
    load,
    plan,
    start_model,
    start_service,
    together_plan,
)
from cancelkit._lifetime import FolderWatchdog, tied_to_this_process

PEERS = ("cancelkit", "naive")
DRAIN_SECONDS = 20.0  # a bound on waiting for the model server's streams to end
STOP_REQUESTS = 2000  # cancel requests per measure of one Stop request's CPU
STOP_SCENARIO = "one Stop request"


@dataclass
class Measurement:
    """One run of one peer under one load."""

    peer: str
    sessions: list[Session]
    elapsed: float
    cpu: float  # seconds of the service process
    before: dict[str, Any]
    after: dict[str, Any]
    outcomes: dict[str, dict[str, int]]
    partial_writes: int
    load: float  # the machine's 1-minute load average as the run started

    def metrics(self) -> dict[str, float | None]:
        """The numbers of this run, by name (``None``: this peer cannot tell)."""
        stops = [s for s in self.sessions if s.kind == "stop"]
        client = [
            (s.done_at - s.stop_sent) * 1e3
            for s in stops
            if s.stop_sent is not None and s.done_at is not None
        ]
        answered = [
            (s.stop_answered - s.stop_sent) * 1e3
            for s in stops
            if s.stop_sent is not None and s.stop_answered is not None
        ]
        service = [
            float(s.final["receipt"]["stopped_in_ms"])
            for s in stops
            if s.final and s.final.get("receipt") and s.final["receipt"].get("stopped_in_ms")
        ]
        layers = _layers([s.final["receipt"] for s in stops if s.final and s.final.get("receipt")])
        # The same machine's wall clock on both sides: from the client's Stop until
        # the service cancelled the run (the request's trip and its queueing): the
        # receipt's asked_at, or the time the naive service's handler says it ran.
        reached = [
            (at - s.stop_wall) * 1e3
            for s in stops
            if s.stop_wall is not None and (at := _reached_at(s)) is not None
        ]
        # ... of which the client's own part: until the request was written to its socket
        # (a busy load generator is slow to send), and the rest: the service's.
        written = [
            (s.stop_written_wall - s.stop_wall) * 1e3
            for s in stops
            if s.stop_wall is not None and s.stop_written_wall is not None
        ]
        queued = [
            (at - s.stop_written_wall) * 1e3
            for s in stops
            if s.stop_written_wall is not None and (at := _reached_at(s)) is not None
        ]
        after_stop = [s.tokens_after for s in stops if s.tokens_after is not None]
        closed = [
            s.tokens_after for s in self.sessions if s.kind == "disconnect" and s.tokens_after
        ]
        streamed = sum(s.tokens for s in self.sessions)
        latency = self.after.get("stop_latency_ms") or {}
        threads = self.after.get("worker_threads") or {}
        return {
            "client Stop p50 (ms)": _quantile(client, 50),
            "client Stop p99 (ms)": _quantile(client, 99),
            "cancel request answered p50 (ms)": _quantile(answered, 50),
            "cancel request answered p99 (ms)": _quantile(answered, 99),
            "Stop reached the service p50 (ms)": _quantile(reached, 50),
            "Stop reached the service p99 (ms)": _quantile(reached, 99),
            "  client: request written p50 (ms)": _quantile(written, 50),
            "  client: request written p99 (ms)": _quantile(written, 99),
            "  service: written to reached p50 (ms)": _quantile(queued, 50),
            "  service: written to reached p99 (ms)": _quantile(queued, 99),
            "service Stop p50 (ms)": _quantile(service, 50),
            "service Stop p99 (ms)": _quantile(service, 99),
            "receipt: model stream closed p50 (ms)": _quantile(layers.get("stream", []), 50),
            "receipt: model stream closed p99 (ms)": _quantile(layers.get("stream", []), 99),
            "receipt: writes rolled back p50 (ms)": _quantile(layers.get("transaction", []), 50),
            "receipt: writes rolled back p99 (ms)": _quantile(layers.get("transaction", []), 99),
            "/api/stats stop p50 (ms)": latency.get("p50"),
            "/api/stats stop p99 (ms)": latency.get("p99"),
            "/api/stats stop max (ms)": latency.get("max"),
            "CPU per streamed token (us)": self.cpu / streamed * 1e6 if streamed else None,
            "tokens after Stop, per Stop": statistics.mean(after_stop) if after_stop else None,
            "tokens after Stop, worst Stop": max(after_stop) if after_stop else None,
            "tokens after Stop, all Stops": sum(after_stop) if after_stop else None,
            "tokens after close, all tabs": float(sum(closed)),
            "tokens streamed to clients": float(streamed),
            "sessions failed": float(sum(s.error is not None for s in self.sessions)),
            "partial writes": float(self.partial_writes),
            "left: active runs": self.after.get("active_runs"),
            "left: tasks above baseline": self.after["tasks"] - self.before["tasks"]
            if "tasks" in self.after
            else None,
            "left: abandoned threads": threads.get("abandoned_running"),
        }


def _layers(receipts: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per layer kind, when the last of its kind in each run had stopped after the
    Stop (ms): where a Stop's time goes, in the service's own words."""
    found: dict[str, list[float]] = {}
    for receipt in receipts:
        latest: dict[str, float] = {}
        for layer in receipt.get("layers", ()):
            after = layer.get("after_stop_ms")
            if after is not None:
                latest[layer["layer"]] = max(after, latest.get(layer["layer"], after))
        for kind, after in latest.items():
            found.setdefault(kind, []).append(after)
    return found


def _quantile(values: list[float], percent: int) -> float | None:
    if not values:
        return None
    if len(values) == 1 or percent == 50:
        return statistics.median(values)
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def measure(
    peer: str,
    model_url: str,
    sessions: list[Session],
    together: Together | None,
    profile: Path | None = None,
) -> Measurement:
    """Start a fresh ``peer`` service, put the load on it, and stop it.

    With ``profile``, py-spy samples the service during the load (a slower service
    then: for where its time goes, not for the numbers) into ``profile`` (collapsed
    stacks, ``<peer>-<first label>.txt``).
    """
    data = Path(tempfile.mkdtemp(prefix=f"ck-bench-web-{peer}-"))
    folder = FolderWatchdog(data)  # gone once read, or with the bench however it ends
    url, service = start_service(peer, model_url, data)
    spy: subprocess.Popen[bytes] | None = None
    try:
        before = httpx2.get(url + "/api/stats").json()
        if profile is not None:
            spy = _profiler(service.pid, profile / f"{sessions[0].label}.txt")
        machine_load = os.getloadavg()[0]
        cpu_start, started = cpu_seconds(service.pid), time.perf_counter()
        anyio.run(load, url, sessions, together)
        elapsed = time.perf_counter() - started
        _drain(model_url, url)
        cpu = cpu_seconds(service.pid) - cpu_start
        time.sleep(0.5)  # what is left is what stays
        after = httpx2.get(url + "/api/stats").json()
    finally:
        try:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        finally:
            service.stop()
    with httpx2.Client(base_url=model_url, timeout=10) as model:
        for session in sessions:
            if session.moment is not None:
                params = {"label": session.label, "after": repr(session.moment)}
                found = model.get("/stats/requests", params=params).json()["requests"]
                session.tokens_after = sum(r["tokens_after"] for r in found)
                session.model_outcomes = [r["outcome"] for r in found]
    outcomes, partial = _database(peer, data, sessions)
    folder.release()
    return Measurement(peer, sessions, elapsed, cpu, before, after, outcomes, partial, machine_load)


def stop_request_cpu(peer: str, model_url: str, count: int = STOP_REQUESTS) -> float:
    """A fresh ``peer`` service's CPU (us) per cancel request of a run that has ended,
    ``count`` in a row on one connection (after a tenth as many to warm up)."""
    data = Path(tempfile.mkdtemp(prefix=f"ck-bench-web-{peer}-"))
    folder = FolderWatchdog(data)
    url, service = start_service(peer, model_url, data)
    try:
        with httpx2.Client(base_url=url, timeout=SESSION_SECONDS) as client:
            run_id = client.post("/api/runs", json={"prompt": "Hi [[tokens:1]]"}).json()["id"]
            with client.stream("GET", f"/api/runs/{run_id}/events") as events:
                for _line in events.iter_lines():  # to the run's final event
                    pass
            cancel = f"/api/runs/{run_id}/cancel"
            for _ in range(count // 10):
                client.post(cancel).raise_for_status()
            start = cpu_seconds(service.pid)
            for _ in range(count):
                client.post(cancel).raise_for_status()
            return (cpu_seconds(service.pid) - start) / count * 1e6
    finally:
        service.stop()
        folder.release()


def stop_request_rows(
    model_url: str, peers: list[str], repeats: int, count: int = STOP_REQUESTS
) -> list[Row]:
    """The one-Stop-request scenario: per peer, the median of ``repeats`` fresh services."""
    if count < 1:
        return []
    return interleaved(
        f"{STOP_SCENARIO}: service CPU (us)",
        {peer: functools.partial(stop_request_cpu, peer, model_url, count) for peer in peers},
        unit="us",
        repeats=repeats,
        baseline="naive" if "naive" in peers and len(peers) > 1 else None,
    )


def _reached_at(session: Session) -> float | None:
    """When the Stop reached the service (``time.time()``), if it says."""
    receipt = session.final.get("receipt") if session.final else None
    if receipt and receipt.get("asked_at") is not None:
        return float(receipt["asked_at"])
    return session.stop_reached_wall


def _profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` (idle threads left out), started before it returns."""
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--output", str(output)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=tied_to_this_process(signal.SIGINT),  # ends (and writes) with the bench
    )
    time.sleep(1.0)  # it attaches
    return process


def _drain(model_url: str, url: str) -> None:
    """Wait (bounded) until the model server streams nothing and the service runs
    nothing: the closed tabs' runs may still be generating."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        streams = httpx2.get(model_url + "/stats").json()["open_streams"]
        if streams == 0 and httpx2.get(url + "/api/stats").json()["active_runs"] == 0:
            return
        time.sleep(0.1)


def _database(peer: str, data: Path, sessions: list[Session]) -> tuple[dict[str, Any], int]:
    """Outcome by session kind, and partial writes, from the service's database."""
    outcomes: dict[str, dict[str, int]] = {}
    if peer == "cancelkit":
        with contextlib.closing(sqlite3.connect(data / "demo.db")) as db:
            ledger = dict(db.execute("SELECT run_id, status FROM cancelkit_runs").fetchall())
            notes = {r for (r,) in db.execute("SELECT run_id FROM demo_notes").fetchall()}
            replies = {r for (r,) in db.execute("SELECT run_id FROM cancelkit_replies").fetchall()}
        committed = {run for run, status in ledger.items() if status == "committed"}
        partial = len((notes ^ committed) | (replies ^ committed))
        status_of = {s.index: ledger.get(s.run_id or "", "missing") for s in sessions}
    else:  # no ledger: what the client saw; a note of a stopped run is a partial write
        with contextlib.closing(sqlite3.connect(data / "naive.db")) as db:
            notes = {r for (r,) in db.execute("SELECT run_id FROM notes").fetchall()}
        status_of = {
            s.index: (s.final or {}).get("status", "not seen (tab closed)") for s in sessions
        }
        partial = sum(
            s.run_id in notes for s in sessions if (s.final or {}).get("status") == "cancelled"
        )
    for session in sessions:
        kind = outcomes.setdefault(session.kind, {})
        kind[status_of[session.index]] = kind.get(status_of[session.index], 0) + 1
    return outcomes, partial


TARGETS = {
    "service Stop p50 (ms)": "< 20 ms at 200",
    "service Stop p99 (ms)": "< 50 ms at 200",
    "client Stop p99 (ms)": "< 100 ms at 200",
    "CPU per streamed token (us)": "<= 100 us",
    "tokens after Stop, worst Stop": "<= 1 chunk",
}


def rows_of(scenario: str, runs: dict[str, list[Measurement]]) -> list[Row]:
    """One row per metric and peer: the median of the repeats (``best``: the least),
    with its ratio to the naive peer's where both have the number."""
    rows: list[Row] = []
    names = list(next(iter(runs.values()))[0].metrics())
    for name in names:
        group: list[Row] = []
        for peer, measured in runs.items():
            values = [v for m in measured if (v := m.metrics()[name]) is not None]
            if values:
                unit = "ms" if "(ms)" in name else "us" if "(us)" in name else "n"
                target = TARGETS.get(name) if peer == "cancelkit" else None
                median = statistics.median(values)
                group.append(
                    Row(f"{scenario}: {name}", peer, unit, median, min(values), target=target)
                )
                group[-1].samples = values
        base = next((row.median for row in group if row.contestant == "naive"), None)
        if base and len(group) > 1:
            for row in group:
                row.baseline, row.ratio = "naive", row.median / base
        rows += group
    return rows


def describe(scenario: str, runs: dict[str, list[Measurement]]) -> None:
    """What the table does not hold: outcomes by kind and what the service kept."""
    for peer, measured in runs.items():
        last = measured[-1]
        print(
            f"{scenario}, {peer} (last repeat): {len(last.sessions)} sessions in"
            f" {last.elapsed:.1f}s, service CPU {last.cpu:.2f}s, machine load"
            f" {', '.join(f'{m.load:.1f}' for m in measured)} (1-min, per repeat);"
            f" outcome by session kind: {last.outcomes}"
        )


def main() -> None:
    """Parse the flags, run every scenario for every peer, print and save the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="50,100,200,400", help="sessions per load")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (median)")
    parser.add_argument("--stops", type=int, default=60, help="concurrent Stops (0: skip)")
    parser.add_argument("--peers", default=",".join(PEERS), help="cancelkit,naive")
    parser.add_argument("--quick", action="store_true", help="12 sessions, 6 Stops, once")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="sample each service with py-spy (pip install py-spy) into DIR: slows it",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size]
    repeats, stops = args.repeats, args.stops
    if args.quick:
        sizes, repeats, stops = [12], 1, 6
    peers = [peer for peer in args.peers.split(",") if peer]
    if not set(peers) <= set(PEERS) or repeats < 1 or not all(size > 0 for size in sizes):
        parser.error(f"--peers from {PEERS}, --repeats and --sizes positive")
    print(f"load before the bench: {os.getloadavg()} on {os.cpu_count()} cores")
    requests = 200 if args.quick else STOP_REQUESTS
    results, stop_rows = run(
        sizes, repeats, stops, peers, profile=args.profile, stop_requests=requests
    )
    print(f"load after the bench: {os.getloadavg()}")
    rows = [row for scenario, runs in results.items() for row in rows_of(scenario, runs)]
    rows += stop_rows
    print_table(rows, peers, repeats)
    print(f"\nwritten: {save('web', rows)}")


def print_table(rows: list[Row], peers: list[str], repeats: int) -> None:
    """Per scenario, one line per metric: each peer's median (best of the repeats)."""
    print(f"\nmedian of {repeats} run(s) (best in brackets); '-': the peer cannot tell")
    scenario = None
    cells = {(row.comparison, row.contestant): row for row in rows}
    for comparison in dict.fromkeys(row.comparison for row in rows):
        head, _, metric = comparison.partition(": ")
        if head != scenario:
            scenario = head
            print(f"\n{head:<34}" + "".join(f"{peer:>22}" for peer in peers) + "  target")
        line = f"  {metric:<32}"
        target = ""
        for peer in peers:
            row = cells.get((comparison, peer))
            line += f"{_cell(row.median, row.best):>22}" if row else f"{'-':>22}"
            target = target or (row.target or "" if row else "")
        print(line + "  " + target)


def _cell(median: float, best: float) -> str:
    if median == best:
        return f"{median:,.1f}"
    return f"{median:,.1f} ({best:,.1f})"


def run(
    sizes: list[int],
    repeats: int,
    stops: int,
    peers: list[str],
    tokens: int = REPLY_TOKENS,
    profile: Path | None = None,
    stop_requests: int = STOP_REQUESTS,
) -> tuple[dict[str, dict[str, list[Measurement]]], list[Row]]:
    """Every scenario, peers interleaved within each repeat; the model server is
    started first and stopped last, however the bench ends.

    Returns:
        By scenario (``"N sessions"``, ``"N concurrent Stops"`` and the same on new
        connections), by peer, one measurement per repeat; and the rows of the
        one-Stop-request scenario (``stop_requests`` requests a measure; 0: none).
    """
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    model_url, model = start_model()
    results: dict[str, dict[str, list[Measurement]]] = {}
    try:
        for size in sizes:
            runs = results.setdefault(f"{size} sessions", {peer: [] for peer in peers})
            for repeat in range(repeats):
                for peer in peers:
                    sessions = plan(size, repeat, f"{peer}-{size}-{repeat}", tokens)
                    runs[peer].append(measure(peer, model_url, sessions, None, profile))
            describe(f"{size} sessions", runs)
        for warm in (True, False) if stops else ():
            scenario = f"{stops} concurrent Stops" + ("" if warm else ", new connections")
            runs = results.setdefault(scenario, {peer: [] for peer in peers})
            for repeat in range(repeats):
                for peer in peers:
                    tag = f"{peer}-together-{'warm' if warm else 'new'}-{repeat}"
                    sessions = together_plan(stops, tag, tokens, warm=warm)
                    together = Together(stops)
                    runs[peer].append(measure(peer, model_url, sessions, together, profile))
            describe(scenario, runs)
        stop_rows = stop_request_rows(model_url, peers, repeats, stop_requests)
    finally:
        model.stop()
        signal.signal(signal.SIGTERM, previous)
    return results, stop_rows


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that every ``finally`` stops what it started


if __name__ == "__main__":
    main()
