"""A worker process with runs in flight, for the test to SIGKILL.

Usage: ``python -m tests.scenarios.crash_with_runs sqlite PATH N`` or ``... postgres
DSN N``. It starts N runs, each staging writes in a transaction and then waiting
forever, plus one more whose commit is slow; prints ``READY`` once every ledger row
is ``running`` and the slow commit is under way. The test kills it then.
"""

from __future__ import annotations

import sys

import anyio

from cancelkit import Runs, transaction
from cancelkit.stores import PostgresStore, SQLiteStore


async def main(kind: str, where: str, count: int) -> None:
    store = SQLiteStore(where) if kind == "sqlite" else PostgresStore(where)
    await store.setup()
    slow = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000000)"
        " SELECT count(*) FROM c",
        (),
    )
    runs = Runs()
    begun = anyio.Event()
    committing = anyio.Event()
    started = 0

    async def waiting(run_id: str) -> None:
        nonlocal started
        async with transaction(store, run_id) as tx:
            tx.insert("notes", {"run_id": run_id, "body": "never"})
            started += 1
            if started == count:
                begun.set()
            await anyio.sleep_forever()

    async def committing_slowly(run_id: str) -> None:
        async with transaction(store, run_id, commit_timeout=600) as tx:
            tx.insert("notes", {"run_id": run_id, "body": "never either"})
            tx.execute(slow[0] if kind == "sqlite" else "SELECT pg_sleep(600)", slow[1])
            committing.set()

    for index in range(count):
        runs.start(waiting, f"crash-{index}", run_id=f"crash-{index}")
    runs.start(committing_slowly, "crash-commit", run_id="crash-commit")
    await begun.wait()
    await committing.wait()
    await anyio.sleep(0.3)  # the commit is now in the database
    print("READY", flush=True)
    await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
