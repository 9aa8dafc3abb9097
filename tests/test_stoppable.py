"""``stoppable``: a sync tool that a Stop stops, whoever awaits it."""

from __future__ import annotations

import inspect
import threading
import time
import typing

import anyio
import pytest

from cancelkit import CancelReason, RunCancelled, Runs, current_token, stoppable

from .helpers import stop_landed, wait_until

pytestmark = pytest.mark.anyio


def lookup(city: str, days: int = 1) -> str:
    """Look up the weather in a city.

    Args:
        city: the city's name.
        days: how many days ahead.
    """
    return f"sunny in {city} for {days} day(s)"


def test_the_signature_name_and_docstring_are_kept_for_tool_schemas() -> None:
    wrapped = stoppable(lookup)
    assert inspect.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "lookup"
    assert wrapped.__doc__ == lookup.__doc__
    assert inspect.signature(wrapped) == inspect.signature(lookup)
    assert typing.get_type_hints(wrapped) == {"city": str, "days": int, "return": str}
    assert wrapped.__wrapped__ is lookup  # type: ignore[attr-defined]


async def test_it_returns_the_value_and_raises_the_error() -> None:
    assert await stoppable(lookup)("Paris", days=2) == "sunny in Paris for 2 day(s)"

    @stoppable(grace=0.5)
    def broken() -> None:
        raise KeyError("no such city")

    with pytest.raises(KeyError, match="no such city"):
        await broken()


def counting(steps: list[float], started: threading.Event) -> None:
    token = current_token(required=True)
    started.set()
    while True:
        token.check()
        steps.append(time.monotonic())
        time.sleep(0.01)


async def test_a_cancelled_caller_stops_the_thread_within_one_check() -> None:
    steps: list[float] = []
    started = threading.Event()
    tool = stoppable(counting)
    async with anyio.create_task_group() as group:
        group.start_soon(tool, steps, started)
        await wait_until(lambda: started.is_set() and len(steps) >= 3)
        group.cancel_scope.cancel()
    # The caller waited for the thread: it has returned, so nothing runs after here.
    stopped_at, count = time.monotonic(), len(steps)
    await anyio.sleep(0.05)
    assert len(steps) == count
    assert all(step <= stopped_at for step in steps)


async def test_a_stop_of_the_run_reaches_the_tool_with_its_reason_and_counts_it() -> None:
    steps: list[float] = []
    started = threading.Event()
    tool = stoppable(counting)
    reason = CancelReason("user", "Stop pressed")
    runs = Runs()
    run = runs.start(tool, steps, started, run_id="r")
    await wait_until(lambda: len(steps) >= 3)
    assert runs.cancel("r", reason)
    outcome = await run.wait()
    assert (outcome.status, outcome.reason) == ("cancelled", reason)
    # At most the step under way when the Stop landed: the next check raises.
    assert sum(step > stop_landed(run) for step in steps) <= 1
    receipt = outcome.receipt
    assert (receipt.tools_started, receipt.tools_finished) == (1, 1)
    ends = {(layer.layer, layer.name): layer.outcome for layer in receipt.layers}
    assert ends["thread", "counting"] == "cancelled"
    assert ends["tool", "counting"] == "cancelled"


async def test_a_tool_that_sees_its_token_ends_its_run_with_the_tokens_reason() -> None:
    @stoppable
    def checks() -> None:
        current_token().check()

    run = Runs().start(checks)
    run.token.cancel(CancelReason("budget", "spent"))
    with pytest.raises(RunCancelled) as caught:
        await run.result()
    assert caught.value.reason.kind == "budget"


def test_bad_uses_are_clear_errors() -> None:
    async def already_async() -> None:
        return None

    with pytest.raises(TypeError, match="already async"):
        stoppable(already_async)
    with pytest.raises(TypeError, match="needs a function"):
        stoppable(42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="grace"):
        stoppable(grace=-1)
