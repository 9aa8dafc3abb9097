"""Where the runs of several processes meet: what :class:`Runs` asks of a backend.

One process's :class:`Runs` knows only its own runs. With a backend (Redis, or
PostgreSQL: ``cancelkit.distributed``) every process's registry writes where its runs
are, so a Stop that lands on any worker reaches the run wherever it lives, and any
worker can say how a run is doing or how it ended. This module holds only the
interface and the record a lookup returns, so the registry (layer 2) depends on no
service; the backends themselves are integrations (layer 4).

The cancel is state, not an event: a backend keeps a durable tombstone per run id
(first reason wins), wakes the run's process with a message, and each process re-reads
the tombstones of its active runs on every reconnect and on a backstop interval, so a
Stop is never lost to a dropped message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._exceptions import CancelReason
    from ._tasks import RunStatus

__all__ = ("LocalRuns", "RunInfo", "RunsBackend")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as any process sees it: its status and reason, and where it lives.

    Attributes:
        run_id: the run's id.
        status: ``running``, ``cancelling``, then ``completed``, ``cancelled`` or
            ``failed``.
        reason: why it was stopped (kind ``error`` for a failure), else ``None``.
        owner: the owner it was started with, if any.
        worker: the process that holds (or held) it: ``host:pid:start:nonce``.
        started_at: when it started (``time.time()``).
        ended_at: when it ended, or ``None`` while it runs.
    """

    run_id: str
    status: RunStatus
    reason: CancelReason | None
    owner: str | None
    worker: str | None
    started_at: float | None
    ended_at: float | None


class LocalRuns(Protocol):
    """What a backend may ask of the process's own registry."""

    def active_ids(self) -> list[str]:
        """The ids of this process's runs not yet ended."""
        ...

    def cancel_here(self, run_id: str, reason: CancelReason) -> bool:
        """Cancel a run of this process; ``False`` if it is not (or no longer) here."""
        ...


class RunsBackend(Protocol):
    """A place shared by every process's :class:`Runs` (see the module's docstring).

    Writes that a run's ending makes (:meth:`note_cancelled`, :meth:`note_ended`) are
    queued, in order, never awaited by the run; everything else is one round trip.
    """

    @property
    def worker(self) -> str:
        """This process's name in the backend (``host:pid:start:nonce``)."""
        ...

    async def open(self, local: LocalRuns) -> None:
        """Connect and start listening for Stops aimed at ``local``'s runs."""
        ...

    async def aclose(self) -> None:
        """Write what is queued, stop listening, and disconnect."""
        ...

    async def register(self, run_id: str, owner: str | None) -> CancelReason | None:
        """Claim ``run_id`` for a run of this process, before the run does anything.

        Returns:
            The reason of a Stop that was sent for this id before the run started
            (by its owner, or without an owner check), else ``None``.

        Raises:
            ValueError: the id was already used, here or in another process (ids are
                never reused, so a late Stop cannot reach a newer run).
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    def note_cancelled(self, run_id: str, reason: CancelReason) -> None:
        """A run of this process was cancelled here: record the tombstone (queued;
        safe from any thread)."""
        ...

    def note_ended(self, run_id: str, status: RunStatus, reason: CancelReason | None) -> None:
        """A run of this process ended: record how (queued; from the loop's thread)."""
        ...

    async def cancel(self, run_id: str, reason: CancelReason, owner: str | None) -> bool:
        """Stop a run wherever it lives.

        Returns:
            ``True`` if this call stopped a running run. ``False`` for an unknown id,
            an ended or already stopped run, or someone else's run, alike. A Stop for
            an id no run has yet is kept (for the backend's tombstone lifetime) and
            wins when a run of that owner starts under that id.

        Raises:
            BackendUnavailable: the backend cannot be reached; nothing was sent.
        """
        ...

    async def info(self, run_id: str, owner: str | None) -> RunInfo | None:
        """The run as the backend knows it (``None``: unknown, or not ``owner``'s).

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        ...
