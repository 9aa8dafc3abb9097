"""SQLiteStore's ledger finish: at once when the database is free, else in its thread."""

from __future__ import annotations

import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from cancelkit import CancelReason
from cancelkit.stores import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

STOP = CancelReason("user", "Stop pressed")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    made = SQLiteStore(tmp_path / "app.db")
    await made.setup()
    yield made
    await made.aclose()


async def test_a_finish_on_a_free_database_is_done_without_the_thread(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.begin("r1")

    async def no_thread(*_args: Any) -> Any:
        raise AssertionError("went through the store's thread")

    monkeypatch.setattr(store, "_run", no_thread)
    assert await store.finish("r1", "cancelled", STOP)
    assert not await store.finish("r1", "cancelled", STOP)  # no longer running
    monkeypatch.undo()
    state = await store.state("r1")
    assert state is not None
    assert (state.status, state.reason) == ("cancelled", STOP)


async def test_a_finish_on_a_locked_database_waits_its_turn_in_the_thread(
    store: SQLiteStore,
) -> None:
    await store.begin("r1")
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    threading.Timer(0.2, other.execute, args=("COMMIT",)).start()
    with anyio.fail_after(5):
        assert await store.finish("r1", "cancelled", STOP)
    other.close()
    state = await store.state("r1")
    assert state is not None
    assert state.status == "cancelled"
