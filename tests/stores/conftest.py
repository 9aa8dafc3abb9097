"""Real databases for the store tests: SQLite files, and the PostgreSQL that
``tests/services.py`` starts for the session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cancelkit.stores import PostgresStore, SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


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
