"""Stop through Redis: from one process's ``stop()`` until the run's task in another
process sees its cancellation; and what the backend adds to every run.

Run: ``python bench/bench_distributed.py`` (``--quick`` for a smaller run). It starts
its own ``redis-server`` (unix socket) and one worker process (this file's
:func:`worker_main`); both are gone when it ends, however it ends.

- Stop latency, one Stop at a time. The bench calls ``await runs.stop(id)`` on a
  ``Runs(backend=RedisBackend(...))`` of its own; the run lives in the worker, whose
  function records ``time.monotonic()`` (one clock for all processes of a Linux host)
  when it sees its ``CancelledError``. Shapes: the wake-up by pub/sub (the normal
  path); the worker's subscriber connection killed just before each Stop (the wake-up
  is lost, the resubscribe re-reads the tombstones); the wake-up lost while the
  subscriber stays connected (the cancel script run with its publish sent to a
  channel nobody hears: only the ``backstop`` re-read can deliver it). Peers, in the
  same rounds: a key per run polled every 0.5 s (arq, dramatiq-abort), and ``Runs()``
  with no backend, cancelled in its own process.
- Cost: ``runs.start(fn)`` + ``await run.wait()`` of a trivial run with the Redis
  backend and without, one at a time and many at once, and the Redis traffic per run
  (``INFO`` deltas): the start awaits one round trip (the id's claim); the ending's
  write is queued and batched.

Why: a Stop that lands on another worker should be nearly as good as a local one
(the issue's target: p99 < 10 ms with pub/sub, within the backstop when the message
is lost), and the backend should not tax the runs that are never stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from _harness import Row, measure, save
from cancelkit import Runs
from cancelkit._lifetime import tied_to_this_process
from cancelkit.distributed import RedisBackend, RedisServer
from cancelkit.distributed._redis_scripts import CANCEL

if TYPE_CHECKING:
    from collections.abc import Callable

OWNER = "bench"
HOLD = 30.0  # a run that is never stopped ends by itself: every wait is bounded
POLL = 0.5  # the polled peer's interval (arq's default poll delay)
BENCH = Path(__file__).parent
CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from bench_distributed import worker_main; worker_main(sys.argv[2:])"
)

PUBSUB = "Redis backend: pub/sub wake-up"
RETURNED = "  (stop() returned, stopper side)"
KILLED = "Redis backend: subscriber killed first"
LOST = "Redis backend: wake-up lost (backstop)"
POLLED = "peer: key per run polled every 0.5 s"
MEMORY = "peer: Runs() in-process, cancel()"
TARGETS = {PUBSUB: "p99 < 10 ms", KILLED: "<= 1 s + RTT", LOST: "<= 1 s + RTT"}


@dataclass(frozen=True)
class Sizes:
    """How many samples of each kind (``--quick`` takes the small ones)."""

    stops: int  # pub/sub and in-memory, one per round
    lost: int  # each of the two lost-wake-up shapes
    polled: int
    sequential: int
    concurrent: int
    repeats: int

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(stops=100, lost=5, polled=10, sequential=300, concurrent=1000, repeats=3)
        return cls(stops=500, lost=20, polled=100, sequential=2000, concurrent=1000, repeats=5)


class Captured(logging.Handler):
    """Keeps cancelkit's warnings (a killed connection logs one) for the notes."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @classmethod
    def install(cls) -> Captured:
        handler = cls()
        logger = logging.getLogger("cancelkit")
        logger.addHandler(handler)
        logger.propagate = False
        return handler

    def take(self) -> list[str]:
        """The messages so far, forgotten here."""
        messages, self.messages = self.messages, []
        return messages


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the worker process ------------------------------------------------------------------


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _held(run_id: str) -> None:
    """A run's function: waits to be stopped, and says when it saw the cancellation."""
    _say(event="began", id=run_id)
    try:
        await asyncio.sleep(HOLD)
    except asyncio.CancelledError:
        _say(event="cancelled", id=run_id, at=time.monotonic())
        raise


async def _polled(client: Redis, run_id: str, phase: float) -> None:
    """The polled peer: the work in a task, and this task polling its abort key."""
    work = asyncio.create_task(_held(run_id))
    try:
        await asyncio.sleep(phase)  # a periodic poll meets a Stop at a random phase
        while not work.done():
            if await client.get(f"abort:{run_id}") is not None:
                work.cancel()
                break
            await asyncio.sleep(POLL)
    finally:
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
    _say(event="ended", id=run_id, status="cancelled" if work.cancelled() else "completed")


def worker_main(argv: list[str]) -> None:
    """The worker process: ``URL PREFIX``; JSON commands on stdin, events on stdout."""
    url, prefix = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the bench's: it ends this
    asyncio.run(_worker(url, prefix))


async def _worker(url: str, prefix: str) -> None:
    warnings = Captured.install()
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin
    )
    backend = RedisBackend(url, prefix=prefix)
    client = Redis.from_url(url)
    pollers: set[asyncio.Task[None]] = set()
    try:
        async with Runs(backend=backend) as runs:
            _say(event="ready", worker=backend.worker)
            async for line in stdin:  # until "quit" or the end of stdin (the bench is gone)
                command = json.loads(line)
                if command["op"] == "start":
                    run = runs.start(_held, command["id"], run_id=command["id"], owner=OWNER)
                    run.add_done_callback(
                        lambda run: _say(event="ended", id=run.id, status=run.status)
                    )
                elif command["op"] == "poll":
                    task = asyncio.create_task(_polled(client, command["id"], command["phase"]))
                    pollers.add(task)
                    task.add_done_callback(pollers.discard)
                elif command["op"] == "stats":
                    _say(event="stats", stats=backend.stats, warnings=warnings.messages)
                else:
                    break
    finally:
        for task in list(pollers):
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        await client.aclose()


class Worker:
    """The worker process, seen from the bench: commands out, events in (bounded waits)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._events: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, url: str, prefix: str) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            str(BENCH),
            url,
            prefix,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=tied_to_this_process(),  # SIGKILL of the bench ends it too
        )
        return cls(process)

    def _future(self, event: str, run_id: str) -> asyncio.Future[dict[str, Any]]:
        key = (event, run_id)
        if key not in self._events:
            future = self._events[key] = asyncio.get_running_loop().create_future()
            if self._reader.done():
                future.set_exception(RuntimeError("the worker process has ended"))
        return self._events[key]

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            event = json.loads(line)
            future = self._future(event["event"], event.get("id", ""))
            if not future.done():
                future.set_result(event)
        for future in self._events.values():  # whoever waits learns it at once
            if not future.done():
                future.set_exception(RuntimeError("the worker process has ended"))

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())

    async def expect(self, event: str, run_id: str = "", timeout: float = 10.0) -> dict[str, Any]:
        """The worker's event ``event`` about ``run_id``, within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self._future(event, run_id)
        except TimeoutError:
            raise RuntimeError(
                f"no {event!r} from the worker for {run_id!r} within {timeout}s "
                f"(worker exit code: {self.process.returncode})"
            ) from None
        finally:
            self._events.pop((event, run_id), None)

    async def close(self) -> None:
        """Ask it to quit; kill it if it has not within 10 s."""
        process = self.process
        try:
            if process.returncode is None and process.stdin is not None:
                with contextlib.suppress(OSError):
                    self.send(op="quit")
                    process.stdin.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# -- Stop latency --------------------------------------------------------------------------


async def _subscribers(admin: Redis) -> set[str]:
    return {client["id"] for client in await admin.client_list(_type="pubsub")}


async def _wait_subscribed(admin: Redis, channel: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        [(_, count)] = await admin.pubsub_numsub(channel)
        if count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody subscribed to {channel} within {timeout}s")
        await asyncio.sleep(0.005)


@dataclass
class Stopper:
    """The bench's side of the Stop shapes: its registry, the worker, a plain client."""

    runs: Runs
    memory: Runs
    worker: Worker
    admin: Redis
    prefix: str
    channel: str  # the worker's wake-up channel
    own: set[str]  # the bench's own subscriber connection(s): never killed
    rng: random.Random
    samples: dict[str, list[float]] = field(default_factory=dict)
    odd: list[str] = field(default_factory=list)  # anything not as expected, for the notes
    serial: int = 0

    def _id(self, shape: str) -> str:
        self.serial += 1
        return f"{shape}-{self.serial}-{secrets.token_hex(4)}"

    def _add(self, shape: str, seconds: float) -> None:
        self.samples.setdefault(shape, []).append(seconds * 1e3)

    async def _seen(self, run_id: str, sent: float, timeout: float = 10.0) -> float:
        seen = await self.worker.expect("cancelled", run_id, timeout)
        ended = await self.worker.expect("ended", run_id)
        if ended["status"] != "cancelled":
            self.odd.append(f"{run_id} ended {ended['status']}")
        return float(seen["at"]) - sent

    async def _began(self, run_id: str) -> None:
        self.worker.send(op="start", id=run_id)
        await self.worker.expect("began", run_id)

    async def pubsub(self, record: bool = True) -> None:
        run_id = self._id("pubsub")
        await self._began(run_id)
        sent = time.monotonic()
        if not await self.runs.stop(run_id, owner=OWNER):
            self.odd.append(f"stop({run_id}) returned False")
        returned = time.monotonic() - sent
        seen = await self._seen(run_id, sent)
        if record:
            self._add(PUBSUB, seen)
            self._add(RETURNED, returned)

    async def killed(self) -> None:
        run_id = self._id("killed")
        await self._began(run_id)
        victims = await _subscribers(self.admin) - self.own
        for victim in victims:
            await self.admin.client_kill_filter(_id=victim)
        if not victims:
            self.odd.append("no worker subscriber to kill")
        sent = time.monotonic()
        if not await self.runs.stop(run_id, owner=OWNER):
            self.odd.append(f"stop({run_id}) returned False")
        self._add(KILLED, await self._seen(run_id, sent))
        await _wait_subscribed(self.admin, self.channel)  # the next Stop finds it listening

    async def lost(self) -> None:
        run_id = self._id("lost")
        await self._began(run_id)
        # A random phase against the worker's backstop timer, else every Stop would
        # land just after a re-read (the previous sample ended on one) and take 1 s.
        await asyncio.sleep(self.rng.uniform(0, 1.0))
        keys = [f"{self.prefix}{kind}:{run_id}" for kind in ("run", "stop", "prestop")]
        reason = json.dumps(["user", "stopped by id"])
        lost_channel = f"nobody-listens:{self.prefix}"  # the publish goes nowhere
        sent = time.monotonic()
        done = await self.admin.eval(CANCEL, 3, *keys, OWNER, reason, 3600, run_id, lost_channel)
        if not done:
            self.odd.append(f"the cancel script refused {run_id}")
        self._add(LOST, await self._seen(run_id, sent, timeout=5.0))

    async def polled(self) -> None:
        run_id = self._id("polled")
        self.worker.send(op="poll", id=run_id, phase=self.rng.uniform(0, POLL))
        await self.worker.expect("began", run_id)
        sent = time.monotonic()
        await self.admin.set(f"abort:{run_id}", 1, ex=60)
        self._add(POLLED, await self._seen(run_id, sent))

    async def in_memory(self) -> None:
        began = asyncio.Event()
        seen: list[float] = []

        async def held() -> None:
            began.set()
            try:
                await asyncio.sleep(HOLD)
            except asyncio.CancelledError:
                seen.append(time.monotonic())
                raise

        run = self.memory.start(held)
        async with asyncio.timeout(10):
            await began.wait()
        sent = time.monotonic()
        self.memory.cancel(run.id)
        async with asyncio.timeout(10):
            await run.wait()
        self._add(MEMORY, seen[0] - sent)


async def stop_latencies(url: str, sizes: Sizes) -> tuple[dict[str, list[float]], list[str]]:
    """Every Stop shape, interleaved round by round so drift spreads over all of them."""
    prefix = f"ckbench{secrets.token_hex(4)}:"
    admin = Redis.from_url(url, decode_responses=True)
    worker: Worker | None = None
    try:
        backend = RedisBackend(url, prefix=prefix)
        async with Runs(backend=backend) as runs, Runs() as memory:
            await _wait_subscribed(admin, f"{prefix}stops:{backend.worker}")
            own = await _subscribers(admin)  # before the worker exists: only ours
            worker = await Worker.spawn(url, prefix)
            ready = await worker.expect("ready", timeout=30)
            channel = f"{prefix}stops:{ready['worker']}"
            await _wait_subscribed(admin, channel)
            stopper = Stopper(runs, memory, worker, admin, prefix, channel, own, random.Random(7))
            for _ in range(10):  # scripts loaded, connections made
                await stopper.pubsub(record=False)
            for index in range(sizes.stops):
                await stopper.pubsub()
                await stopper.in_memory()
                if index % (sizes.stops // sizes.lost) == 0:
                    await stopper.killed()
                    await stopper.lost()
                if index % (sizes.stops // sizes.polled) == 0:
                    await stopper.polled()
            worker.send(op="stats")
            stats = await worker.expect("stats")
            return stopper.samples, [
                *stopper.odd,
                f"the worker's backend counted {stats['stats']}",
                *_warnings("the worker", stats["warnings"]),
            ]
    finally:
        if worker is not None:
            await worker.close()
        await admin.aclose()


def _warnings(who: str, messages: list[str]) -> list[str]:
    if not messages:
        return []
    return [f"{who} logged {len(messages)} cancelkit warnings; first: {messages[0]}"]


# -- cost per run --------------------------------------------------------------------------

TOP_LEVEL = ("evalsha", "script|exists", "script|load", "mget", "multi", "hello", "ping")


@dataclass(frozen=True)
class CostShape:
    label: str
    runs: int
    width: int  # runs started at once, then all awaited


def cost_shapes(sizes: Sizes) -> list[CostShape]:
    return [
        CostShape(f"one at a time, {sizes.sequential:,} runs", sizes.sequential, 1),
        CostShape(f"{sizes.concurrent:,} at once", sizes.concurrent, sizes.concurrent),
        CostShape(f"{sizes.concurrent:,} in waves of 50", sizes.concurrent, 50),
    ]


async def _trivial() -> None:
    return None


async def _info(admin: Redis, timeout: float = 5.0) -> dict[str, Any]:
    """``INFO`` once the command counts stop moving (the batched endings are written)."""
    deadline = time.monotonic() + timeout
    calls: dict[str, int] = {}
    while True:
        info = await admin.info("all")
        now = {k: v["calls"] for k, v in info.items() if k.startswith("cmdstat_")}
        moved = {k: v for k, v in now.items() if k != "cmdstat_info"} != {
            k: v for k, v in calls.items() if k != "cmdstat_info"
        }
        calls = now
        if not moved or time.monotonic() > deadline:
            reads, connections = info["total_reads_processed"], info["total_connections_received"]
            return {"calls": calls, "reads": reads, "connections": connections}
        await asyncio.sleep(0.05)


def _per_run(before: dict[str, Any], after: dict[str, Any], runs: int) -> dict[str, float]:
    calls = {
        key.removeprefix("cmdstat_"): (value - before["calls"].get(key, 0)) / runs
        for key, value in after["calls"].items()
    }
    info_calls = calls.pop("info", 0.0)
    per_run = {name: count for name, count in sorted(calls.items()) if count >= 0.005}
    # Each INFO of ours is one read of the server's; the other reads are the backend's.
    per_run["server reads"] = (after["reads"] - before["reads"]) / runs - info_calls
    per_run["new connections"] = (after["connections"] - before["connections"]) / runs
    return per_run


async def _cost(url: str | None, shape: CostShape, traffic: bool) -> dict[str, Any]:
    """µs per run of ``shape`` (and failed runs; with ``traffic``, Redis commands per run)."""
    backend = RedisBackend(url, prefix=f"ckcost{secrets.token_hex(4)}:") if url else None
    admin = Redis.from_url(url, decode_responses=True) if url and traffic else None
    try:
        async with Runs(backend=backend) as runs:
            for _ in range(20):  # warm: scripts loaded, a connection in the pool
                await runs.start(_trivial, owner=OWNER).wait()
            before = await _info(admin) if admin else None
            failed = 0
            start = time.perf_counter()
            for _ in range(shape.runs // shape.width):
                started = [runs.start(_trivial, owner=OWNER) for _ in range(shape.width)]
                for run in started:
                    failed += (await run.wait()).status != "completed"
            elapsed = time.perf_counter() - start
            result: dict[str, Any] = {"us": elapsed / shape.runs * 1e6, "failed": failed}
            if admin and before:
                result["traffic"] = _per_run(before, await _info(admin), shape.runs)
            return result
    finally:
        if admin is not None:
            await admin.aclose()


async def _floor(url: str, count: int) -> float:
    """µs of one redis-py EVALSHA round trip (a trivial script, the register's shape)."""
    client = Redis.from_url(url)
    try:
        script = client.register_script("return 1")
        await script()
        start = time.perf_counter()
        for _ in range(count):
            await script(keys=["k1", "k2", "k3", "k4"], args=[OWNER, "worker", 1.0, 3600, "id"])
        return (time.perf_counter() - start) / count * 1e6
    finally:
        await client.aclose()


def _timed(url: str | None, shape: CostShape, failures: list[int]) -> Callable[[], float]:
    def run() -> float:
        result = asyncio.run(_cost(url, shape, traffic=False))
        failures.append(int(result["failed"]))
        return float(result["us"])

    return run


def _floor_timed(url: str, count: int) -> Callable[[], float]:
    return lambda: asyncio.run(_floor(url, count))


@dataclass
class Cost:
    """One shape's medians, the most runs that failed in a repeat, the traffic."""

    shape: CostShape
    rows: list[Row]
    failed: int
    traffic: dict[str, float]

    def median(self, contestant: str) -> float:
        return next(row.median for row in self.rows if row.contestant == contestant)


def cost(url: str, sizes: Sizes) -> list[Cost]:
    """µs per run with and without the backend (interleaved repeats), then the traffic."""
    results = []
    for shape in cost_shapes(sizes):
        failures: list[int] = []
        contestants = {
            "Runs()": _timed(None, shape, []),
            "Runs(backend=Redis)": _timed(url, shape, failures),
        }
        if shape.width == 1:
            contestants[FLOOR] = _floor_timed(url, shape.runs)
        rows = measure(
            f"start + wait a trivial run, {shape.label} (per run)",
            contestants,
            unit="us",
            repeats=sizes.repeats,
            baseline="Runs()",
        )
        for row in rows:
            row.target = "+1 round trip" if row.contestant == "Runs(backend=Redis)" else None
        traffic = asyncio.run(_cost(url, shape, traffic=True))["traffic"]
        results.append(Cost(shape, rows, max(failures), traffic))
    return results


# -- report ----------------------------------------------------------------------------------

FLOOR = "redis-py EVALSHA round trip"


def latency_rows(samples: dict[str, list[float]]) -> list[Row]:
    rows = []
    for shape, values in samples.items():
        for label, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
            rows.append(
                Row(
                    f"Stop until the run's task sees it: {shape.strip()} ({len(values)} stops)",
                    label,
                    "ms",
                    percentile(values, q),
                    min(values),
                    target=TARGETS.get(shape) if label == "p99" else None,
                    samples=values if label == "p50" else [],
                )
            )
    return rows


def print_latencies(samples: dict[str, list[float]]) -> None:
    header = (
        f"{'Stop until the run task sees it (one at a time)':<48} "
        f"{'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'n':>5}  target"
    )
    print(header)
    print("-" * len(header))
    for shape in (PUBSUB, RETURNED, KILLED, LOST, POLLED, MEMORY):
        values = samples.get(shape)
        if values:
            p50, p99, top = (percentile(values, q) for q in (0.5, 0.99, 1.0))
            print(
                f"{shape:<48} {p50:>9.3f} {p99:>9.3f} {top:>9.3f} {len(values):>5}  "
                f"{TARGETS.get(shape, '')}"
            )


def print_cost(costs: list[Cost]) -> list[Row]:
    """The cost table (medians of the repeats); returns the traffic as rows for the JSON."""
    header = (
        f"{'start + wait a trivial run (per run)':<36} {'Runs() us':>9} {'+Redis us':>9} "
        f"{'added us':>9} {'failed':>6} {'reads':>6} {'conns':>6}  Redis commands per run"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for result in costs:
        plain, redis = result.median("Runs()"), result.median("Runs(backend=Redis)")
        traffic = result.traffic
        sent = ", ".join(f"{name} {traffic[name]:.2f}" for name in TOP_LEVEL if name in traffic)
        print(
            f"{result.shape.label:<36} {plain:>9.1f} {redis:>9.1f} {redis - plain:>9.1f} "
            f"{result.failed:>6} {traffic['server reads']:>6.2f} "
            f"{traffic['new connections']:>6.3f}  {sent}"
        )
        comparison = f"Redis traffic per run, {result.shape.label}"
        rows.append(Row(comparison, "failed runs (most in a repeat)", "n", result.failed, 0))
        rows += [Row(comparison, name, "n", count, count) for name, count in traffic.items()]
    floor = next(row.median for result in costs for row in result.rows if row.contestant == FLOOR)
    print(
        f"(reads: the server's read events per run, ~ round trips; conns: new connections "
        f"per run; one {FLOOR} alone: {floor:.1f} us)"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    args = parser.parse_args()
    sizes = Sizes.of(args.quick)
    started = time.monotonic()
    warnings = Captured.install()
    with RedisServer() as server:
        samples, notes = asyncio.run(stop_latencies(server.url, sizes))
        notes += _warnings("the bench (Stop shapes)", warnings.take())
        costs = cost(server.url, sizes)
        notes += _warnings("the bench (cost)", warnings.take())
    print_latencies(samples)
    print()
    traffic_rows = print_cost(costs)
    print()
    for note in notes:
        print(f"note: {note}")
    cost_rows = [row for result in costs for row in result.rows]
    path = save("distributed", latency_rows(samples) + cost_rows + traffic_rows)
    print(f"\nwritten: {path} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
