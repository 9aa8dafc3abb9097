"""Runs: cancel by id from anywhere, ownership, children, history, shutdown."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from cancelkit import (
    CancelReason,
    Run,
    RunCancelled,
    Runs,
    current_token,
    spawn,
    to_thread,
)
from cancelkit.testing import cancel_at_each_checkpoint

from .helpers import Log, released, wait_until

pytestmark = pytest.mark.anyio

USER = CancelReason("user", "Stop pressed")


async def echo(value: Any, delay: float = 0) -> Any:
    await anyio.sleep(delay)
    return value


async def test_a_run_completes_with_its_value() -> None:
    runs = Runs()
    run = runs.start(echo, 42)
    assert run.status == "running"
    assert await run.result() == 42
    outcome = await run.wait()
    assert (outcome.status, outcome.value, outcome.reason) == ("completed", 42, None)
    assert run.done()
    assert run.outcome is outcome
    assert len(runs) == 0


async def test_a_finished_run_nobody_holds_is_freed_without_the_garbage_collector() -> None:
    # The run holds its outcome weakly, the outcome holds the run: no cycle, so a
    # run that leaves the history is freed by reference counting alone.
    runs = Runs(history=1)
    run = runs.start(anyio.sleep, 3600)
    await anyio.lowlevel.checkpoint()
    run.cancel()
    outcome = await run.wait()
    assert run.outcome is outcome
    assert outcome.receipt.status == "cancelled"
    gone = weakref.ref(run)
    del run, outcome
    gc.disable()
    try:
        assert await runs.start(echo, 1).result() == 1  # pushes the first out of history
        assert gone() is None
    finally:
        gc.enable()


async def test_an_outcome_dropped_and_asked_for_again_is_equal() -> None:
    runs = Runs()
    run = runs.start(echo, 7)
    first = await run.wait()
    kept = (first.run_id, first.status, first.value)
    del first
    again = run.outcome
    assert again is not None
    assert (again.run_id, again.status, again.value) == kept
    assert again == await run.wait()


async def test_ids_are_unguessable_by_default_and_duplicates_refused() -> None:
    runs = Runs()
    first, second = runs.start(echo, 1, 1), runs.start(echo, 2, 1)
    assert first.id != second.id
    assert len(first.id) >= 20
    named = runs.start(echo, 3, 1, run_id="req-1")
    with pytest.raises(ValueError, match="already active"):
        runs.start(echo, 4, run_id="req-1")
    for run in (first, second, named):
        run.cancel()
        await run.wait()
    again = runs.start(echo, 5, run_id="req-1")  # a finished id may be reused
    assert await again.result() == 5


async def test_cancel_by_id_sees_cancellation_at_the_await_and_runs_finally() -> None:
    runs = Runs()
    log = Log()
    run = runs.start(log.child, "handler", 10, run_id="req-7")
    await anyio.sleep(0.01)
    assert runs.cancel("req-7", USER) is True
    assert run.status in ("cancelling", "cancelled")
    outcome = await run.wait()
    assert (outcome.status, outcome.reason) == ("cancelled", USER)
    assert log.cancelled == ["handler"]
    with pytest.raises(RunCancelled) as info:
        await run.result()
    assert info.value.reason is USER


async def test_cancel_is_idempotent_and_unknown_or_finished_ids_are_noops() -> None:
    runs = Runs()
    run = runs.start(echo, 1, 10)
    assert runs.cancel(run.id) is True
    assert runs.cancel(run.id) is False
    assert runs.cancel("no-such-run") is False
    await run.wait()
    assert runs.cancel(run.id) is False
    done = runs.start(echo, 2)
    await done.wait()
    assert runs.cancel(done.id) is False
    assert done.status == "completed"


async def test_cancel_from_a_thread_with_no_event_loop() -> None:
    runs = Runs()
    run = runs.start(echo, 1, 10)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(runs.cancel(run.id, USER)))
    thread.start()
    with anyio.fail_after(2):
        outcome = await run.wait()
    thread.join()
    assert results == [True]
    assert outcome.reason is USER


async def test_someone_elses_run_is_indistinguishable_from_an_unknown_one() -> None:
    runs = Runs()
    run = runs.start(echo, 1, 10, owner="alice")
    assert runs.cancel(run.id, owner="mallory") is False
    assert runs.cancel("unknown", owner="mallory") is False
    assert runs.get(run.id, owner="mallory") is None
    assert runs.get(run.id, owner="alice") is run
    assert run.status == "running"
    assert runs.cancel(run.id, owner="alice") is True
    await run.wait()


async def test_failure_keeps_the_original_error_and_kind_error() -> None:
    runs = Runs()

    async def broken() -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("missing")

    run = runs.start(broken)
    with pytest.raises(KeyError, match="missing"):
        await run.result()
    outcome = await run.wait()
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert outcome.reason.kind == "error"


async def test_timeout_cancels_with_kind_timeout() -> None:
    runs = Runs()
    run = runs.start(echo, 1, 10, timeout=0.02)
    with anyio.fail_after(2):
        outcome = await run.wait()
    assert outcome.status == "cancelled"
    assert outcome.reason is not None
    assert outcome.reason.kind == "timeout"


async def test_the_runs_token_is_current_inside_it_and_reaches_threads() -> None:
    runs = Runs()
    seen: list[CancelReason] = []
    started = threading.Event()

    def tool() -> None:
        token = current_token()
        started.set()
        while True:
            try:
                token.check()
            except BaseException as stop:
                seen.append(stop.reason)  # type: ignore[attr-defined]
                raise
            threading.Event().wait(0.001)

    async def agent() -> None:
        assert current_token() is run.token
        await to_thread(tool)

    run = runs.start(agent)
    await wait_until(started.is_set)  # cancelled while queued, it would never run
    run.cancel(USER)
    outcome = await run.wait()
    assert outcome.status == "cancelled"
    assert seen == [USER]


async def test_children_are_cancelled_with_the_runs_reason() -> None:
    runs = Runs()
    log = Log()

    async def agent() -> None:
        spawn(log.child("search", 10))
        spawn(log.child("notes", 10))
        await anyio.sleep(10)

    run = runs.start(agent)
    await anyio.sleep(0.01)
    run.cancel(USER)
    await run.wait()
    assert sorted(log.cancelled) == ["notes", "search"]
    assert run.children == []


async def test_children_still_running_when_the_run_completes_are_cancelled_first() -> None:
    runs = Runs()
    log = Log()
    handles = []

    async def agent() -> str:
        handles.append(spawn(log.child("straggler", 10)))
        await anyio.sleep(0.01)
        return "answer"

    run = runs.start(agent)
    assert await run.result() == "answer"
    assert log.cancelled == ["straggler"]  # gone before the run reported completion
    assert handles[0].token.reason == CancelReason("parent", "the run finished")


async def test_a_failing_child_fails_the_run() -> None:
    runs = Runs()

    async def bad_tool() -> None:
        await anyio.sleep(0.01)
        raise ValueError("tool broke")

    async def agent() -> None:
        spawn(bad_tool())
        await anyio.sleep(10)

    run = runs.start(agent)
    with pytest.raises(ValueError, match="tool broke"):
        await run.result()
    assert run.status == "failed"
    assert run.reason is not None
    assert run.reason.kind == "error"


async def test_subagent_nesting_cancels_the_whole_tree() -> None:
    runs = Runs()
    log = Log()
    nested: list[Run[Any]] = []

    async def subagent(name: str) -> None:
        spawn(log.child(f"{name}-tool", 10))
        await log.child(name, 10)

    async def delegate() -> None:
        nested.append(runs.start(subagent, "sub"))  # a run inside a run's child
        await anyio.sleep(10)

    async def agent() -> None:
        spawn(delegate())
        await log.child("agent", 10)

    run = runs.start(agent)
    await wait_until(lambda: len(log.started) == 3)  # agent, sub and sub-tool: the tree is up
    assert nested[0].parent is run
    assert runs.cancel(run.id, USER)
    await run.wait()
    assert sorted(log.cancelled) == ["agent", "sub", "sub-tool"]
    assert nested[0].status == "cancelled"
    assert nested[0].reason is USER
    assert len(runs) == 0


async def test_spawn_outside_a_run_is_refused_without_warnings() -> None:
    with pytest.raises(RuntimeError, match="inside a run"):
        spawn(echo(1))
    gc.collect()


async def test_bad_start_arguments() -> None:
    runs = Runs()
    with pytest.raises(TypeError, match="async function and its arguments"):
        runs.start(echo(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="run_id must be a str"):
        runs.start(echo, 1, run_id=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        runs.start(echo, 1, run_id="")
    with pytest.raises(ValueError, match="timeout"):
        runs.start(echo, 1, timeout=-1)
    assert len(runs) == 0
    with pytest.raises(ValueError, match="history"):
        Runs(history=0)


async def test_history_is_bounded_and_answers_status_after_completion() -> None:
    runs = Runs(history=3)
    finished = [runs.start(echo, i) for i in range(5)]
    for run in finished:
        await run.wait()
    assert len(runs) == 0
    remembered = [run for run in finished if runs.get(run.id) is run]
    assert len(remembered) == 3  # trio finishes them in random order: which 3 varies
    assert all(run.status == "completed" for run in remembered)
    late = runs.start(echo, "late")
    await late.wait()
    assert runs.get(late.id) is late  # the newest finished run is always remembered


async def test_shutdown_cancels_everything_with_kind_shutdown_and_names_stragglers() -> None:
    runs = Runs()
    polite = runs.start(echo, 1, 10)

    async def stubborn() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.3)

    late = runs.start(stubborn)
    await anyio.sleep(0.01)
    stragglers = await runs.shutdown(grace=0.05)
    assert stragglers == [late.id]
    assert polite.status == "cancelled"
    assert polite.reason is not None
    assert polite.reason.kind == "shutdown"
    with pytest.raises(RuntimeError, match="shut down"):
        runs.start(echo, 1)
    await late.wait()
    assert late.status == "cancelled"


async def test_stop_racing_completion_has_one_winner() -> None:
    # cancel() returns True exactly when the run ends cancelled, whatever the timing.
    runs = Runs()
    for attempt in range(200):
        run = runs.start(echo, attempt, 0)
        await anyio.lowlevel.checkpoint()
        won = run.cancel(USER)
        outcome = await run.wait()
        assert outcome.status == ("cancelled" if won else "completed"), attempt


async def test_in_flight_request_protocol() -> None:
    # An agent control protocol: requests run under their ids; a cancel notification
    # stops one; only completed requests get a response.
    runs = Runs()
    responses: dict[str, object] = {}
    finally_ran: list[str] = []

    async def handler(request_id: str, delay: float) -> str:
        try:
            await anyio.sleep(delay)
            return f"result of {request_id}"
        finally:
            finally_ran.append(request_id)

    async def serve(request_id: str, delay: float) -> None:
        run = runs.start(handler, request_id, delay, run_id=request_id)
        outcome = await run.wait()
        if outcome.status == "completed":
            responses[request_id] = outcome.value

    async with anyio.create_task_group() as group:
        group.start_soon(serve, "1", 0.01)
        group.start_soon(serve, "2", 10)
        await anyio.sleep(0.005)
        assert runs.cancel("2")
        assert not runs.cancel("99")  # unknown id: a no-op
    assert responses == {"1": "result of 1"}
    assert sorted(finally_ran) == ["1", "2"]
    assert runs.cancel("1") is False  # completed: no longer tracked
    assert len(runs) == 0


async def test_cancel_at_each_checkpoint_of_a_run_leaves_no_children() -> None:
    log = Log()
    runs = Runs()

    async def agent() -> None:
        spawn(log.child("helper", 0.001))
        await anyio.lowlevel.checkpoint()
        await log.child("main", 0.001)

    async def work() -> None:
        run = runs.start(agent)
        try:
            await run.wait()
        finally:
            run.cancel()
            with anyio.CancelScope(shield=True):
                await run.wait()

    def check() -> None:
        assert len(runs) == 0
        assert log.settled()

    assert await cancel_at_each_checkpoint(work, check) >= 1


async def test_a_cancel_on_the_loop_thread_takes_effect_before_the_tasks_next_step() -> None:
    # The run is released and stopped in the same step of the test: it must not
    # perform the side effect that follows its wait (asyncio delivers the
    # cancellation where the task resumes, trio at its next checkpoint).
    runs = Runs()
    effects: list[int] = []
    for index in range(20):
        release = anyio.Event()

        async def body(index: int = index, release: anyio.Event = release) -> None:
            await release.wait()
            await anyio.lowlevel.checkpoint_if_cancelled()
            effects.append(index)

        run = runs.start(body)
        await anyio.lowlevel.checkpoint()  # the run is now blocked in its wait
        await anyio.lowlevel.checkpoint()
        release.set()
        assert run.cancel(USER)
        outcome = await run.wait()
        assert outcome.status == "cancelled"
    assert effects == []


async def test_done_callbacks_learn_of_the_end_once_even_when_added_late() -> None:
    runs = Runs()
    seen: list[str] = []
    run = runs.start(echo, "v")
    run.add_done_callback(lambda ended: seen.append(f"early {ended.status}"))
    await run.wait()
    run.add_done_callback(lambda ended: seen.append(f"late {ended.status}"))  # at once
    assert seen == ["early completed", "late completed"]
    assert runs.get(run.id) is run  # retired into the history through the same callback
    assert len(runs) == 0


async def test_without_a_backend_a_run_is_claimed_at_once_and_stop_find_stay_local() -> None:
    runs = Runs()
    run = runs.start(anyio.sleep, 60, run_id="here", owner="alice")
    assert await run.claimed() is True
    info = await runs.find("here", owner="alice")
    assert info is not None
    assert (info.status, info.owner, info.worker) == ("running", "alice", None)
    assert await runs.find("here", owner="mallory") is None
    assert await runs.find("nowhere") is None
    assert await runs.stop("here", owner="mallory") is False
    assert await runs.stop("here", CancelReason("user", "by id"), owner="alice") is True
    outcome = await run.wait()
    assert (outcome.status, outcome.reason) == ("cancelled", CancelReason("user", "by id"))
    ended = await runs.find("here")
    assert ended is not None
    assert ended.status == "cancelled"
    assert ended.ended_at is not None
    assert await runs.stop("nowhere") is False


async def test_a_stop_from_another_thread_racing_the_start_cancels_the_task_once(
    anyio_backend: str,
) -> None:
    # The run's token is shared (by id) before its task's stopper is in place; a
    # Stop from another thread in that window is carried out exactly once: the run
    # ends cancelled, and on asyncio its task saw one cancellation request, not two
    # (a second would outlive an inner timeout's uncancel()).
    runs = Runs()
    requests: list[int] = []

    async def body() -> None:
        try:
            await anyio.sleep(3600)
        finally:
            if anyio_backend == "asyncio":
                import asyncio  # noqa: PLC0415

                task = asyncio.current_task()
                assert task is not None
                requests.append(task.cancelling())

    go = threading.Event()
    ids = [f"race-{i}" for i in range(200)]

    def stop_all() -> None:
        go.wait()
        deadline = time.monotonic() + 60  # bounded, should the loop never start one
        for run_id in ids:
            # Each id as soon as its run is known: often before its task is armed.
            while not runs.cancel(run_id, USER) and time.monotonic() < deadline:
                time.sleep(0)

    stopper = threading.Thread(target=stop_all)
    stopper.start()
    try:
        started = []
        for index, run_id in enumerate(ids):
            if index == 1:
                go.set()
            started.append(runs.start(body, run_id=run_id))
            await anyio.lowlevel.checkpoint()
        outcomes = [await run.wait() for run in started]
    finally:
        go.set()
        await anyio.to_thread.run_sync(stopper.join)
    assert {outcome.status for outcome in outcomes} == {"cancelled"}
    assert len(requests) == (len(ids) if anyio_backend == "asyncio" else 0)
    assert set(requests) <= {1}


_HAMT_NODES = frozenset({"hamt_bitmap_node", "hamt_array_node", "hamt_collision_node"})


async def test_an_idle_run_keeps_few_objects_for_the_garbage_collector(
    anyio_backend: str,
) -> None:
    # Every object of an idle run is walked by each full collection: a registry of
    # 100,000 idle runs pays for each one. Against the task a user would start
    # without cancelkit (asyncio: a bare task; trio: a nursery task), a run adds
    # its token, itself, its wrapper coroutine and context, and its task's stopper;
    # on trio also the cancel scope a loose (system) task needs, and its wrapper.
    count = 500
    runs = Runs()

    def tracked() -> int:
        # Not the nodes of a context's hash map: how many a context needs depends on
        # whether its variables' hashes collide, and those hashes are seeded per
        # process (PYTHONHASHSEED): one node more per run in about one process of
        # four, whatever the code does.
        gc.collect()
        return sum(1 for obj in gc.get_objects() if type(obj).__name__ not in _HAMT_NODES)

    before = tracked()
    started = [runs.start(anyio.sleep, 3600) for _ in range(count)]
    await anyio.sleep(0.01)
    per_run = (tracked() - before) / count
    await runs.shutdown()
    del started

    if anyio_backend == "asyncio":
        import asyncio  # noqa: PLC0415

        before = tracked()
        tasks = [asyncio.create_task(anyio.sleep(3600)) for _ in range(count)]
        await anyio.sleep(0.01)
        per_task = (tracked() - before) / count
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    else:
        import trio  # noqa: PLC0415

        async with trio.open_nursery() as nursery:
            before = tracked()
            for _ in range(count):
                nursery.start_soon(anyio.sleep, 3600)
            await anyio.sleep(0.01)
            per_task = (tracked() - before) / count
            nursery.cancel_scope.cancel()
    assert per_run - per_task <= (8 if anyio_backend == "asyncio" else 13), (per_run, per_task)


async def test_waiters_cancelled_while_waiting_leave_nothing_behind_and_the_rest_wake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A waiter in the run's own thread waits among its done callbacks. Cancelled
    # waiters take theirs back, one cancelled in the loop turn the run ends in
    # (after its task finished, before its ending ran) is passed over without an
    # error, and every other waiter is woken.
    runs = Runs()
    release = anyio.Event()

    run = runs.start(released, release, "done")
    woken: list[str] = []

    async def waiter(name: str) -> None:
        outcome = await run.wait()
        woken.append(f"{name} {outcome.status}")

    async with anyio.create_task_group() as group:
        async with anyio.create_task_group() as quitters:
            for index in range(3):
                quitters.start_soon(waiter, f"quitter {index}")
            await anyio.sleep(0.01)
            quitters.cancel_scope.cancel()
        assert run._done_callbacks == []  # the three took theirs back
        for index in range(3):
            group.start_soon(waiter, f"stayer {index}")
        async with anyio.create_task_group() as last_moment:
            last_moment.start_soon(waiter, "last-moment quitter")
            await anyio.sleep(0.01)
            release.set()
            await anyio.lowlevel.checkpoint()  # the run's task finishes meanwhile
            last_moment.cancel_scope.cancel()
    # (the last-moment quitter may be woken before its cancel lands: on trio it is)
    assert sorted(set(woken) - {"last-moment quitter completed"}) == [
        f"stayer {index} completed" for index in range(3)
    ]
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
    assert run._done_callbacks is None


@pytest.mark.parametrize("other", ["asyncio", "trio"])
async def test_a_run_awaited_from_another_loop_in_another_thread_wakes_it(other: str) -> None:
    # Not the run's own thread: the waiter waits on the run's completion, set
    # across threads when the run ends.
    runs = Runs()
    for _ in range(10):
        started = threading.Event()
        outcomes: list[Any] = []
        run = runs.start(echo, "v", 0.02)

        async def other_loop(awaited: Any, started: threading.Event, outcomes: list[Any]) -> None:
            started.set()
            with anyio.fail_after(10):
                outcomes.append(await awaited.wait())

        thread = threading.Thread(
            target=anyio.run,
            args=(other_loop, run, started, outcomes),
            kwargs={"backend": other},
        )
        thread.start()
        await anyio.to_thread.run_sync(started.wait, 10)
        assert (await run.wait()).value == "v"
        await anyio.to_thread.run_sync(thread.join, 10)
        assert [outcome.value for outcome in outcomes] == ["v"]
