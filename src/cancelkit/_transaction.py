"""``transaction``: writes staged during a run, committed all or nothing.

Inside the block, code *stages* writes (inserts, updates, deletes, SQL with
parameters, outbox records); nothing reaches the database until the block exits
cleanly. Then, in one database transaction, the run's row in ``cancelkit_runs`` moves
from ``running`` to ``committed`` and the writes are applied. A cancel is the same
row moving from ``running`` to ``cancelled``, so Stop racing commit is decided by
the database: exactly one of the two updates matches. The commit is shielded from
cancellation and bounded by a timeout; a cancellation that arrives during it is
delivered right after, once the outcome is recorded.

Starting the commit is the run's point of no return: the token is *claimed* first
(atomically with ``cancel()``), so a Stop that comes while the commit runs returns
``False`` and the run ends as the database says. A Stop that came before it wins:
nothing is written. When the store cannot say how its commit ended (a timeout, a
lost connection), the ledger row is read back and reported, never guessed.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._exceptions import CancelReason, RunCancelled, is_cancellation
from ._receipt import record
from ._token import current_token
from ._validate import seconds

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from ._token import CancelToken

__all__ = ("LedgerRow", "LedgerStatus", "Store", "Transaction", "Write", "transaction")

Settled = Literal["committed", "cancelled", "failed"]
"""How a run's writes ended, in the ledger and in the transaction alike."""

TxOutcome = Literal["open", Settled, "unknown"]
"""A transaction's outcome: ``open`` in the block, then as settled (``unknown`` only
when the commit failed and the ledger could not be read back)."""

_OUTBOX = ("run_id", "kind", "payload")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


@dataclass(frozen=True, slots=True)
class Write:
    """One staged write, rendered to SQL by the store that commits it."""

    kind: Literal["insert", "update", "delete", "sql"]
    table: str = ""
    columns: tuple[str, ...] = ()
    values: tuple[Any, ...] = ()
    keys: tuple[str, ...] = ()
    key_values: tuple[Any, ...] = ()
    sql: str = ""
    params: tuple[Any, ...] = ()


LedgerStatus = Literal["running", Settled]
"""Where a run's writes stand in the ledger: not a run's status (a run may go on after
its writes committed), the fate of its transaction."""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A run's row in the ledger table ``cancelkit_runs``."""

    run_id: str
    status: LedgerStatus
    reason: CancelReason | None
    attempts: int


class Store(Protocol):
    """What a transaction needs from a database (``SQLiteStore``, ``PostgresStore``)."""

    paramstyle: str

    async def begin(self, run_id: str) -> LedgerRow:
        """Create or reopen the run's row; the state it had before (or a new one)."""
        ...

    async def commit(self, run_id: str, writes: Sequence[Write], timeout: float) -> bool:
        """Apply ``writes`` and mark the run committed, atomically; False if not running."""
        ...

    async def finish(
        self, run_id: str, status: Literal["cancelled", "failed"], reason: CancelReason
    ) -> bool:
        """Move a running run to ``status``; False if it was no longer running."""
        ...

    async def cancel(self, run_id: str, reason: CancelReason | None = None) -> bool:
        """Cancel the run in the database; False if it already committed or ended."""
        ...

    async def state(self, run_id: str) -> LedgerRow | None:
        """The run's row, if any."""
        ...


def _identifier(name: object, what: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} must be a plain SQL identifier, not {name!r}")
    return name


@functools.lru_cache(maxsize=4096)
def _columns(names: tuple[object, ...], what: str) -> tuple[str, ...]:
    return tuple(_identifier(name, f"a column name in {what}") for name in names)


def _split(mapping: object, what: str) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Column names (validated, cached by shape) and values of a mapping."""
    if not hasattr(mapping, "items"):
        raise TypeError(f"{what} must be a mapping of column names to values")
    names = tuple(mapping.keys())  # type: ignore[attr-defined]
    if not names:
        raise ValueError(f"{what} must not be empty")
    try:
        columns = _columns(names, what)
    except TypeError as exc:  # an unhashable key
        raise ValueError(f"{what} has a column name that is not a string") from exc
    return columns, tuple(mapping.values())  # type: ignore[attr-defined]


class Transaction:
    """The staged writes of one run; see :func:`transaction`.

    After the block, ``outcome`` is ``committed``, ``cancelled`` or ``failed`` (as
    recorded in the database; ``unknown`` only when the commit failed and the
    database could not even be read back), ``reason`` says why when it is not
    committed, and ``replayed`` is True when the run had already committed before
    (nothing was written again).
    """

    def __init__(
        self, store: Store, run_id: str, token: CancelToken | None, commit_timeout: float
    ) -> None:
        self.store = store
        self.run_id = run_id
        self._token = token
        self._timeout = commit_timeout
        self.writes: list[Write] = []
        self.outcome: TxOutcome = "open"
        self.reason: CancelReason | None = None
        self.replayed = False
        self._entered = False

    def _stage(self, write: Write) -> None:
        if not self._entered or self.outcome != "open":
            raise RuntimeError("stage writes inside the transaction's `async with` block")
        self.writes.append(write)

    def insert(self, table: str, values: Mapping[str, Any]) -> None:
        """Stage ``INSERT INTO table (columns) VALUES (...)``."""
        columns, row = _split(values, "values")
        self._stage(Write("insert", _identifier(table, "table"), columns, row))

    def update(self, table: str, values: Mapping[str, Any], where: Mapping[str, Any]) -> None:
        """Stage ``UPDATE table SET ... WHERE col = value AND ...`` (``where`` required)."""
        columns, row = _split(values, "values")
        keys, key_values = _split(where, "where")
        self._stage(Write("update", _identifier(table, "table"), columns, row, keys, key_values))

    def delete(self, table: str, where: Mapping[str, Any]) -> None:
        """Stage ``DELETE FROM table WHERE col = value AND ...`` (``where`` required)."""
        keys, key_values = _split(where, "where")
        self._stage(Write("delete", _identifier(table, "table"), keys=keys, key_values=key_values))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Stage arbitrary SQL, with parameters in the store's ``paramstyle``."""
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError("execute() needs a SQL string")
        if isinstance(params, str | bytes) or not hasattr(params, "__iter__"):
            raise TypeError("params must be a sequence of values")
        self._stage(Write("sql", sql=sql, params=tuple(params)))

    def outbox(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Stage a typed outbox record (``cancelkit_outbox``), sent on only if committed."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("an outbox record needs a kind")
        try:
            body = json.dumps(dict(payload), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the outbox payload must be JSON-serialisable: {exc}") from exc
        self._stage(Write("insert", "cancelkit_outbox", _OUTBOX, (self.run_id, kind, body)))

    async def __aenter__(self) -> Transaction:
        if self._entered:
            raise RuntimeError("a transaction block can be entered once")
        self._entered = True
        if self._token is None:
            self._token = current_token()
        prior = await self.store.begin(self.run_id)
        self.replayed = prior.status == "committed"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._exit(exc)
        finally:
            record("transaction", self.run_id, self.outcome, detail=f"{len(self.writes)} write(s)")

    async def _exit(self, exc: BaseException | None) -> None:
        assert self._token is not None
        token = self._token
        if exc is None and token.reason is None:
            await self._commit(token)
            return
        if exc is None or token.reason is not None or is_cancellation(exc):
            status: Literal["cancelled", "failed"] = "cancelled"
            reason = (
                token.reason
                or getattr(exc, "reason", None)
                or CancelReason("parent", "the task running the transaction was cancelled")
            )
        else:
            status = "failed"
            reason = CancelReason("error", f"{type(exc).__name__}: {exc}")
        self.outcome, self.reason = status, reason
        if not self.replayed:
            await self.store.finish(self.run_id, status, reason)
        if exc is None:  # the block ended cleanly, but its run was stopped: say so
            raise RunCancelled(reason)

    async def _commit(self, token: CancelToken) -> None:
        if self.replayed:
            self.outcome = "committed"
            return
        if not token._claim():  # noqa: SLF001 - a Stop came first: nothing is written
            reason = token.reason or CancelReason("user", "cancelled")
            self.outcome, self.reason = "cancelled", reason
            await self.store.finish(self.run_id, "cancelled", reason)
            raise RunCancelled(reason)
        try:
            committed = await self.store.commit(self.run_id, self.writes, self._timeout)
        except Exception as exc:
            if await self._read_back(token, exc):
                return  # the commit went through; only its answer was lost
            raise
        if committed:
            self.outcome = "committed"
            return
        state = await self.store.state(self.run_id)
        if state is not None and state.status == "committed":  # a concurrent attempt won
            self.outcome, self.replayed = "committed", True
            return
        self.outcome = "cancelled" if state is None or state.status == "cancelled" else "failed"
        self.reason = (state.reason if state else None) or CancelReason(
            "user", "cancelled in the database"
        )
        if self.outcome == "cancelled":
            token._overrule(self.reason)  # noqa: SLF001 - the database's Stop won
        raise RunCancelled(self.reason)

    async def _read_back(self, token: CancelToken, error: Exception) -> bool:
        """The store could not say how its commit ended: ask the ledger.

        A store's ``commit()`` that raises has ended its work (it is never left
        running), so the ledger row is the truth. Returns True if it says
        committed; otherwise records what it says (and settles a row still
        ``running`` as failed) and returns False.
        """
        why = CancelReason("error", f"commit failed: {type(error).__name__}: {error}")
        try:
            state = await self.store.state(self.run_id)
            if state is not None and state.status == "running":
                await self.store.finish(self.run_id, "failed", why)
                state = await self.store.state(self.run_id)
        except Exception:  # noqa: BLE001 - the database is gone: say we do not know
            self.outcome, self.reason = "unknown", why
            return False
        if state is not None and state.status == "committed":
            self.outcome, self.reason = "committed", None
            return True
        if state is not None and state.status == "cancelled":
            self.outcome, self.reason = "cancelled", state.reason or why
            token._overrule(self.reason)  # noqa: SLF001 - the database's Stop won
            return False
        self.outcome, self.reason = "failed", why
        return False


def transaction(
    store: Store, run_id: str, *, token: CancelToken | None = None, commit_timeout: float = 10.0
) -> Transaction:
    """Stage writes for ``run_id`` and commit them all or nothing.

    Usage::

        async with transaction(store, run.id) as tx:
            tx.insert("messages", {"run_id": run.id, "text": reply})
            tx.outbox("email", {"to": user, "subject": "done"})
        # committed here, unless the run was stopped: then nothing was written

    Args:
        store: a :class:`SQLiteStore` or :class:`PostgresStore` (after ``setup()``).
        run_id: the run the writes belong to; retrying a committed run id writes
            nothing twice (``tx.replayed``).
        token: whose cancellation means "do not commit" (default: the current
            run's token).
        commit_timeout: seconds the shielded commit may take.

    Raises:
        ValueError, TypeError: bad arguments, and bad writes as they are staged.
        RunCancelled: at the end of a clean block whose run was cancelled, including
            by a cancel that reached the database first.
    """
    if not isinstance(run_id, str) or not run_id:
        raise ValueError("transaction() needs a non-empty run_id")
    if not all(hasattr(store, name) for name in ("begin", "commit", "finish", "cancel")):
        raise TypeError(f"transaction() needs a store, not {type(store).__name__}")
    limit = seconds(commit_timeout, "commit_timeout", allow_none=False)
    assert limit is not None
    return Transaction(store, run_id, token, limit)
