"""Background: work owned by an object, closable from any task, thread or finalizer."""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import cancelkit._background
from cancelkit import (
    Background,
    CancelReason,
    CancelToken,
    RunCancelled,
    Runs,
    current_token,
)

from .helpers import Log

ROOT = Path(__file__).parent.parent
TRIO_GENERATOR_NOTICE = "was garbage collected before it had been exhausted"


def run_scenario(backend: str, implementation: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.scenarios.owned_background", backend, implementation],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_naive_task_group_owner_breaks_when_finalised(backend: str) -> None:
    # The bug this module exists for: proof that the scenario catches it.
    result = run_scenario(backend, "naive")
    problems = result["problems"]
    assert not result["state"]["loop_still_running"]
    assert problems["run_raised"], problems
    if backend == "asyncio":
        assert any(
            "cancel scope in a different task" in p for p in problems["loop_exception_handler"]
        )
    else:
        assert "TrioInternalError" in problems["run_raised"][0]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_background_survives_the_same_scenario_silently(backend: str) -> None:
    result = run_scenario(backend, "background")
    problems = result["problems"]
    # trio always warns that the scenario's own generator was dropped unexhausted
    # (that is the scenario, not the client); nothing else may be reported.
    problems["warnings"] = [w for w in problems["warnings"] if TRIO_GENERATOR_NOTICE not in w]
    assert problems == {
        "loop_exception_handler": [],
        "unraisable": [],
        "warnings": [],
        "log_records": [],
        "run_raised": [],
    }
    assert result["state"] == {"loop_still_running": True, "background_work_stopped": True}


@pytest.mark.anyio
async def test_spawn_in_one_task_and_aclose_from_another() -> None:
    log = Log()
    background = Background("client")

    async def starter() -> None:
        background.spawn(log.child("reader", 10))
        background.spawn(log.child("heartbeat", 10))

    async with anyio.create_task_group() as group:
        group.start_soon(starter)
    await anyio.sleep(0.01)
    assert len(background.tasks) == 2

    async def closer() -> list[str]:
        return await background.aclose()

    async with anyio.create_task_group() as group:
        group.start_soon(closer)
    assert sorted(log.cancelled) == ["heartbeat", "reader"]
    assert background.tasks == []
    assert background.closed


@pytest.mark.anyio
async def test_sync_close_from_a_finalizer_stops_the_work() -> None:
    log = Log()

    class Client:
        def __init__(self) -> None:
            self.background = Background("client")
            self.background.spawn(log.child("pump", 10))

        def __del__(self) -> None:
            self.background.close()

    client = Client()
    await anyio.sleep(0.01)
    handle = client.background.tasks[0]
    del client
    gc.collect()
    with anyio.fail_after(2):
        await handle.wait()
    assert log.cancelled == ["pump"]


@pytest.mark.anyio
async def test_close_from_another_thread_stops_the_work() -> None:
    log = Log()
    background = Background()
    handle = background.spawn(log.child("pump", 10))
    await anyio.sleep(0.01)
    closer = threading.Thread(target=background.close)
    closer.start()
    with anyio.fail_after(2):
        await handle.wait()
    closer.join(5)
    assert not closer.is_alive()
    assert handle.status == "cancelled"
    assert log.cancelled == ["pump"]


@pytest.mark.anyio
async def test_a_close_landing_inside_a_spawn_still_stops_that_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each task has its own token (no shared root): close() cancels the tasks it
    # finds. A close from another thread can land after a spawn passed its "closed?"
    # check and before its task is listed: that spawn cancels its own task. The
    # close is made to land exactly there.
    why = CancelReason("shutdown", "closed from a thread")
    background = Background()
    first = background.spawn(anyio.sleep(3600))
    real_start = cancelkit._background.start_task  # type: ignore[attr-defined]

    def start_then_close(*args: Any, **kwargs: Any) -> Any:
        handle = real_start(*args, **kwargs)
        closer = threading.Thread(target=background.close, args=(why,))
        closer.start()
        closer.join()
        return handle

    monkeypatch.setattr(cancelkit._background, "start_task", start_then_close)
    late = background.spawn(anyio.sleep(3600))
    with anyio.fail_after(5):
        await first.wait()
        await late.wait()
    assert (first.status, late.status) == ("cancelled", "cancelled")
    assert first.token.reason == late.token.reason == why
    assert background.tasks == []


@pytest.mark.anyio
async def test_close_never_waits_for_the_objects_lock() -> None:
    # A finalizer may call close() in a thread that was interrupted inside spawn(),
    # holding the object's lock: close() must not wait for it (it would never come).
    background = Background()
    handle = background.spawn(anyio.sleep(3600))

    def finalizer_inside_spawn() -> None:
        with background._lock:  # what spawn() holds as it lists a task
            background.close()

    closer = threading.Thread(target=finalizer_inside_spawn, daemon=True)
    closer.start()
    await anyio.to_thread.run_sync(closer.join, 5)
    assert not closer.is_alive(), "close() waited for the lock its own thread held"
    with anyio.fail_after(5):
        await handle.wait()
    assert handle.status == "cancelled"


@pytest.mark.anyio
async def test_the_close_reason_reaches_the_tasks() -> None:
    background = Background()
    handle = background.spawn(anyio.sleep(10))
    await background.aclose(reason=CancelReason("shutdown", "SIGTERM"))
    with pytest.raises(RunCancelled) as info:
        await handle.result()
    assert info.value.reason == CancelReason("shutdown", "SIGTERM")


@pytest.mark.anyio
async def test_spawning_on_a_closed_background_is_refused_without_warnings() -> None:
    background = Background("gone")
    background.close()
    with pytest.raises(RuntimeError, match="'gone' is closed"):
        background.spawn(anyio.lowlevel.checkpoint())
    gc.collect()


@pytest.mark.anyio
async def test_a_failing_task_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ValueError("reader crashed")

    async with Background("client") as background:
        handle = background.spawn(broken(), name="reader")
        with pytest.raises(ValueError, match="reader crashed"):
            await handle.wait()  # as awaiting an asyncio task: the error surfaces
    assert handle.done()
    assert handle.status == "failed"
    assert "reader" in caplog.text
    assert "reader crashed" in caplog.text
    with pytest.raises(ValueError, match="reader crashed"):
        await handle.result()


@pytest.mark.anyio
async def test_aclose_names_tasks_that_outlive_the_grace() -> None:
    background = Background("client")

    async def stubborn() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.2)

    handle = background.spawn(stubborn(), name="stubborn")
    await anyio.sleep(0.01)
    with pytest.warns(RuntimeWarning, match="stubborn"):
        assert await background.aclose(grace=0.02) == ["stubborn"]
    await handle.wait()


@pytest.mark.anyio
async def test_task_handles_report_their_ending() -> None:
    async def value() -> int:
        await anyio.lowlevel.checkpoint()
        return 7

    async with Background() as background:
        done = background.spawn(value())
        stopped = background.spawn(anyio.sleep(10))
        assert await done.result() == 7
        assert done.status == "completed"
        assert done.cancel() is False  # already finished
        assert stopped.cancel(CancelReason("user")) is True
        await stopped.wait()
        assert stopped.status == "cancelled"


@pytest.mark.anyio
async def test_background_logs_nothing_on_a_clean_close(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cancelkit"):
        async with Background() as background:
            background.spawn(anyio.sleep(10))
    assert caplog.records == []


@pytest.mark.anyio
async def test_work_owned_by_an_object_does_not_belong_to_the_run_that_started_it() -> None:
    # Before, a run started inside a Background task became a child of whichever
    # run had called start(), and that run's normal end cancelled it (kind parent).
    runs = Runs()
    background = Background("client")
    inner: list[Any] = []
    started = anyio.Event()

    async def read_loop() -> None:
        inner.append(runs.start(anyio.sleep, 10))
        inner.append(current_token())
        started.set()
        await anyio.sleep(10)

    async def request() -> str:
        background.spawn(read_loop())
        await started.wait()  # the request's run is still running meanwhile
        return "answered"

    run = runs.start(request)
    assert await run.result() == "answered"
    await anyio.lowlevel.checkpoint()
    child_run, token = inner
    assert child_run.status == "running"  # not cancelled with the request's run
    assert child_run.parent is None
    assert token is not run.token
    assert not token.cancelled
    assert background.tasks  # still running
    await background.aclose()
    child_run.cancel()
    await child_run.wait()


@pytest.mark.anyio
async def test_a_background_can_be_tied_to_a_token_on_purpose() -> None:
    owner = CancelToken()
    background = Background("session", token=owner)
    handle = background.spawn(anyio.sleep(10))
    owner.cancel(CancelReason("user", "logged out"))
    with pytest.raises(RunCancelled) as stopped:
        await handle.result()
    assert stopped.value.reason == CancelReason("user", "logged out")
    await background.aclose()
    with pytest.raises(TypeError, match="CancelToken"):
        Background("x", token="not a token")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_aclose_can_wait_without_a_limit_and_close_newest_first() -> None:
    closed: list[str] = []

    async def part(name: str, cleanup: float) -> None:
        try:
            await anyio.sleep(10)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(cleanup)
            closed.append(name)

    background = Background("stack")
    for name in ("connection", "session", "reader"):
        background.spawn(part(name, 0.02 if name == "reader" else 0))
    await anyio.lowlevel.checkpoint()
    assert await background.aclose(grace=None, order="reverse") == []
    assert closed == ["reader", "session", "connection"]  # as an exit stack unwinds
    with pytest.raises(ValueError, match="order"):
        await Background().aclose(order="sideways")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_task_that_waited_on_its_own_token_is_still_stopped_by_it() -> None:
    """Waiting on a token registers a wake-up beside the task's own stopper; leaving
    the wait takes back the wake-up only."""

    async def body() -> None:
        with anyio.move_on_after(0.01):
            await current_token().wait()
        await anyio.sleep(10)

    async with Background("waited") as background:
        handle = background.spawn(body())
        await anyio.sleep(0.05)
        handle.cancel(CancelReason("user", "stop"))
        with anyio.fail_after(2):
            await handle.wait()
        assert handle.status == "cancelled"
