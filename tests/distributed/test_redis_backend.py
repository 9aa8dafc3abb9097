"""Stop across processes on a real Redis: the run lives in one process, the Stop comes
through another, and whatever happens in between (a lost wake-up, a Redis restart, a
worker killed), the Stop lands or is refused clearly, and no run is left ``running``.
"""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import statistics
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as redis

from cancelkit import BackendUnavailable, CancelReason, Runs
from cancelkit.distributed import RedisBackend
from cancelkit.stores import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from cancelkit.distributed import RedisServer

    from .conftest import Worker

pytestmark = pytest.mark.anyio

ALICE, MALLORY = "alice", "mallory"


@pytest.fixture
async def here(redis_url: str, prefix: str) -> AsyncIterator[Runs]:
    """This test process's registry on the shared Redis."""
    async with Runs(backend=RedisBackend(redis_url, prefix=prefix, lease=3, backstop=0.5)) as runs:
        yield runs


def is_event(kind: str, run_id: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate for :meth:`Worker.expect`: the event ``kind`` of run ``run_id``."""
    return lambda e: e["event"] == kind and e["id"] == run_id


def began(worker: Worker, run_id: str) -> Callable[[dict[str, Any]], bool]:
    return is_event("began", run_id)


async def test_a_stop_through_another_process_lands_and_both_see_how_it_ended(
    here: Runs, workers: Any, redis_url: str
) -> None:
    worker = await workers(redis_url)
    worker.send(op="start", id="r1", owner=ALICE, seconds=60)
    await worker.expect(began(worker, "r1"))
    running = await here.find("r1", owner=ALICE)
    assert running is not None
    assert (running.status, running.worker) == ("running", worker.name)

    assert await here.stop("r1", CancelReason("user", "Stop pressed"), owner=ALICE) is True
    ended = await worker.ended("r1")
    assert (ended["status"], ended["reason"]) == ("cancelled", ["user", "Stop pressed"])
    assert worker.seen("cancelled", "r1") is not None  # the task itself was cancelled

    async def seen_here() -> Any:
        return await here.find("r1", owner=ALICE)

    await _until(lambda info: info.status == "cancelled", seen_here)
    info = await here.find("r1")
    assert info is not None
    assert info.reason == CancelReason("user", "Stop pressed")
    assert info.ended_at is not None
    since = len(worker.events)
    worker.send(op="find", id="r1", owner=ALICE)
    there = await worker.expect(lambda e: e["event"] == "find", since=since)
    assert (there["status"], there["kind"]) == ("cancelled", "user")
    assert await here.stop("r1", owner=ALICE) is False  # a second Stop changes nothing
    assert await worker.quit() == 0


async def test_claimed_says_when_any_process_can_find_the_run(
    here: Runs, workers: Any, redis_url: str
) -> None:
    stopper = await workers(redis_url)
    run = here.start(asyncio.sleep, 60, run_id="visible", owner=ALICE)
    assert await run.claimed() is True
    # From now on any process finds it: no window where another worker says "unknown".
    assert (await stopper.stop("visible", owner=ALICE))["result"] is True
    assert (await run.wait()).status == "cancelled"
    again = here.start(asyncio.sleep, 0, run_id="visible", owner=ALICE)
    assert await again.claimed() is False  # the id was used: refused before it ran
    assert isinstance((await again.wait()).error, ValueError)
    assert await stopper.quit() == 0


async def test_a_stop_before_the_run_starts_wins_and_the_function_never_runs(
    here: Runs, workers: Any, redis_url: str
) -> None:
    worker = await workers(redis_url)
    # A client-chosen id, stopped before any run has it: kept, not dropped.
    assert await here.stop("chosen", CancelReason("user", "early"), owner=ALICE) is False
    # Someone else's early Stop of an id does not reach this owner's run.
    assert await here.stop("other", owner=MALLORY) is False
    worker.send(op="start", id="chosen", owner=ALICE, seconds=60)
    worker.send(op="start", id="other", owner=ALICE, seconds=0.2)
    ended = await worker.ended("chosen")
    assert (ended["status"], ended["reason"]) == ("cancelled", ["user", "early"])
    assert worker.seen("began", "chosen") is None  # never called
    assert (await worker.ended("other"))["status"] == "completed"
    assert await worker.quit() == 0


async def test_a_late_stop_never_reaches_a_newer_run_and_ids_are_never_reused(
    here: Runs, workers: Any, redis_url: str
) -> None:
    worker = await workers(redis_url)
    worker.send(op="start", id="once", owner=ALICE, seconds=0.05)
    assert (await worker.ended("once"))["status"] == "completed"
    await _until(lambda info: info.status == "completed", lambda: here.find("once"))
    assert await here.stop("once", owner=ALICE) is False  # late: it has ended
    worker.send(op="start", id="once", owner=ALICE, seconds=60)  # the id again
    refused = await worker.expect(
        lambda e: e["event"] == "ended" and e["id"] == "once" and e["status"] == "failed"
    )
    assert "never reused" in refused["error"]
    assert [e["event"] for e in worker.events if e.get("id") == "once"] == [
        "began",
        "ended",
        "ended",
    ]  # the second run's function never ran
    info = await here.find("once")
    assert info is not None
    assert info.status == "completed"  # the first run's record, untouched
    assert await worker.quit() == 0


async def test_someone_elses_run_is_refused_exactly_like_an_unknown_id(
    here: Runs, workers: Any, redis_url: str
) -> None:
    worker = await workers(redis_url)
    worker.send(op="start", id="mine", owner=ALICE, seconds=60)
    await worker.expect(began(worker, "mine"))
    assert await here.find("mine", owner=MALLORY) is None
    assert await here.find("no-such-run", owner=MALLORY) is None
    assert await here.stop("mine", owner=MALLORY) is False
    assert await here.stop("no-such-run", owner=MALLORY) is False
    # ... and from another process too
    stopper = await workers(redis_url)
    assert (await stopper.stop("mine", owner=MALLORY))["result"] is False
    await asyncio.sleep(0.3)
    assert worker.seen("ended", "mine") is None  # still running
    assert (await stopper.stop("mine", owner=ALICE))["result"] is True
    assert (await worker.ended("mine"))["status"] == "cancelled"
    assert await worker.quit() == 0
    assert await stopper.quit() == 0


async def test_a_lost_wake_up_is_caught_by_the_backstop(
    here: Runs, workers: Any, redis_url: str, prefix: str
) -> None:
    backstop = 1.0
    worker = await workers(redis_url, "--backstop", str(backstop))
    admin = redis.Redis.from_url(redis_url)
    try:
        for n in range(3):
            run_id = f"lost-{n}"
            worker.send(op="start", id=run_id, owner=ALICE, seconds=60)
            await worker.expect(began(worker, run_id))
            channel = f"{prefix}stops:{worker.name}"
            for _ in range(200):  # until its subscription (back from the last kill) is live
                if dict(await admin.pubsub_numsub(channel)).get(channel.encode()):
                    break
                await asyncio.sleep(0.05)
            assert await admin.client_kill_filter(_type="pubsub") >= 1
            sent = time.monotonic()
            assert await here.stop(run_id, owner=ALICE) is True  # published to no one
            cancelled = await worker.expect(is_event("cancelled", run_id))
            # The bound: one backstop interval, plus a busy machine's slack.
            assert cancelled["at"] - sent < backstop + 2.0
    finally:
        await admin.aclose()
    assert await worker.quit() == 0


async def test_a_redis_restart_loses_no_stop_with_persistence_and_runs_reannounce_without(
    own_redis: RedisServer, workers: Any, prefix: str
) -> None:
    url = own_redis.url
    worker = await workers(url, "--backstop", "0.5")
    async with Runs(backend=RedisBackend(url, prefix=prefix, backstop=0.5)) as here:
        # Written before a crash: an early Stop, kept in the append-only file.
        assert await here.stop("after-restart", owner=ALICE) is False
        worker.send(op="start", id="through", owner=ALICE, seconds=60)
        await worker.expect(began(worker, "through"))
        own_redis.kill()
        assert await _raises_unavailable(here.stop("elsewhere", owner=ALICE))
        own_redis.start()
        # The worker reconnects by itself; the early Stop survived the crash.
        worker.send(op="start", id="after-restart", owner=ALICE, seconds=60)
        ended = await worker.ended("after-restart")
        assert ended["status"] == "cancelled"
        assert worker.seen("began", "after-restart") is None
        assert await _eventually_true(lambda: here.stop("through", owner=ALICE))
        assert (await worker.ended("through"))["status"] == "cancelled"

        # Without persistence Redis forgets everything; the worker writes its running
        # runs again when it resubscribes, so a Stop still finds them.
        worker.send(op="start", id="forgotten", owner=ALICE, seconds=60)
        await worker.expect(began(worker, "forgotten"))
        own_redis.kill()
        for name in ("appendonlydir", "appendonly.aof"):
            _remove(own_redis.directory / name)
        own_redis.start()
        assert await _eventually_true(lambda: here.stop("forgotten", owner=ALICE))
        assert (await worker.ended("forgotten"))["status"] == "cancelled"
    assert await worker.quit() == 0


async def test_local_stop_works_while_redis_is_down_and_the_ending_is_written_after(
    own_redis: RedisServer, prefix: str
) -> None:
    async with Runs(backend=RedisBackend(own_redis.url, prefix=prefix, backstop=0.3)) as here:
        run = here.start(asyncio.sleep, 60, run_id="local", owner=ALICE)
        assert await run.claimed()  # registered in Redis
        own_redis.kill()
        assert here.cancel("local", CancelReason("user", "here")) is True
        assert (await run.wait()).status == "cancelled"
        with pytest.raises(BackendUnavailable, match="Redis"):
            await here.stop("on-another-worker", owner=ALICE)
        # A new run cannot claim its id: it fails before its function is called.
        refused = here.start(asyncio.sleep, 0, run_id="while-down", owner=ALICE)
        outcome = await refused.wait()
        assert outcome.status == "failed"
        assert isinstance(outcome.error, BackendUnavailable)
        own_redis.start()
        assert here.backend is not None
        other = Runs(backend=RedisBackend(own_redis.url, prefix=prefix))
        async with other:
            await _until(lambda info: info.status == "cancelled", lambda: other.find("local"))


async def test_opening_on_an_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    backend = RedisBackend(f"unix://{tmp_path}/nothing.sock", timeout=1)
    with pytest.raises(BackendUnavailable, match="Redis cannot be reached"):
        async with Runs(backend=backend):
            pass


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_redis_backend_refuses_trio_clearly(redis_url: str) -> None:
    with pytest.raises(RuntimeError, match="asyncio"):
        async with Runs(backend=RedisBackend(redis_url)):
            pass


async def test_bad_arguments_are_refused_before_anything_starts(here: Runs) -> None:
    with pytest.raises(TypeError, match="owner must be a non-empty str"):
        here.start(asyncio.sleep, 0, owner=object())
    with pytest.raises(TypeError, match="owner must be a non-empty str"):
        await here.stop("x", owner="")
    with pytest.raises(ValueError, match="Redis URL"):
        RedisBackend("  ")
    with pytest.raises(ValueError, match="backstop"):
        RedisBackend("redis://127.0.0.1", backstop=float("nan"))
    run = here.start(asyncio.sleep, 0, run_id="x" * 300)
    assert (await run.wait()).status == "failed"  # an id too long to share
    assert await here.stop("y" * 10_000) is False
    assert await here.find("y" * 10_000) is None
    with pytest.raises(RuntimeError, match="async with runs"):
        Runs(backend=RedisBackend("redis://127.0.0.1")).start(asyncio.sleep, 0)


async def test_a_killed_workers_runs_are_settled_by_its_lease_with_nothing_written(
    here: Runs, workers: Any, redis_url: str, tmp_path: Path
) -> None:
    database = tmp_path / "app.db"
    store = SQLiteStore(database)
    await store.setup()
    await store.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, run_id TEXT, body TEXT)")
    worker = await workers(redis_url, "--lease", "3", "--store", str(database))
    ids = [f"held-{n}" for n in range(5)]
    for run_id in ids:
        worker.send(op="start", id=run_id, owner=ALICE, seconds=60)
    for run_id in ids:
        await worker.expect(is_event("staged", run_id))  # its transaction has begun
    worker.kill()
    await worker.process.wait()

    for run_id in ids:  # settled by this process's keeper once the lease expired
        info = await _until(
            lambda info: info.status == "cancelled",
            functools.partial(here.find, run_id),
            limit=30,
        )
        assert info.reason is not None
        assert info.reason.kind == "shutdown"
        assert "lease expired" in info.reason.message
    assert await here.stop(ids[0], owner=ALICE) is False  # settled: nothing to stop
    await store.reconcile()
    assert await store.execute("SELECT * FROM notes") == []
    rows = await store.execute("SELECT status FROM cancelkit_runs")
    assert [status for (status,) in rows] == ["cancelled"] * len(ids)
    await store.aclose()


async def test_a_worker_paused_past_its_lease_ends_its_runs_as_the_others_were_told(
    here: Runs, workers: Any, redis_url: str
) -> None:
    worker = await workers(redis_url, "--lease", "3", "--backstop", "0.5")
    worker.send(op="start", id="paused", owner=ALICE, seconds=120)
    await worker.expect(began(worker, "paused"))
    worker.process.send_signal(signal.SIGSTOP)  # a long GC pause, a frozen VM
    try:
        info = await _until(lambda info: info.status == "cancelled", lambda: here.find("paused"))
    finally:
        worker.process.send_signal(signal.SIGCONT)
    assert info.reason is not None
    assert info.reason.kind == "shutdown"
    # Back, the worker learns its lease lapsed and ends the run the way the others
    # were told it ended, instead of running on behind a record that says cancelled.
    ended = await worker.ended("paused")
    assert (ended["status"], ended["reason"][0]) == ("cancelled", "shutdown")
    final = await here.find("paused")
    assert final is not None
    assert (final.status, final.worker) == ("cancelled", worker.name)
    assert await worker.quit() == 0


@pytest.mark.slow
async def test_load_four_workers_a_thousand_runs_a_third_stopped_through_another_worker(
    workers: Any, redis_url: str
) -> None:
    pool = [await workers(redis_url) for _ in range(4)]
    rng = random.Random(7)
    plan = {f"load-{n}": (pool[n % 4], n % 3 == 0) for n in range(1000)}
    for run_id, (holder, stopped) in plan.items():
        holder.send(op="start", id=run_id, owner=ALICE, seconds=60 if stopped else 0.5)
    for run_id, (holder, _) in plan.items():
        await holder.expect(began(holder, run_id), timeout=60)

    to_stop = [run_id for run_id, (_, stopped) in plan.items() if stopped]
    sent: dict[str, float] = {}
    through: dict[str, Worker] = {}
    for run_id in to_stop:
        holder = plan[run_id][0]
        through[run_id] = rng.choice([w for w in pool if w is not holder])
        sent[run_id] = time.monotonic()
        through[run_id].send(op="stop", id=run_id, owner=ALICE)
    latencies = []
    for run_id in to_stop:
        answer = await through[run_id].expect(is_event("stop", run_id), timeout=60)
        assert answer["result"] is True, answer  # every Stop landed
        cancelled = await plan[run_id][0].expect(is_event("cancelled", run_id), timeout=60)
        latencies.append((cancelled["at"] - sent[run_id]) * 1e3)
    statuses: dict[str, int] = {}
    for run_id, (holder, stopped) in plan.items():
        ended = await holder.ended(run_id, timeout=60)
        assert ended["status"] == ("cancelled" if stopped else "completed")
        statuses[ended["status"]] = statuses.get(ended["status"], 0) + 1
    assert statuses == {"cancelled": len(to_stop), "completed": 1000 - len(to_stop)}
    for worker in pool:
        assert await worker.quit() == 0  # clean exits: nothing left running in them
    latencies.sort()
    print(
        f"\n1000 runs on 4 workers, {len(to_stop)} stopped through another worker:"
        f" p50 {statistics.median(latencies):.2f} ms,"
        f" p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f} ms, max {latencies[-1]:.2f} ms"
    )


# -- helpers ---------------------------------------------------------------------------


async def _until(
    accept: Callable[[Any], bool], find: Callable[[], Any], limit: float = 20.0
) -> Any:
    """Poll ``await find()`` until its answer is accepted; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    info = None
    while time.monotonic() < deadline:
        info = await find()
        if info is not None and accept(info):
            return info
        await asyncio.sleep(0.05)
    raise AssertionError(f"still not there after {limit}s: {info}")


async def _eventually_true(call: Callable[[], Any], limit: float = 20.0) -> bool:
    """Retry ``await call()`` (through a reconnect) until it answers True."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if await call():
                return True
        except BackendUnavailable:
            pass
        await asyncio.sleep(0.1)
    return False


async def _raises_unavailable(call: Any) -> bool:
    try:
        await call
    except BackendUnavailable:
        return True
    return False


def _remove(path: Path) -> None:
    import shutil  # noqa: PLC0415

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
