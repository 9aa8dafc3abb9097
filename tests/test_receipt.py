"""The Stop receipt: every run says what its Stop stopped, and when, layer by layer."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from cancelkit import (
    CancelReason,
    Runs,
    current_token,
    guard_stream,
    keep_partial,
    spawn,
    to_thread,
)
from cancelkit._receipt import record, tool_finished, tool_prevented, tool_started

from .helpers import wait_until

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "Stop pressed")


def looping_tool(steps: list[int]) -> None:
    token = current_token(required=True)
    while True:
        token.check()
        steps.append(1)
        time.sleep(0.01)


async def endless() -> Any:
    while True:
        yield b"chunk"
        await anyio.sleep(0.01)


async def everything(steps: list[int], streamed: list[bytes]) -> None:
    """A run with one of each layer: a child task, a child run, a thread, a stream."""
    keep_partial("the text so far")
    spawn(anyio.sleep(60), name="child-task")
    Runs().start(anyio.sleep, 60, run_id="child-run")
    async with anyio.create_task_group() as group:
        group.start_soon(to_thread, looping_tool, steps)
        async with guard_stream(endless(), token=current_token(), name="model") as chunks:
            async for chunk in chunks:
                streamed.append(chunk)


async def test_a_stopped_run_says_what_stopped_when_in_every_layer() -> None:
    runs = Runs()
    steps: list[int] = []
    streamed: list[bytes] = []
    run = runs.start(everything, steps, streamed, run_id="r1")
    await wait_until(lambda: len(steps) >= 2 and len(streamed) >= 2 and len(run.children) == 2)
    assert run.receipt is None  # not before the end
    asked = time.time()
    assert runs.cancel("r1", USER) is True
    outcome = await run.wait()
    receipt = outcome.receipt
    assert receipt is run.receipt  # built once

    assert (receipt.status, receipt.reason) == ("cancelled", USER)
    assert receipt.source == "Runs.cancel in thread MainThread"
    assert receipt.asked_at is not None
    assert asked - 0.5 <= receipt.asked_at <= receipt.ended_at
    assert receipt.stopped_in is not None
    assert receipt.stopped_in >= 0
    assert outcome.partial == "the text so far"

    ends = {(layer.layer, layer.name): layer for layer in receipt.layers}
    assert ends["task", "child-task"].outcome == "cancelled"
    assert ends["child run", "child-run"].outcome == "cancelled"
    assert ends["thread", "looping_tool"].outcome == "cancelled"  # it saw its token
    assert ends["stream", "model"].outcome == "closed"
    assert receipt.layers[-1].layer == "run"
    assert receipt.layers[-1].outcome == "cancelled"
    for layer in receipt.layers:  # every layer stopped after the Stop, before the run's end
        assert layer.after_stop is not None
        assert 0 <= layer.after_stop <= receipt.stopped_in + 1e-6
        assert receipt.asked_at <= layer.at <= receipt.ended_at + 1e-6
    assert [layer.at for layer in receipt.layers] == sorted(layer.at for layer in receipt.layers)
    json.dumps(receipt.to_dict())  # ready for an API


async def test_a_run_never_stopped_has_a_receipt_with_no_stop() -> None:
    async def work() -> int:
        await spawn(anyio.lowlevel.checkpoint(), name="quick").wait()
        return await to_thread(sum, [1, 2])

    run = Runs().start(work)
    assert await run.result() == 3
    receipt = run.receipt
    assert receipt is not None
    assert (receipt.status, receipt.reason, receipt.source) == ("completed", None, None)
    assert (receipt.asked_at, receipt.stopped_in) == (None, None)
    assert [(layer.layer, layer.outcome) for layer in receipt.layers] == [
        ("task", "completed"),
        ("thread", "returned"),
        ("run", "completed"),
    ]
    assert all(layer.after_stop is None for layer in receipt.layers)
    assert receipt.to_dict()["stopped_in_ms"] is None


async def test_the_source_says_where_the_stop_came_from() -> None:
    runs = Runs()
    by_deadline = runs.start(anyio.sleep, 60, timeout=0.01)
    await by_deadline.wait()
    from_thread = runs.start(anyio.sleep, 60, run_id="t")
    stopper = threading.Thread(target=runs.cancel, args=("t",), name="stopper")
    stopper.start()
    stopper.join()
    by_run = runs.start(anyio.sleep, 60)
    by_run.cancel(source="the Stop button")
    at_shutdown = runs.start(anyio.sleep, 60)
    await anyio.lowlevel.checkpoint()
    await runs.shutdown(5)
    sources = [
        (await run.wait()).receipt.source for run in (by_deadline, from_thread, by_run, at_shutdown)
    ]
    assert sources == [
        "the run's deadline",
        "Runs.cancel in thread stopper",
        "the Stop button in thread MainThread",
        "Runs.shutdown in thread MainThread",
    ]


async def test_a_child_runs_usage_counts_in_its_parent() -> None:
    async def child() -> None:
        record("stream", "m", "closed", input_tokens=3, output_tokens=7, estimated=True)

    async def parent() -> None:
        record("stream", "m", "finished", input_tokens=5, output_tokens=10)
        await Runs().start(child).wait()

    run = Runs().start(parent)
    await run.wait()
    receipt = run.receipt
    assert receipt is not None
    assert (receipt.input_tokens, receipt.output_tokens, receipt.estimated) == (8, 17, True)


async def test_tool_calls_started_finished_and_prevented_are_counted() -> None:
    async def agent() -> None:
        tool_started("search")
        tool_finished("search", "completed")
        tool_started("fetch")
        tool_prevented("write", 2)
        await anyio.sleep(60)

    run = Runs().start(agent)
    await wait_until(lambda: run._tools_started == 2)
    run.cancel(USER)
    receipt = (await run.wait()).receipt
    assert (receipt.tools_started, receipt.tools_finished, receipt.tools_prevented) == (2, 1, 2)
    tools = [(layer.name, layer.outcome) for layer in receipt.layers if layer.layer == "tool"]
    assert tools == [("search", "completed"), ("write", "prevented")]


async def test_partial_is_kept_when_handed_back_while_unwinding() -> None:
    async def answer() -> str:
        text = ""
        try:
            while True:
                text += "word "
                await anyio.sleep(0.01)
        finally:
            keep_partial(text)  # on the way out of the Stop

    run = Runs().start(answer)
    await wait_until(lambda: run._partial is None and run.status == "running")
    await anyio.sleep(0.05)
    run.cancel(USER)
    outcome = await run.wait()
    assert outcome.status == "cancelled"
    assert isinstance(outcome.partial, str)
    assert outcome.partial.startswith("word ")


async def test_outside_a_run_reports_go_nowhere() -> None:
    record("stream", "m", "closed")
    tool_started("x")
    keep_partial("nothing")
    assert await to_thread(sum, [1]) == 1


def test_current_token_required_outside_any_run_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="stoppable"):
        current_token(required=True)
    assert not current_token().cancelled  # the default stays a fresh token
