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

from cancelkit import Background, CancelReason, RunCancelled, TaskState

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
    threading.Thread(target=background.close).start()
    with anyio.fail_after(2):
        await handle.wait()
    assert handle.state is TaskState.CANCELLED
    assert log.cancelled == ["pump"]


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
        await handle.wait()
    assert handle.state is TaskState.FAILED
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
        assert done.state is TaskState.COMPLETED
        assert done.cancel() is False  # already finished
        assert stopped.cancel(CancelReason("user")) is True
        await stopped.wait()
        assert stopped.state is TaskState.CANCELLED


@pytest.mark.anyio
async def test_background_logs_nothing_on_a_clean_close(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cancelkit"):
        async with Background() as background:
            background.spawn(anyio.sleep(10))
    assert caplog.records == []
