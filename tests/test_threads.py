"""to_thread: the worker sees its token, Stop reaches it, stragglers are named."""

from __future__ import annotations

import contextvars
import functools
import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.abc
import pytest

from cancelkit import (
    AbandonedThreadWarning,
    Cancelled,
    CancelReason,
    CancelToken,
    RunCancelled,
    Runs,
    current_token,
    thread_stats,
    to_thread,
)
from cancelkit._threads import MAX_WORKERS, Executor, run_sync_shielded

from .helpers import cancel_once_started, threads_at_work, wait_until

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "stop pressed")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def cooperative(
    seconds: float, seen: list[CancelReason], started: threading.Event | None = None
) -> str:
    """A sync tool that checks its token between small units of work."""
    token = current_token()
    if started is not None:
        started.set()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            token.check()
            time.sleep(0.001)
    except Cancelled as stop:
        seen.append(stop.reason)
        raise
    return "finished"


async def test_the_result_and_errors_come_back() -> None:
    assert await to_thread(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await to_thread(divmod, 1, 0)


async def test_the_worker_sees_its_own_token_and_the_callers_context() -> None:
    request_id.set("req-7")
    outer = CancelToken()

    def inspect_context() -> tuple[bool, str, str]:
        token = current_token()
        return token is current_token(), request_id.get(), threading.current_thread().name

    same, rid, name = await to_thread(inspect_context, token=outer)
    assert same
    assert rid == "req-7"
    assert "inspect_context" in name


async def test_a_cancelled_caller_cancels_the_token_and_waits_for_the_thread() -> None:
    seen: list[CancelReason] = []
    started = threading.Event()
    await cancel_once_started(started, lambda: to_thread(cooperative, 5, seen, started))
    assert len(seen) == 1
    assert seen[0].kind == "parent"  # the awaiting task was cancelled, no finer reason known


async def test_the_callers_token_reason_reaches_the_thread() -> None:
    run_token = CancelToken()
    seen: list[CancelReason] = []
    async with anyio.create_task_group() as group:
        group.start_soon(_cancel_later, run_token, 0.03)
        with pytest.raises(RunCancelled) as info:
            await to_thread(cooperative, 5, seen, token=run_token)
    assert seen == [USER]
    assert info.value.reason is USER


async def _cancel_later(token: CancelToken, delay: float) -> None:
    await anyio.sleep(delay)
    token.cancel(USER)


async def test_a_tool_that_swallows_exceptions_still_stops() -> None:
    steps: list[int] = []

    def careless() -> str:
        token = current_token()
        for step in range(10_000):
            try:
                token.check()
                time.sleep(0.001)
                steps.append(step)
            except Exception:  # must not catch Cancelled
                steps.append(-1)
        return "ignored the stop"

    started = time.monotonic()
    with anyio.move_on_after(0.03):
        await to_thread(careless)
    assert time.monotonic() - started < 5  # not the 10 s it takes when the Stop is eaten
    assert -1 not in steps


async def test_a_thread_that_ignores_its_token_is_reported_by_name() -> None:
    release, started = threading.Event(), threading.Event()

    def stubborn() -> None:
        started.set()
        release.wait(5)

    before = thread_stats()["abandoned_running"]
    running = thread_stats()["running"]
    with pytest.warns(AbandonedThreadWarning, match="stubborn"):
        await cancel_once_started(started, lambda: to_thread(stubborn, grace=0.05))
    assert thread_stats()["abandoned_running"] == before + 1
    assert thread_stats()["running"] == running  # counted as abandoned, not as running
    release.set()
    for _ in range(200):
        if thread_stats()["abandoned_running"] == before:
            break
        await anyio.sleep(0.01)
    assert thread_stats()["abandoned_running"] == before


async def test_running_counts_a_job_until_it_has_returned() -> None:
    release = threading.Event()
    before = thread_stats()["running"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(to_thread, release.wait, 5)
        await wait_until(lambda: thread_stats()["running"] == before + 1)
        release.set()
    # The caller has resumed: the count dropped before it was told, however slow the
    # worker is to get back to its queue.
    assert thread_stats()["running"] == before


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_threads_at_work_sees_a_pool_job_until_it_returns_not_after() -> None:
    before = set(threading.enumerate())
    job_may_return, handing_back, may_go_back = (threading.Event() for _ in range(3))
    with ThreadPoolExecutor(1, thread_name_prefix="probe") as pool:
        future = pool.submit(job_may_return.wait, 5)  # all its frames are in threading.py
        await wait_until(lambda: threads_at_work(before) == ["probe_0"])

        def callback(_: object) -> None:
            handing_back.set()
            may_go_back.wait(5)

        # Done: the thread is in the future's callbacks, on its way back to the queue.
        future.add_done_callback(callback)
        job_may_return.set()
        await wait_until(handing_back.is_set)
        assert threads_at_work(before) == []
        may_go_back.set()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_threads_at_work_sees_a_new_thread_and_an_anyio_job_until_they_return() -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    plain = threading.Thread(target=release.wait, args=(5,), name="plain")
    plain.start()  # all its frames are in threading.py
    assert threads_at_work(before) == ["plain"]
    release.set()
    plain.join()
    assert threads_at_work(before) == []

    def anyio_workers_at_work() -> int:  # this loop's pool may have idle ones from before
        return threads_at_work(set()).count("AnyIO worker thread")

    release = threading.Event()
    for job, argument in ((release.wait, 5.0), (time.sleep, 0.3)):  # Python, then C
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, job, argument)
            await wait_until(lambda: anyio_workers_at_work() == 1)
            release.set()
        assert anyio_workers_at_work() == 0  # handing its result back, or between jobs


async def test_grace_bounds_how_long_a_cancelled_caller_waits() -> None:
    release, running = threading.Event(), threading.Event()

    def stubborn() -> None:
        running.set()
        release.wait(10)

    started = time.monotonic()
    with pytest.warns(AbandonedThreadWarning):
        await cancel_once_started(running, lambda: to_thread(stubborn, grace=0.1))
    assert time.monotonic() - started < 5  # bounded by the grace, not the thread's 10 s
    release.set()


async def test_the_pool_is_bounded_and_queued_calls_still_run() -> None:
    gate = threading.Event()
    running = peak = 0
    lock = threading.Lock()

    def blocked() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(5)
        with lock:
            running -= 1

    async with anyio.create_task_group() as group:
        for _ in range(60):
            group.start_soon(to_thread, blocked)
        await anyio.sleep(0.2)
        assert thread_stats()["queued"] >= 1
        gate.set()
    assert peak <= 40


async def test_a_queued_call_cancelled_before_it_starts_never_runs() -> None:
    gate = threading.Event()
    ran: list[int] = []
    async with anyio.create_task_group() as group:
        for _ in range(40):
            group.start_soon(to_thread, gate.wait, 5)
        await anyio.sleep(0.05)
        with anyio.move_on_after(0.02):
            await to_thread(ran.append, 1)
        gate.set()
    assert ran == []


async def test_bad_arguments_are_refused() -> None:
    async def coroutine_function() -> None:
        pass

    with pytest.raises(TypeError, match="fn must be callable"):
        await to_thread(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is a coroutine function"):
        await to_thread(coroutine_function)  # type: ignore[unused-coroutine]
    with pytest.raises(TypeError, match="token must be a CancelToken"):
        await to_thread(print, token="t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        await to_thread(print, grace=-1)


class Gate:
    """Sync calls that block until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()

    def blocked(self) -> str:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.release.wait(20)
        finally:
            with self._lock:
                self.running -= 1
        return "released"


async def _fill_the_pool(gate: Gate, group: anyio.abc.TaskGroup) -> None:
    for _ in range(MAX_WORKERS):
        group.start_soon(to_thread, gate.blocked)
    await wait_until(lambda: gate.running == MAX_WORKERS)  # every worker is now taken


async def test_a_call_that_finds_no_free_worker_is_withdrawn_with_a_clear_error() -> None:
    gate = Gate()
    late: list[str] = []
    async with anyio.create_task_group() as group:
        await _fill_the_pool(gate, group)
        with pytest.raises(RunCancelled, match="no worker thread was free") as refused:
            await to_thread(late.append, "ran", queue_timeout=0.1)
        assert refused.value.reason.kind == "error"
        gate.release.set()
    await to_thread(time.sleep, 0.05)  # a later call goes through
    assert late == []  # the refused call was withdrawn: it never runs later


async def test_one_run_cannot_take_every_worker_thread() -> None:
    # One prompt asking for ninety sync tool calls uses its own share of the pool;
    # another user's run still gets a worker at once.
    gate = Gate()
    runs = Runs(threads_per_run=8)

    async def greedy() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(90):
                group.start_soon(to_thread, gate.blocked)

    async def other() -> str:
        return await to_thread(lambda: "served", queue_timeout=5)

    hog = runs.start(greedy)
    await wait_until(lambda: gate.running == 8)
    assert await runs.start(other).result() == "served"
    assert gate.running == 8
    gate.release.set()
    assert (await hog.wait()).status == "completed"
    assert gate.calls == 90
    assert gate.peak == 8


async def test_a_run_and_its_child_runs_share_one_quota_made_on_first_use() -> None:
    gate = Gate()
    runs = Runs(threads_per_run=3)

    async def child() -> None:
        await to_thread(gate.blocked)

    async def parent() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(to_thread, gate.blocked)
            children = [runs.start(child) for _ in range(3)]
        for run in children:
            assert (await run.wait()).status == "completed"

    idle = runs.start(anyio.sleep, 0)
    await idle.wait()
    assert idle._threads is None  # never called a thread: never made a quota
    hog = runs.start(parent)
    await wait_until(lambda: gate.running == 3)
    await anyio.sleep(0.05)
    assert gate.running == 3  # the child runs wait for the parent's quota
    gate.release.set()
    assert (await hog.wait()).status == "completed"
    assert gate.calls == 6
    assert gate.peak == 3
    assert hog._threads is not None
    assert hog._threads.limit == 3


async def test_abandoned_threads_are_bounded_and_new_calls_refused_past_the_bound() -> None:
    release = threading.Event()
    started: list[int] = []

    def stubborn() -> None:
        started.append(1)
        release.wait(20)

    async def abandon_up_to_the_limit() -> None:
        while (room := thread_stats()["abandoned_limit"] - thread_stats()["abandoned_running"]) > 0:
            batch = min(room, MAX_WORKERS)
            started.clear()
            async with anyio.create_task_group() as group:
                for _ in range(batch):
                    group.start_soon(functools.partial(to_thread, stubborn, grace=0.01))

                def all_started(count: int = batch) -> bool:
                    return len(started) == count

                await wait_until(all_started)  # cancelling them now abandons them
                group.cancel_scope.cancel()

    before = thread_stats()
    with pytest.warns(AbandonedThreadWarning):
        await abandon_up_to_the_limit()
    stats = thread_stats()
    assert stats["abandoned_running"] == stats["abandoned_limit"]
    threads_before = set(threading.enumerate())
    with pytest.raises(RunCancelled, match="ignored their cancel token") as refused:
        await to_thread(time.sleep, 0)
    assert refused.value.reason.kind == "error"
    # Refused without a new thread (an idle one may end meanwhile: a count could drop).
    assert set(threading.enumerate()) - threads_before == set()
    assert thread_stats()["refused"] == stats["refused"] + 1
    release.set()
    for _ in range(500):
        if thread_stats()["abandoned_running"] == before["abandoned_running"]:
            break
        await anyio.sleep(0.01)
    assert await to_thread(lambda: "works again") == "works again"


async def test_a_shielded_job_that_cannot_start_in_time_is_withdrawn_never_run_later() -> None:
    # Before, the caller got None back while the job stayed queued and ran later
    # (a commit reported as not done, then done).
    executor = Executor(1, name="cancelkit-test")
    gate = Gate()
    ran: list[str] = []
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(run_sync_shielded, executor, gate.blocked, timeout=20))
        await wait_until(lambda: gate.running == 1)
        with pytest.raises(TimeoutError, match="withdrawn, nothing done"):
            await run_sync_shielded(executor, ran.append, "late", timeout=0.1)
        gate.release.set()
    assert await run_sync_shielded(executor, lambda: "next", timeout=5) == "next"
    assert ran == []
    executor.close()


async def test_a_started_shielded_job_is_interrupted_and_waited_for_never_abandoned() -> None:
    executor = Executor(1, name="cancelkit-test")
    stop = threading.Event()

    def slow() -> str:
        if not stop.wait(20):
            return "ran to the end"
        raise InterruptedError("interrupted")

    with pytest.raises(TimeoutError, match="interrupted after") as timed_out:
        await run_sync_shielded(executor, slow, timeout=0.05, on_timeout=stop.set)
    assert isinstance(timed_out.value.__cause__, InterruptedError)
    assert executor.stats()["abandoned_running"] == 0
    executor.close()


async def test_the_receipt_names_a_partial_by_its_function() -> None:
    async def work() -> int:
        quotient: int = (await to_thread(functools.partial(divmod, 7), 2))[0]
        return quotient

    run = Runs().start(work)
    await run.wait()
    assert run.receipt is not None
    threads = [(s.name, s.outcome) for s in run.receipt.layers if s.layer == "thread"]
    assert threads == [("divmod", "returned")]


class _Held:
    """An argument or result whose freeing can be seen (through a weak reference)."""


async def test_an_idle_worker_holds_nothing_of_its_last_call() -> None:
    """A worker waits for its next job (up to a minute) holding nothing of the last:
    not its arguments, not its result, not its caller's waiter (and so not the
    caller's event loop)."""
    argument = _Held()
    result = await to_thread(lambda _held: _Held(), argument)
    refs = [weakref.ref(argument), weakref.ref(result)]
    del argument, result
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
