"""Commit overhead of ``transaction()`` against the bare driver, SQLite and PostgreSQL.

Run: ``python bench/bench_transactions.py`` (``--quick`` for fewer repeats). Starts a
throwaway PostgreSQL from the machine's binaries (``PostgresServer``; as ``nobody``
when run as root).

For 1 and 100 staged inserts: the time of the commit (the block's exit: ledger update
plus the writes, in one database transaction) against the same inserts through the
bare driver in one transaction, on PostgreSQL both plainly and pipelined (ratios to
each are reported); and the whole block, with its ``begin`` (the run's ledger row),
for the full picture.
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from psycopg_pool import AsyncConnectionPool

from _harness import Row, against, measure, report
from cancelkit import transaction
from cancelkit._lifetime import FolderWatchdog
from cancelkit.stores import PostgresStore, SQLiteStore
from cancelkit.stores._postgres_server import PostgresServer

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

ITERATIONS = 200
ids = itertools.count()


def per_op_us(body: Callable[[], Coroutine[Any, Any, float]]) -> Callable[[], float]:
    def run() -> float:
        return float(anyio.run(body))

    return run


def sqlite_contestants(path: Path, writes: int) -> dict[str, Callable[[], float]]:
    store = SQLiteStore(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    rows = [(f"r{i}", "body") for i in range(writes)]

    def bare_sync() -> None:
        conn.execute("BEGIN IMMEDIATE")
        for row in rows:
            conn.execute("INSERT INTO notes (run_id, body) VALUES (?, ?)", row)
        conn.execute("COMMIT")

    async def bare() -> float:
        start = time.perf_counter()
        for _ in range(ITERATIONS):
            await anyio.to_thread.run_sync(bare_sync)
        return (time.perf_counter() - start) / ITERATIONS * 1e6

    return {
        "bare sqlite3 in a thread": per_op_us(bare),
        "cancelkit commit": per_op_us(lambda: ours(store, writes, commit_only=True)),
        "cancelkit whole block": per_op_us(lambda: ours(store, writes, commit_only=False)),
    }


async def ours(store: SQLiteStore | PostgresStore, writes: int, *, commit_only: bool) -> float:
    total = 0.0
    for _ in range(ITERATIONS):
        run_id = f"bench-{next(ids)}"
        started = time.perf_counter()
        async with transaction(store, run_id) as tx:
            for index in range(writes):
                tx.insert("notes", {"run_id": run_id, "body": f"row {index}"})
            if commit_only:
                started = time.perf_counter()
        total += time.perf_counter() - started
    return total / ITERATIONS * 1e6


def postgres_contestants(dsn: str, writes: int) -> dict[str, Callable[[], float]]:
    async def bare(pipeline: bool) -> float:
        async with AsyncConnectionPool(
            dsn, min_size=2, max_size=4, kwargs={"autocommit": True}
        ) as pool:
            start = time.perf_counter()
            for _ in range(ITERATIONS):
                async with pool.connection() as conn, conn.transaction():
                    if pipeline:
                        async with conn.pipeline():
                            for index in range(writes):
                                await conn.execute(
                                    "INSERT INTO notes (run_id, body) VALUES (%s, %s)",
                                    ("b", f"row {index}"),
                                )
                    else:
                        for index in range(writes):
                            await conn.execute(
                                "INSERT INTO notes (run_id, body) VALUES (%s, %s)",
                                ("b", f"row {index}"),
                            )
            return (time.perf_counter() - start) / ITERATIONS * 1e6

    async def mine(commit_only: bool) -> float:
        store = PostgresStore(dsn, min_size=2, max_size=4)
        await store.setup()
        try:
            return await ours(store, writes, commit_only=commit_only)
        finally:
            await store.aclose()

    return {
        "bare psycopg, one transaction": per_op_us(lambda: bare(False)),
        "cancelkit commit": per_op_us(lambda: mine(True)),
        "bare psycopg, pipelined": per_op_us(lambda: bare(True)),
        "cancelkit whole block": per_op_us(lambda: mine(False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    rows: list[Row] = []
    folder = Path(tempfile.mkdtemp(prefix="ck-bench-sqlite-"))
    sqlite_folder = FolderWatchdog(folder)
    path = folder / "bench.db"

    async def prepare_sqlite() -> None:
        store = SQLiteStore(path)
        await store.setup()
        await store.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, run_id TEXT, body TEXT)")
        await store.aclose()

    anyio.run(prepare_sqlite)
    for writes in (1, 100):
        rows += measure(
            f"SQLite commit, {writes} staged write(s)",
            sqlite_contestants(path, writes),
            unit="us",
            repeats=repeats,
            baseline="bare sqlite3 in a thread",
            target="<= 1.2x",
        )
    sqlite_folder.release()

    # A throwaway server (fsync on, as a real one), stopped and its folder removed when
    # this bench ends, however it ends.
    with PostgresServer(user="bench") as server:
        dsn = server.dsn

        async def prepare_pg() -> None:
            store = PostgresStore(dsn)
            await store.setup()
            await store.execute(
                "CREATE TABLE notes (id SERIAL PRIMARY KEY, run_id TEXT, body TEXT)"
            )
            await store.aclose()

        anyio.run(prepare_pg)
        for writes in (1, 100):
            measured = measure(
                f"PostgreSQL commit, {writes} staged write(s)",
                postgres_contestants(dsn, writes),
                unit="us",
                repeats=repeats,
                baseline="bare psycopg, one transaction",
                target="<= 1.2x",
            )
            rows += measured + against(measured, "bare psycopg, pipelined")
    for row in rows:  # the whole block, with its begin, is context: no target
        if row.contestant == "cancelkit whole block":
            row.target = None
    report("transactions", rows)


if __name__ == "__main__":
    main()
