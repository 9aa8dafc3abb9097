"""A worker process that is killed in the middle of committing a transaction.

Usage: ``python -m tests.scenarios.kill_mid_commit sqlite PATH RUN_ID`` or
``... postgres DSN RUN_ID``. It stages 50 rows and a slow statement, prints
``COMMITTING`` and commits; the test kills it with SIGKILL while the commit runs.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import anyio

from cancelkit import transaction
from cancelkit.stores import PostgresStore, SQLiteStore

if TYPE_CHECKING:
    import sqlite3


def _sleep_seconds(seconds: float) -> int:
    time.sleep(seconds)
    return 0


def _sleep(conn: sqlite3.Connection) -> None:
    conn.create_function("ck_sleep", 1, _sleep_seconds)


async def main(kind: str, where: str, run_id: str) -> None:
    store = SQLiteStore(where, on_connect=_sleep) if kind == "sqlite" else PostgresStore(where)
    async with transaction(store, run_id, commit_timeout=60) as tx:
        for index in range(50):
            tx.insert("notes", {"run_id": run_id, "body": f"row {index}"})
        tx.execute("SELECT ck_sleep(?)" if kind == "sqlite" else "SELECT pg_sleep(%s)", (30,))
        print("COMMITTING", flush=True)
    print("COMMITTED", flush=True)  # never reached: the test kills us first


if __name__ == "__main__":
    kind, where, run_id = sys.argv[1:4]
    anyio.run(main, kind, where, run_id)
