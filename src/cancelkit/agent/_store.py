"""The agent's own table, ``cancelkit_replies``: one row per completed run.

The stores know only the run ledger and the outbox; what an agent records about a
run (its final reply and usage) is the agent's business, so the agent creates its
table (:meth:`Agent.setup <cancelkit.agent.Agent.setup>`, after the store's own
``setup()``) and writes to it in the run's transaction, so that the reply lands
only if the run completed, together with every write its tools staged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .. import Transaction
    from ._events import AgentRun

__all__ = ("REPLIES", "SchemaStore", "create_tables", "record_reply")

REPLIES = "cancelkit_replies"

# Valid on SQLite and PostgreSQL alike; IF NOT EXISTS makes setup() safe to repeat.
_CREATE_REPLIES = (
    f"CREATE TABLE IF NOT EXISTS {REPLIES} ("
    " run_id TEXT PRIMARY KEY, text TEXT NOT NULL,"
    " input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL)"
)


@runtime_checkable
class SchemaStore(Protocol):
    """A store that runs one statement outside any run (``SQLiteStore`` and
    ``PostgresStore`` do): how the agent creates its table."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> object:
        """Run ``sql`` now, in a transaction of its own."""
        ...


async def create_tables(store: object) -> None:
    """Create ``cancelkit_replies`` on ``store`` if it is missing.

    Raises:
        TypeError: the store cannot run a statement (it has no ``execute()``):
            create the table yourself, with the columns of ``_CREATE_REPLIES``.
    """
    if not isinstance(store, SchemaStore):
        raise TypeError(
            f"{type(store).__name__} has no execute(): create the {REPLIES} table yourself"
            " before starting runs"
        )
    await store.execute(_CREATE_REPLIES)


def record_reply(tx: Transaction, state: AgentRun) -> None:
    """Stage the run's reply and usage, written only if the run commits."""
    tx.insert(
        REPLIES,
        {
            "run_id": state.id,
            "text": state.text,
            "input_tokens": state.input_tokens,
            "output_tokens": state.output_tokens,
        },
    )
