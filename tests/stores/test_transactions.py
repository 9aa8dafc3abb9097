"""transaction(): all or nothing, decided in the database; same suite for both stores."""

from __future__ import annotations

import random
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from cancelkit import CancelReason, RunCancelled, Runs, transaction
from cancelkit.stores import PostgresStore, SQLiteStore
from cancelkit.testing import cancel_at_each_checkpoint

from .conftest import slow_sql

pytestmark = pytest.mark.anyio

Store = SQLiteStore | PostgresStore
USER = CancelReason("user", "Stop pressed")


async def notes(store: Store, run_id: str | None = None) -> list[Any]:
    if run_id is None:
        return await store.execute("SELECT id, run_id, body FROM notes ORDER BY id")
    ph = "?" if isinstance(store, SQLiteStore) else "%s"
    return await store.execute(f"SELECT body FROM notes WHERE run_id = {ph} ORDER BY id", (run_id,))


def stage(tx: Any, run_id: str, count: int = 3, first_id: int = 1) -> None:
    for index in range(count):
        tx.insert("notes", {"id": first_id + index, "run_id": run_id, "body": f"note {index}"})


async def test_a_clean_block_commits_every_write_at_once(store: Store) -> None:
    ph = "?" if isinstance(store, SQLiteStore) else "%s"
    async with transaction(store, "run-1") as tx:
        stage(tx, "run-1", 3)
        tx.update("notes", {"body": "edited"}, where={"id": 2})
        tx.delete("notes", where={"id": 3})
        tx.execute(f"UPDATE notes SET body = body || {ph} WHERE id = {ph}", ("!", 1))
        tx.outbox("email", {"to": "ada@example.com", "subject": "done"})
        assert await notes(store) == []  # staged, not written
    assert tx.outcome == "committed"
    assert await notes(store, "run-1") == [("note 0!",), ("edited",)]
    outbox = await store.execute("SELECT kind, payload FROM cancelkit_outbox")
    assert outbox == [("email", '{"subject": "done", "to": "ada@example.com"}')]
    state = await store.state("run-1")
    assert state is not None
    assert (state.status, state.reason) == ("committed", None)


async def test_an_error_writes_nothing_and_records_kind_error(store: Store) -> None:
    with pytest.raises(KeyError, match="tool"):
        async with transaction(store, "run-err") as tx:
            stage(tx, "run-err")
            raise KeyError("tool")
    assert await notes(store) == []
    assert tx.outcome == "failed"
    state = await store.state("run-err")
    assert state is not None
    assert state.status == "failed"
    assert state.reason is not None
    assert state.reason.kind == "error"


async def test_cancellation_writes_nothing_and_records_the_reason(store: Store) -> None:
    with anyio.move_on_after(0.05):
        async with transaction(store, "run-cut") as tx:
            stage(tx, "run-cut")
            await anyio.sleep(10)
    assert await notes(store) == []
    assert tx.outcome == "cancelled"
    state = await store.state("run-cut")
    assert state is not None
    assert state.status == "cancelled"


async def test_stopping_a_run_rolls_back_its_staged_writes_with_its_reason(store: Store) -> None:
    runs = Runs()

    staged = anyio.Event()

    async def agent(run_id: str) -> None:
        async with transaction(store, run_id) as tx:
            stage(tx, run_id)
            staged.set()
            await anyio.sleep(10)

    run = runs.start(agent, "run-stop", run_id="run-stop")
    await staged.wait()  # begun in the database: a round trip, however long it takes
    assert runs.cancel("run-stop", USER)
    outcome = await run.wait()
    assert (outcome.status, outcome.reason) == ("cancelled", USER)
    assert await notes(store) == []
    state = await store.state("run-stop")
    assert state is not None
    assert (state.status, state.reason) == ("cancelled", USER)


@pytest.mark.parametrize("count", [1, 50])
async def test_a_write_the_database_refuses_at_commit_undoes_the_whole_commit(
    store: Store, count: int
) -> None:
    """A constraint broken by the last write rolls back the ledger row and every write
    before it (one write alone, and a batch the store sends together)."""
    async with transaction(store, "taken") as tx:
        tx.insert("notes", {"id": 1000, "run_id": "taken", "body": "first"})
    with pytest.raises(Exception, match=r"(?i)unique|duplicate") as info:
        async with transaction(store, "refused") as tx:
            stage(tx, "refused", count - 1)
            tx.insert("notes", {"id": 1000, "run_id": "refused", "body": "clash"})
    assert not isinstance(info.value, RunCancelled)
    assert tx.outcome == "failed"
    assert await notes(store, "refused") == []
    state = await store.state("refused")
    assert state is not None
    assert state.status == "failed"
    async with transaction(store, "after") as tx:  # the store is usable again
        stage(tx, "after", count)
    assert len(await notes(store, "after")) == count


async def test_retrying_a_committed_run_writes_nothing_twice(store: Store) -> None:
    for attempt in range(3):
        async with transaction(store, "run-once") as tx:
            tx.insert("notes", {"run_id": "run-once", "body": f"attempt {attempt}"})
        assert tx.outcome == "committed"
        assert tx.replayed == (attempt > 0)
    assert await notes(store, "run-once") == [("attempt 0",)]


async def test_a_cancelled_run_may_be_retried(store: Store) -> None:
    assert not await store.cancel("run-again")  # unknown: nothing to cancel
    with anyio.move_on_after(0.02):
        async with transaction(store, "run-again") as tx:
            stage(tx, "run-again")
            await anyio.sleep(10)
    async with transaction(store, "run-again") as tx:
        stage(tx, "run-again", 1)
    state = await store.state("run-again")
    assert state is not None
    assert (state.status, state.attempts) == ("committed", 2)
    assert await notes(store, "run-again") == [("note 0",)]


async def test_a_cancel_that_reaches_the_database_first_wins(store: Store) -> None:
    with pytest.raises(RunCancelled) as info:
        async with transaction(store, "run-remote") as tx:
            stage(tx, "run-remote")
            assert await store.cancel("run-remote", CancelReason("user", "from another worker"))
    assert info.value.reason == CancelReason("user", "from another worker")
    assert tx.outcome == "cancelled"
    assert await notes(store) == []


async def test_stop_racing_commit_has_exactly_one_winner(store: Store) -> None:
    rng = random.Random(7)
    tallies = {"committed": 0, "cancelled": 0}
    for index in range(1000):
        run_id = f"race-{index}"
        report: dict[str, Any] = {}
        entered = anyio.Event()

        async def commit(
            run_id: str = run_id, report: dict[str, Any] = report, entered: anyio.Event = entered
        ) -> None:
            try:
                async with transaction(store, run_id) as tx:
                    tx.insert("notes", {"run_id": run_id, "body": "a"})
                    tx.insert("notes", {"run_id": run_id, "body": "b"})
                    entered.set()
                    for _ in range(rng.randrange(3)):
                        await anyio.lowlevel.checkpoint()
            except RunCancelled:
                pass
            report["outcome"] = tx.outcome

        async def stop(
            run_id: str = run_id, report: dict[str, Any] = report, entered: anyio.Event = entered
        ) -> None:
            # Waits, never spins: under anyio's trio test runner every checkpoint is a
            # hop between threads (a spin cost 50 ms a race, a timeout under load).
            await entered.wait()
            for _ in range(rng.randrange(6)):
                await anyio.lowlevel.checkpoint()
            report["cancel_won"] = await store.cancel(run_id, USER)

        async with anyio.create_task_group() as group:
            group.start_soon(commit)
            group.start_soon(stop)
        state = await store.state(run_id)
        rows = await notes(store, run_id)
        assert state is not None
        assert state.status in ("committed", "cancelled"), index
        assert report["outcome"] == state.status, index  # the report matches the database
        assert report["cancel_won"] == (state.status == "cancelled"), index
        assert len(rows) == (2 if state.status == "committed" else 0), index
        tallies[state.status] += 1
    # Both sides won often enough for the race to be real (the split varies by timing).
    assert tallies["committed"] > 10, tallies
    assert tallies["cancelled"] > 10, tallies


async def test_cancel_at_each_checkpoint_of_the_write_path(store: Store, store_kind: str) -> None:
    reports: list[Any] = []
    counter = iter(range(10_000))

    async def write() -> None:
        run_id = f"cp-{next(counter)}"
        tx = transaction(store, run_id, commit_timeout=5)
        reports.append(tx)
        async with tx:
            stage(tx, run_id, 2, first_id=len(reports) * 10)
            tx.execute(*slow_sql(store_kind, 0.05))  # a slow commit
            await anyio.lowlevel.checkpoint()

    async def check() -> None:
        tx = reports[-1]
        rows = await notes(store, tx.run_id)
        state = await store.state(tx.run_id)
        status = state.status if state else None
        assert len(rows) in (0, 2)  # never half-written
        assert (len(rows) == 2) == (status == "committed") == (tx.outcome == "committed")

    points = await cancel_at_each_checkpoint(write, check)
    assert points >= 3  # begin, the body's await, the (shielded) commit
    assert {tx.outcome for tx in reports} >= {"cancelled", "committed"}


async def test_a_commit_past_its_timeout_writes_nothing_and_the_store_recovers(
    store: Store, store_kind: str
) -> None:
    with pytest.raises(TimeoutError):
        async with transaction(store, "run-slow", commit_timeout=0.2) as tx:
            stage(tx, "run-slow")
            tx.execute(*slow_sql(store_kind, 5))
    assert tx.outcome == "failed"
    assert await notes(store) == []
    async with transaction(store, "run-next") as next_tx:
        stage(next_tx, "run-next", 1, first_id=50)
    assert await notes(store, "run-next") == [("note 0",)]
    if isinstance(store, PostgresStore):
        idle = await store.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')"
        )
        assert idle == [(0,)]


async def test_bad_writes_are_refused_as_they_are_staged(store: Store) -> None:
    with pytest.raises(ValueError, match="non-empty run_id"):
        transaction(store, "")
    with pytest.raises(TypeError, match="needs a store"):
        transaction("not a store", "run")  # type: ignore[arg-type]
    tx = transaction(store, "run-bad")
    with pytest.raises(RuntimeError, match="inside the transaction"):
        tx.insert("notes", {"body": "x"})
    async with tx:
        with pytest.raises(ValueError, match="plain SQL identifier"):
            tx.insert("notes; DROP TABLE notes", {"body": "x"})
        with pytest.raises(ValueError, match="plain SQL identifier"):
            tx.insert("notes", {"body = 1 --": "x"})
        with pytest.raises(ValueError, match="must not be empty"):
            tx.update("notes", {"body": "x"}, where={})
        with pytest.raises(TypeError, match="JSON"):
            tx.outbox("email", {"when": object()})
        stage(tx, "run-bad", 1)
    assert await notes(store, "run-bad") == [("note 0",)]  # the good write still went in


class Watched:
    """A store that says when a commit is under way, so Stops can aim at it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.paramstyle = inner.paramstyle
        self.committing = threading.Event()

    async def begin(self, run_id: str) -> Any:
        return await self.inner.begin(run_id)

    async def commit(self, run_id: str, writes: Any, timeout: float) -> bool:
        self.committing.set()
        return await self.inner.commit(run_id, writes, timeout)

    async def finish(self, run_id: str, status: Any, reason: CancelReason) -> bool:
        return await self.inner.finish(run_id, status, reason)

    async def cancel(self, run_id: str, reason: CancelReason | None = None) -> bool:
        return await self.inner.cancel(run_id, reason)

    async def state(self, run_id: str) -> Any:
        return await self.inner.state(run_id)


@pytest.mark.parametrize("stopper", ["task", "thread"])
async def test_a_stop_aimed_at_the_commit_never_misreports_the_outcome(
    store: Store, stopper: str
) -> None:
    # Before: Runs.cancel() during the shielded commit returned True and the run
    # ended cancelled (kind user) while the database had committed its rows.
    rng = random.Random(11)
    runs = Runs()
    watched = Watched(store)
    tallies = {"completed": 0, "cancelled": 0}
    for index in range(150):
        run_id = f"aim-{stopper}-{index}"
        watched.committing.clear()
        txs: list[Any] = []

        async def body(run_id: str = run_id, txs: list[Any] = txs) -> str:
            async with transaction(watched, run_id) as tx:
                txs.append(tx)
                tx.insert("notes", {"run_id": run_id, "body": "a"})
                tx.insert("notes", {"run_id": run_id, "body": "b"})
                await anyio.lowlevel.checkpoint()
            return "done"

        run = runs.start(body, run_id=run_id)
        aim_at_commit = rng.random() < 0.7
        spins = rng.randrange(200)

        def stop_from_thread(
            run_id: str = run_id, spins: int = spins, aim: bool = aim_at_commit
        ) -> bool:
            if aim:
                watched.committing.wait(5)
            for _ in range(spins):
                pass
            return runs.cancel(run_id, USER)

        if stopper == "thread":
            answer = await anyio.to_thread.run_sync(stop_from_thread)
        else:
            while aim_at_commit and not watched.committing.is_set() and not run.done():
                await anyio.lowlevel.checkpoint()
            for _ in range(spins % 4):
                await anyio.lowlevel.checkpoint()
            answer = runs.cancel(run_id, USER)
        outcome = await run.wait()
        state = await store.state(run_id)
        rows = await notes(store, run_id)
        assert outcome.status in ("completed", "cancelled"), (index, outcome)
        assert answer == (outcome.status == "cancelled"), (index, answer, outcome)
        if outcome.status == "completed":
            assert state is not None
            assert state.status == "committed", index
            assert txs[0].outcome == "committed", index
            assert len(rows) == 2, index
        else:
            assert outcome.reason == USER, index
            assert state is None or state.status == "cancelled", index
            assert not txs or txs[0].outcome == "cancelled", index
            assert rows == [], index
        tallies[outcome.status] += 1
    assert tallies["completed"] > 5, tallies
    assert tallies["cancelled"] > 5, tallies
