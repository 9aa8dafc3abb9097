"""Stores under failure: a killed worker, a database that is down, the wrong loop."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from cancelkit import RunCancelled, Runs, thread_stats, to_thread, transaction
from cancelkit._threads import MAX_WORKERS
from cancelkit.stores import PostgresStore, SQLiteStore, StoreUnavailable

from ..helpers import wait_until
from .test_transactions import Store, notes

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent.parent


async def until_no_sleeping_backend(store: PostgresStore) -> None:
    query = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'"
    with anyio.fail_after(5):
        while True:  # polling the server's view of its backends
            if await store.execute(query) == [(0,)]:
                return
            await anyio.sleep(0.05)


def kill_when_ready(module_and_args: list[str], ready: str = "READY", settle: float = 0) -> None:
    """Run ``python -m ...``, SIGKILL it ``settle`` seconds after it prints ``ready``."""
    worker = subprocess.Popen(
        [sys.executable, "-m", *module_and_args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    try:
        assert worker.stdout.readline().strip() == ready
        time.sleep(settle)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.stdout.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == -signal.SIGKILL


def kill_mid_commit(kind: str, where: str, run_id: str) -> None:
    # 0.3 s after COMMITTING: well inside the commit, rows sent, transaction open.
    kill_when_ready(["tests.scenarios.kill_mid_commit", kind, where, run_id], "COMMITTING", 0.3)


async def test_a_worker_killed_mid_commit_leaves_no_rows(
    store: Store, store_kind: str, tmp_path: Path
) -> None:
    where = str(store.path) if isinstance(store, SQLiteStore) else store.dsn
    await anyio.to_thread.run_sync(kill_mid_commit, store_kind, where, "run-killed")
    if isinstance(store, PostgresStore):  # the server notices the dead backend promptly
        await until_no_sleeping_backend(store)
    assert await notes(store) == []
    state = await store.state("run-killed")
    assert state is not None
    assert state.status == "running"  # never committed: a retry may run it
    async with transaction(store, "run-killed") as tx:
        tx.insert("notes", {"run_id": "run-killed", "body": "retried"})
    assert await notes(store, "run-killed") == [("retried",)]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_unopenable_sqlite_database_is_a_clear_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing-folder" / "app.db")
    with pytest.raises(StoreUnavailable, match="cannot open SQLite database"):
        await store.setup()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_postgres_down_fails_the_run_with_kind_error() -> None:
    store = PostgresStore("host=/nonexistent-cancelkit dbname=x", connect_timeout=1)
    runs = Runs()

    async def agent() -> None:
        async with transaction(store, "run-down") as tx:
            tx.insert("notes", {"body": "never"})

    run = runs.start(agent)
    outcome = await run.wait()
    assert outcome.status == "failed"
    assert isinstance(outcome.error, StoreUnavailable)
    assert "unreachable" in str(outcome.error)
    assert outcome.reason is not None
    assert outcome.reason.kind == "error"


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_postgres_refuses_trio_clearly() -> None:
    store = PostgresStore("host=/nonexistent-cancelkit dbname=x")
    with pytest.raises(RuntimeError, match="asyncio"):
        await store.setup()


async def test_tools_that_take_every_worker_thread_cannot_hold_up_a_commit(store: Store) -> None:
    # Before, store work shared the tools' thread pool: ninety blocked sync tool
    # calls made another user's commit wait its turn and fail 31 s later.
    release = threading.Event()
    async with anyio.create_task_group() as group:
        for _ in range(90):
            group.start_soon(functools.partial(to_thread, release.wait, 20, queue_timeout=20))
        await wait_until(lambda: thread_stats()["queued"] >= 90 - MAX_WORKERS)
        with anyio.fail_after(10):
            async with transaction(store, "another-user") as tx:
                tx.insert("notes", {"run_id": "another-user", "body": "kept"})
        assert tx.outcome == "committed"
        release.set()
    assert await notes(store, "another-user") == [("kept",)]


async def test_runs_of_a_killed_worker_are_settled_at_the_next_setup(
    store: Store, store_kind: str, tmp_path: Path
) -> None:
    # Before, their ledger rows stayed `running` forever.
    where = str(store.path) if isinstance(store, SQLiteStore) else store.dsn
    kill_when_ready(["tests.scenarios.crash_with_runs", store_kind, where, "20"])
    running = "SELECT count(*) FROM cancelkit_runs WHERE status = 'running'"
    assert await store.execute(running) == [(21,)]
    restarted = SQLiteStore(where) if store_kind == "sqlite" else PostgresStore(where)
    try:
        with anyio.fail_after(30):
            await restarted.setup()  # reconciles
        rows = await restarted.execute(
            "SELECT status, reason_kind, count(*) FROM cancelkit_runs GROUP BY status, reason_kind"
        )
        assert rows == [("cancelled", "shutdown", 21)]
        assert await notes(restarted) == []  # no partial write
        assert await restarted.reconcile() == 0  # settled once, for good
    finally:
        await restarted.aclose()


async def test_a_live_owners_runs_are_left_alone_and_expired_leases_settled(store: Store) -> None:
    async with transaction(store, "mine") as tx:
        assert await store.reconcile() == 0  # our own process is alive
        state = await store.state("mine")
        assert state is not None
        assert state.status == "running"
        tx.insert("notes", {"run_id": "mine", "body": "kept"})
    assert tx.outcome == "committed"
    store.lease = 0.0  # every lease taken from now on is already over
    with pytest.raises(RunCancelled) as stopped:
        async with transaction(store, "expired") as tx:
            tx.insert("notes", {"run_id": "expired", "body": "never"})
            assert await store.reconcile() == 1
    assert stopped.value.reason.kind == "shutdown"
    assert tx.outcome == "cancelled"
    assert await notes(store, "expired") == []


OPEN_AT_ONCE = """
import asyncio, sys, time
from pathlib import Path
from cancelkit.stores import SQLiteStore

async def main() -> None:
    go = Path(sys.argv[2])
    while not go.exists():  # every process waits here, then all open at once
        time.sleep(0.001)
    store = SQLiteStore(sys.argv[1])
    await store.setup()  # what each worker does at start: its tables, then work
    await store.execute("CREATE TABLE IF NOT EXISTS notes (run_id TEXT, body TEXT)")
    for n in range(20):
        await store.execute("INSERT INTO notes VALUES (?, ?)", (str(n), "x"))
        other = SQLiteStore(sys.argv[1])  # a new connection while the others write
        await other.execute("SELECT count(*) FROM notes")
        await other.aclose()
    await store.aclose()

asyncio.run(main())
"""


def test_workers_opening_one_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    # Several workers of a service start together on one new database file: switching
    # it to WAL must not fail any of them with "database is locked".
    database, go = tmp_path / "shared.db", tmp_path / "go"
    for attempt in range(5):
        database.unlink(missing_ok=True)
        go.unlink(missing_ok=True)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT_ONCE, str(database), str(go)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        time.sleep(0.3)
        go.touch()
        for worker in workers:
            _, errors = worker.communicate(timeout=60)
            assert worker.returncode == 0, (attempt, errors[-800:])
