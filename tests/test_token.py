"""CancelToken: thread-safe cancel with a reason, waiting, callbacks, children."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import tracemalloc
import weakref
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from cancelkit import Cancelled, CancelReason, CancelToken, current_token, link

from .helpers import run_scenario

if TYPE_CHECKING:
    from collections.abc import Sequence

USER = CancelReason("user", "stop pressed")


def test_first_reason_wins_and_later_cancels_are_noops() -> None:
    token = CancelToken()
    assert not token.cancelled
    assert token.reason is None
    assert token.cancel(USER) is True
    assert token.cancel(CancelReason("timeout")) is False
    assert token.cancelled
    assert token.reason is USER


def test_default_reason_is_user() -> None:
    token = CancelToken()
    token.cancel()
    assert token.reason == CancelReason("user")


def test_cancel_rejects_a_reason_that_is_not_a_cancel_reason() -> None:
    token = CancelToken()
    with pytest.raises(TypeError, match="reason must be a CancelReason"):
        token.cancel("user")  # type: ignore[arg-type]
    assert not token.cancelled


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_bad_timeouts_are_refused(timeout: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        CancelToken(timeout=timeout)  # type: ignore[arg-type]


def test_check_raises_cancelled_with_the_reason() -> None:
    token = CancelToken()
    token.check()
    token.cancel(USER)
    with pytest.raises(Cancelled) as info:
        token.check()
    assert info.value.reason is USER


def test_sync_code_that_swallows_exceptions_still_stops_on_check() -> None:
    token = CancelToken()
    done: list[int] = []

    def tool() -> None:
        for step in range(100):
            try:
                if step == 3:
                    token.cancel(USER)
                token.check()
                done.append(step)
            except Exception:  # a careless tool: must not turn Stop into "keep going"
                done.append(-1)

    with pytest.raises(Cancelled):
        tool()
    assert done == [0, 1, 2]


def test_on_cancel_runs_once_with_the_reason() -> None:
    token = CancelToken()
    seen: list[CancelReason] = []
    token.on_cancel(seen.append)
    token.cancel(USER)
    token.cancel(CancelReason("timeout"))
    assert seen == [USER]


def test_on_cancel_runs_at_once_when_already_cancelled() -> None:
    token = CancelToken()
    token.cancel(USER)
    seen: list[CancelReason] = []
    handle = token.on_cancel(seen.append)
    assert seen == [USER]
    assert handle.remove() is False


def test_removed_callback_never_runs() -> None:
    token = CancelToken()
    seen: list[CancelReason] = []
    handle = token.on_cancel(seen.append)
    assert handle.remove() is True
    assert handle.remove() is False
    token.cancel(USER)
    assert seen == []


def test_on_cancel_refuses_a_non_callable() -> None:
    with pytest.raises(TypeError, match="callback must be callable"):
        CancelToken().on_cancel(42)  # type: ignore[arg-type]


def test_a_failing_callback_is_logged_and_does_not_break_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancelToken()
    child = token.child()
    seen: list[str] = []

    def broken(_reason: CancelReason) -> None:
        raise RuntimeError("callback bug")

    token.on_cancel(broken)
    token.on_cancel(lambda reason: seen.append(reason.kind))
    with caplog.at_level(logging.ERROR, logger="cancelkit"):
        assert token.cancel(USER) is True
    assert seen == ["user"]
    assert child.reason is USER
    assert "callback bug" in caplog.text


def test_thousand_threads_racing_cancel_exactly_one_wins() -> None:
    token = CancelToken()
    barrier = threading.Barrier(1000)
    wins: list[int] = []
    lock = threading.Lock()

    def racer(i: int) -> None:
        barrier.wait()
        if token.cancel(CancelReason("user", str(i))):
            with lock:
                wins.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert token.reason == CancelReason("user", str(wins[0]))


def test_children_follow_their_parent_with_its_reason() -> None:
    parent = CancelToken()
    child = parent.child()
    grandchild = child.child()
    other = parent.child()
    other.cancel(CancelReason("timeout"))
    assert not parent.cancelled  # a child never cancels its parent
    parent.cancel(USER)
    assert child.reason is USER
    assert grandchild.reason is USER
    assert other.reason == CancelReason("timeout")
    late = parent.child()
    assert late.reason is USER


def test_a_deep_chain_of_children_does_not_hit_the_recursion_limit() -> None:
    root = CancelToken()
    tokens = [root]
    for _ in range(20_000):
        tokens.append(tokens[-1].child())
    root.cancel(USER)
    assert all(token.reason is USER for token in tokens)


def test_dropped_children_do_not_accumulate_in_the_parent() -> None:
    parent = CancelToken()
    kept = parent.child()
    for _ in range(10_000):
        parent.child()
    gc.collect()
    children = parent._children
    assert children is not None
    assert len(children) == 1
    parent.cancel(USER)
    assert kept.cancelled


@pytest.mark.slow
def test_a_million_short_lived_children_keep_memory_flat() -> None:
    parent = CancelToken()
    for _ in range(10_000):  # warm up allocator free lists
        parent.child()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(1_000_000):
            child = parent.child()
            child.check()
        del child
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024, f"grew by {after - before} bytes"


def test_timeout_fires_with_kind_timeout() -> None:
    token = CancelToken(timeout=0.02)
    seen = threading.Event()
    token.on_cancel(lambda _reason: seen.set())
    assert seen.wait(2)
    assert token.reason is not None
    assert token.reason.kind == "timeout"


def test_an_expired_token_is_not_kept_by_the_timer_thread() -> None:
    """The one timer thread waits for the next deadline, which may never come,
    holding nothing of the token it fired last."""
    token = CancelToken(timeout=0.01)
    fired = threading.Event()
    token.on_cancel(lambda _reason: fired.set())
    assert fired.wait(2)
    ref = weakref.ref(token)
    del token
    deadline = time.monotonic() + 2
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.005)
    assert ref() is None


def test_child_deadline_is_its_own() -> None:
    parent = CancelToken()
    child = parent.child(timeout=0.02)
    deadline = time.monotonic() + 2
    while not child.cancelled and time.monotonic() < deadline:
        time.sleep(0.005)
    assert child.reason is not None
    assert child.reason.kind == "timeout"
    assert not parent.cancelled


def test_deadlines_use_one_thread_not_one_per_token() -> None:
    before = threading.active_count()
    tokens = [CancelToken(timeout=60) for _ in range(500)]
    assert threading.active_count() <= before + 1
    for token in tokens:
        token.cancel()


def test_cancelled_deadlines_do_not_fire_later() -> None:
    token = CancelToken(timeout=0.02)
    token.cancel(USER)
    time.sleep(0.05)
    assert token.reason is USER


def test_link_follows_the_first_of_its_tokens() -> None:
    user, deadline = CancelToken(), CancelToken()
    linked = link(user, deadline)
    deadline.cancel(CancelReason("timeout"))
    user.cancel(USER)
    assert linked.reason == CancelReason("timeout")


def test_link_of_an_already_cancelled_token_is_cancelled() -> None:
    done = CancelToken()
    done.cancel(USER)
    assert link(CancelToken(), done).reason is USER


def test_link_refuses_non_tokens() -> None:
    with pytest.raises(TypeError, match="argument 1 is not a CancelToken"):
        link(CancelToken(), "nope")  # type: ignore[arg-type]


def test_link_of_nothing_is_a_fresh_token() -> None:
    assert not link().cancelled


def test_current_token_outside_any_work_is_a_fresh_private_token() -> None:
    first, second = current_token(), current_token()
    first.cancel(USER)
    assert not second.cancelled
    second.check()


@pytest.mark.anyio
async def test_wait_returns_the_reason() -> None:
    token = CancelToken()
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep, 0)
        await anyio.sleep(0.01)
        token.cancel(USER)
    assert await token.wait() is USER


@pytest.mark.anyio
async def test_wait_wakes_when_cancelled_from_a_thread_without_a_loop() -> None:
    token = CancelToken()
    thread = threading.Timer(0.02, token.cancel, args=(USER,))
    thread.start()
    with anyio.fail_after(2):
        reason = await token.wait()
    thread.join()
    assert reason is USER


@pytest.mark.anyio
async def test_wait_wakes_on_the_tokens_deadline() -> None:
    token = CancelToken(timeout=0.02)
    with anyio.fail_after(2):
        reason = await token.wait()
    assert reason.kind == "timeout"


@pytest.mark.anyio
async def test_a_cancelled_wait_leaves_no_callback_behind() -> None:
    token = CancelToken()
    with anyio.move_on_after(0.01):
        await token.wait()
    assert not token._callbacks


@pytest.mark.anyio
async def test_cancel_wakes_a_thousand_waiters() -> None:
    token = CancelToken()
    woken: list[CancelReason] = []

    async def waiter() -> None:
        woken.append(await token.wait())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(1000):
                group.start_soon(waiter)
            await anyio.sleep(0.01)
            token.cancel(USER)
    assert len(woken) == 1000
    assert all(reason is USER for reason in woken)


@pytest.mark.anyio
async def test_waiters_that_leave_take_back_their_registration_and_nothing_else() -> None:
    """On trio the waiters of one loop share one wake-up, registered once; the last
    waiter to leave takes it back, and the token's other callbacks stay."""
    token = CancelToken()
    seen: list[CancelReason] = []
    token.on_cancel(seen.append)
    woken: list[CancelReason] = []

    async def leaving() -> None:
        with anyio.move_on_after(0.01):
            await token.wait()

    async def staying() -> None:
        woken.append(await token.wait())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(leaving)
            group.start_soon(staying)
            await anyio.sleep(0.05)  # the three have left; one still waits
            token.cancel(USER)
    assert woken == [USER]
    assert seen == [USER]

    token = CancelToken()
    token.on_cancel(seen.append)
    for _ in range(2):
        with anyio.move_on_after(0.01):
            await token.wait()
    assert token._callbacks is not None
    assert list(token._callbacks.values()) == [seen.append]


def test_waiters_on_two_loops_in_two_threads_are_each_woken() -> None:
    token = CancelToken()
    results: dict[str, CancelReason] = {}
    ready = threading.Barrier(3)

    def run(backend: str) -> None:
        async def main() -> None:
            ready.wait()
            results[backend] = await token.wait()

        anyio.run(main, backend=backend)

    threads = [threading.Thread(target=run, args=(b,)) for b in ("asyncio", "trio")]
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(0.02)
    token.cancel(USER)
    for thread in threads:
        thread.join(5)
    assert results == {"asyncio": USER, "trio": USER}


@pytest.mark.parametrize("mode", ["signal", "finalizer"])
def test_cancel_is_safe_from_a_signal_handler_and_a_finalizer(mode: str) -> None:
    # The handler and the finalizer interrupt the main thread while it holds the
    # very token's registry lock; a blocking cancel() would deadlock there.
    run_scenario("cancel_in_handlers", mode)


class Stopper:
    """A task stopper that records what it is asked to stop."""

    def __init__(self) -> None:
        self.stopped: list[object] = []

    def cancel(self, what: object, _reason: CancelReason | None = None, /) -> None:
        self.stopped.append(what)

    def cancel_many(self, targets: Sequence[object], _reason: CancelReason | None, /) -> None:
        self.stopped.extend(targets)


@pytest.mark.parametrize("registered", ["the task alone", "a callback too"])
def test_a_cancel_landing_inside_arming_stops_the_task_once(registered: str) -> None:
    """A task's stopper is armed without the token's lock (the caller, then the
    target). A cancel that lands between the two (a signal handler, another thread)
    must neither take a half-published stopper nor lose it: the task is stopped
    exactly once, itself. With the task alone the cancel takes its short way (no
    walk); with a callback, the walk."""
    token = CancelToken()
    if registered == "a callback too":
        token.on_cancel(lambda _reason: None)
    stopper = Stopper()
    stopped = stopper.stopped
    target = object()
    landed: list[bool] = []

    def between_the_two(frame: Any, event: str, _arg: object) -> Any:
        if frame.f_code is not CancelToken._arm.__code__:
            return None

        def on_line(frame: Any, event: str, _arg: object) -> Any:
            half = token._stop_caller is not None and token._stop_target is None
            if event == "line" and half and not landed:
                landed.append(True)
                token.cancel(CancelReason("user", "landed mid-arm"))
            return on_line

        return on_line

    sys.settrace(between_the_two)
    try:
        token._arm(stopper, target)
    finally:
        sys.settrace(None)
    assert landed == [True]
    assert stopped == [target]


@pytest.mark.parametrize("registered", ["the task alone", "a callback too"])
def test_a_cancel_during_a_registration_leaves_the_task_to_it(registered: str) -> None:
    """A cancel never waits for the token's lock: one that comes while a
    registration holds it (another thread, or this thread's own code a signal
    handler interrupted) leaves the task to that registration, which stops it,
    once, as it releases the lock."""
    token = CancelToken()
    if registered == "a callback too":
        token.on_cancel(lambda _reason: None)
    stopper = Stopper()
    target = object()
    token._arm(stopper, target)
    with token._lock:  # a registration under way
        assert token.cancel(USER) is True
        assert stopper.stopped == []  # left to the registration
    token._after_registration()  # what the registration does once it has released it
    assert stopper.stopped == [target]
    token._after_registration()
    assert stopper.stopped == [target]  # once


@pytest.mark.parametrize("registered", ["the task alone", "a callback too"])
def test_a_stopper_that_fails_is_logged_and_the_cancel_still_counts(
    registered: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = CancelToken()
    ran: list[CancelReason] = []
    if registered == "a callback too":
        token.on_cancel(ran.append)

    class Broken(Stopper):
        def cancel_many(self, targets: Sequence[object], _reason: CancelReason | None, /) -> None:
            raise RuntimeError("the loop is broken")

    token._arm(Broken(), object())
    with caplog.at_level(logging.ERROR, logger="cancelkit"):
        assert token.cancel(USER) is True
    assert token.reason is USER
    assert "the loop is broken" in caplog.text
    assert ran == ([USER] if registered == "a callback too" else [])
