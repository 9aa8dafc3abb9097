"""Sync runs: the Runs API for sync code in a thread, with no event loop anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from typing import Any

import anyio
import pytest

from cancelkit import (
    Cancelled,
    CancelReason,
    RunCancelled,
    Runs,
    current_token,
    to_thread,
)

from .helpers import cancel_once_started, stop_landed

USER = CancelReason("user", "Stop pressed")
STEP = 0.01


def steps(log: list[float], limit: int = 1000) -> str:
    """A sync agent loop: 10 ms steps, checking its token between them."""
    token = current_token()
    for _ in range(limit):
        token.check()
        log.append(time.monotonic())
        time.sleep(STEP)
    return "done"


def no_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def test_a_sync_run_completes_with_its_value_and_a_receipt() -> None:
    runs = Runs()
    seen: list[object] = []

    def work(a: int, b: int) -> int:
        run = runs.get("r")
        assert run is not None
        seen.append(no_loop())
        seen.append(current_token() is run.token)
        return a + b

    assert runs.run_sync(work, 2, 3, run_id="r") == 5
    assert seen == [True, True]
    run = runs.get("r")
    assert run is not None
    assert (run.status, run.reason, run.done()) == ("completed", None, True)
    assert run.outcome is not None
    assert run.outcome.value == 5
    receipt = run.outcome.receipt
    assert [(layer.layer, layer.outcome) for layer in receipt.layers] == [
        ("thread", "returned"),
        ("run", "completed"),
    ]
    assert len(runs) == 0


def test_cancel_from_another_thread_stops_it_within_one_step() -> None:
    runs = Runs()
    log: list[float] = []
    answers: list[bool] = []
    answered: list[float] = []

    def stop() -> None:
        wait_for(lambda: len(log) >= 3)
        assert runs.get("agent") is not None
        assert runs.get("agent").status == "running"  # type: ignore[union-attr]
        answers.append(runs.cancel("agent", USER))
        answered.append(time.monotonic())
        answers.append(runs.cancel("agent", CancelReason("timeout")))  # idempotent

    stopper = threading.Thread(target=stop)
    stopper.start()
    with pytest.raises(RunCancelled) as info:
        runs.run_sync(steps, log, run_id="agent")
    ended = time.monotonic()
    stopper.join()
    assert info.value.reason is USER
    assert answers == [True, False]
    run = runs.get("agent")
    assert run is not None
    # Landed before the cancel returned; then at most the step under way.
    assert stop_landed(run) <= answered[0]
    assert sum(t > answered[0] for t in log) <= 1
    assert (run.status, run.reason) == ("cancelled", USER)
    receipt = run.outcome.receipt  # type: ignore[union-attr]
    assert receipt.source is not None
    assert receipt.source.startswith("Runs.cancel in thread")
    assert [(layer.layer, layer.outcome) for layer in receipt.layers] == [
        ("thread", "cancelled"),
        ("run", "cancelled"),
    ]
    assert receipt.stopped_in is not None
    saw = ended - stop_landed(run)
    print(f"stopped in {receipt.stopped_in * 1e3:.1f} ms, caller saw it {saw:.4f}s")
    assert runs.cancel("agent", USER) is False  # finished: as unknown


def test_a_stop_before_the_function_starts_means_it_never_runs() -> None:
    runs = Runs()
    called: list[bool] = []
    sync_run = runs.start_sync(run_id="early")
    statuses = [sync_run.run.status]
    assert runs.cancel("early", USER)
    statuses.append(sync_run.run.status)
    assert statuses == ["running", "cancelling"]
    with pytest.raises(Cancelled):
        sync_run.call(called.append, True)
    outcome = sync_run.finish()
    assert called == []
    assert (outcome.status, outcome.reason) == ("cancelled", USER)
    assert sync_run.finish() is outcome  # idempotent
    with pytest.raises(RunCancelled):
        sync_run.result()
    with pytest.raises(RuntimeError, match="finished"):
        sync_run.call(called.append, True)


def test_an_error_is_raised_as_itself_and_the_run_failed() -> None:
    runs = Runs()

    def broken() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        runs.run_sync(broken, run_id="f")
    run = runs.get("f")
    assert run is not None
    assert run.status == "failed"
    assert run.reason is not None
    assert run.reason.kind == "error"
    assert isinstance(run.outcome.error, KeyError)  # type: ignore[union-attr]


def test_an_error_caused_by_the_stop_is_a_cancel() -> None:
    runs = Runs()

    def unwinds_badly() -> None:
        while not current_token().cancelled:
            time.sleep(0.001)
        raise ConnectionError("the stream was shut down under me")

    def stop() -> None:
        wait_for(lambda: runs.get("x") is not None)  # a cancel before it starts finds no run
        assert runs.cancel("x", USER)

    stopper = threading.Thread(target=stop)
    stopper.start()
    with pytest.raises(RunCancelled):
        runs.run_sync(unwinds_badly, run_id="x")
    stopper.join()
    assert runs.get("x").status == "cancelled"  # type: ignore[union-attr]


def test_timeout_cancels_with_kind_timeout() -> None:
    runs = Runs()
    with pytest.raises(RunCancelled) as info:
        runs.run_sync(steps, [], timeout=0.05)
    assert info.value.reason.kind == "timeout"


def test_owner_and_bad_input() -> None:
    runs = Runs()
    owned: list[bool] = []

    def work() -> None:
        owned.append(runs.cancel("mine", USER, owner="bob"))  # someone else's: as unknown
        owned.append(runs.cancel("unknown", USER))
        with pytest.raises(ValueError, match="already active"):
            runs.run_sync(int, run_id="mine")

    runs.run_sync(work, run_id="mine", owner="alice")
    assert owned == [False, False]
    assert runs.get("mine", owner="bob") is None

    async def coro() -> None:
        pass

    with pytest.raises(TypeError, match="coroutine function"):
        runs.run_sync(coro)  # type: ignore[unused-coroutine]
    with pytest.raises(TypeError, match="sync function"):
        runs.run_sync(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        runs.run_sync(int, run_id="")
    with pytest.raises(TypeError, match="run_id"):
        runs.run_sync(int, run_id=7)  # type: ignore[arg-type]


def test_completion_racing_a_stop_has_one_winner() -> None:
    runs = Runs()
    for i in range(200):
        run_id = f"race-{i}"
        barrier = threading.Barrier(2)
        answer: list[bool] = []

        def stop(
            run_id: str = run_id, barrier: threading.Barrier = barrier, answer: list[bool] = answer
        ) -> None:
            barrier.wait()
            answer.append(runs.cancel(run_id, USER))

        stopper = threading.Thread(target=stop)
        stopper.start()
        with contextlib.suppress(RunCancelled):
            runs.run_sync(barrier.wait, run_id=run_id)
        stopper.join()
        status = runs.get(run_id).status  # type: ignore[union-attr]
        assert answer == [status == "cancelled"], (i, answer, status)


def test_run_sync_from_several_threads_at_once() -> None:
    runs = Runs()
    logs: dict[str, list[float]] = {f"t{i}": [] for i in range(8)}
    results: dict[str, object] = {}

    def worker(run_id: str) -> None:
        try:
            results[run_id] = runs.run_sync(steps, logs[run_id], 30, run_id=run_id)
        except RunCancelled as stopped:
            results[run_id] = stopped.reason

    threads = [threading.Thread(target=worker, args=(run_id,)) for run_id in logs]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(logs.values()))
    assert len(runs) == 8
    for i in range(0, 8, 2):
        assert runs.cancel(f"t{i}", USER)
    for thread in threads:
        thread.join()
    assert len(runs) == 0
    for i in range(8):
        run = runs.get(f"t{i}")
        assert run is not None
        if i % 2 == 0:
            assert (run.status, results[f"t{i}"]) == ("cancelled", USER)
        else:
            assert (run.status, results[f"t{i}"]) == ("completed", "done")


def test_inside_a_to_thread_worker_the_callers_stop_reaches_the_sync_run() -> None:
    runs = Runs()
    log: list[float] = []
    started = threading.Event()

    def agent() -> str:
        started.set()  # inside the sync run: its first step
        return steps(log)

    async def main() -> None:
        call = functools.partial(runs.run_sync, agent, run_id="inner")
        await cancel_once_started(started, lambda: to_thread(call))

    anyio.run(main)
    run = runs.get("inner")
    assert run is not None
    assert run.status == "cancelled"


def test_an_async_task_can_wait_for_a_sync_run() -> None:
    runs = Runs()
    sync_run = runs.start_sync(run_id="awaited")

    async def main() -> str:
        threading.Timer(0.02, sync_run.finish, args=("value",)).start()
        outcome = await sync_run.run.wait()
        return str(outcome.value)

    assert anyio.run(main) == "value"
