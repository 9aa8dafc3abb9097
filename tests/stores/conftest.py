"""Real databases for the store tests: SQLite files, and a PostgreSQL the suite starts.

PostgreSQL runs from the binaries on the machine (``initdb``, ``pg_ctl``), in a
temporary folder, listening on a unix socket only. Both refuse to run as root, so
when the suite runs as root the server runs as ``nobody``. A missing binary fails
the tests that need it: they are never skipped silently.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cancelkit.stores import PostgresStore, SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

PG_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in PG_BIN_DIRS if Path(f"{d}/{name}").exists()), None
    )
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed; the store tests need it")
    return found


def _as_server_user(command: list[str], owner: int | None) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *command] if owner is not None else command


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="ck-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    owner = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None
    if owner is not None:
        for path in (root, sock):
            os.chown(path, owner, -1)

    def run(command: list[str]) -> None:
        subprocess.run(_as_server_user(command, owner), check=True, capture_output=True, text=True)

    run([_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "cancelkit", "--no-sync"])
    options = (
        f"-k {sock} -c listen_addresses='' -c fsync=off -c max_connections=200"
        " -c client_connection_check_interval=100ms"  # notice killed clients mid-query
    )
    run([_binary("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    try:
        yield f"host={sock} dbname=postgres user=cancelkit"
    finally:
        subprocess.run(
            _as_server_user([_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], owner),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def slow_sql(kind: str, seconds: float) -> tuple[str, tuple[float | int]]:
    """A statement that takes about ``seconds`` and that the database can interrupt."""
    if kind == "postgres":
        return "SELECT pg_sleep(%s)", (seconds,)
    # SQLite interrupts its own work, not a Python function's sleep: count instead.
    return (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
        " SELECT count(*) FROM c",
        (int(seconds * 4_000_000),),
    )


# SQLite on both loops; PostgreSQL on asyncio only (psycopg's pool is asyncio-only,
# which tests/stores/test_postgres_only.py asserts rather than skips).
COMBINATIONS = [("asyncio", "sqlite"), ("trio", "sqlite"), ("asyncio", "postgres")]


@pytest.fixture(params=COMBINATIONS, ids=[f"{b}-{k}" for b, k in COMBINATIONS])
def combination(request: pytest.FixtureRequest) -> tuple[str, str]:
    value: tuple[str, str] = request.param
    return value


@pytest.fixture
def anyio_backend(combination: tuple[str, str]) -> str:
    return combination[0]


@pytest.fixture
def store_kind(combination: tuple[str, str]) -> str:
    return combination[1]


@pytest.fixture
async def store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[SQLiteStore | PostgresStore]:
    made: SQLiteStore | PostgresStore
    if store_kind == "sqlite":
        made = SQLiteStore(tmp_path / "app.db")
    else:
        made = PostgresStore(request.getfixturevalue("postgres_dsn"), max_size=20)
    await made.setup()
    await made.execute("DROP TABLE IF EXISTS notes")
    await made.execute("DELETE FROM cancelkit_runs")
    await made.execute("DELETE FROM cancelkit_outbox")
    key = "INTEGER PRIMARY KEY" if store_kind == "sqlite" else "SERIAL PRIMARY KEY"
    await made.execute(f"CREATE TABLE notes (id {key}, run_id TEXT, body TEXT)")
    yield made
    await made.aclose()
