"""``RunOutcome``: how a run ended, as its callers read it.

Made when first asked for (``run.outcome``, ``await run.wait()``), not when the run
ends: the run keeps how it ended in its own fields, and holds its outcome only
weakly. An outcome holds its run (for the receipt), so the two make no reference
cycle: a finished run nobody holds any more is freed at once, never left for the
garbage collector (at 100,000 runs a registry's history turns over quickly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._exceptions import CancelReason, RunCancelled

if TYPE_CHECKING:
    from ._receipt import StopReceipt
    from ._tasks import RunStatus

__all__ = ("RunOutcome",)

T = TypeVar("T")


class _Receipted(Protocol):
    """The run an outcome belongs to, as the outcome needs it: for its receipt."""

    def _receipt(self) -> StopReceipt: ...


@dataclass(frozen=True, slots=True, weakref_slot=True)
class RunOutcome(Generic[T]):
    """How a run ended.

    Attributes:
        partial: what the run handed back with :func:`cancelkit.keep_partial` (the
            text so far, a framework's state), kept however it ended.
    """

    run_id: str
    status: RunStatus
    reason: CancelReason | None
    value: T | None
    error: BaseException | None
    partial: Any = None
    _run: _Receipted | None = field(default=None, repr=False, compare=False)

    @property
    def receipt(self) -> StopReceipt:
        """What the Stop stopped and when, layer by layer (built on first read)."""
        assert self._run is not None
        return self._run._receipt()  # noqa: SLF001

    def result(self) -> T:
        """The run's value, as ``concurrent.futures.Future.result()`` gives it.

        Raises:
            RunCancelled: the run was cancelled; ``.reason`` says why.
            Exception: the error the run failed with.
        """
        if self.status == "cancelled":
            assert self.reason is not None
            raise RunCancelled(self.reason)
        if self.status == "failed":
            assert self.error is not None
            raise self.error
        return self.value  # type: ignore[return-value]
