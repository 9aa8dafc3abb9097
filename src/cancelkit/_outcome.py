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


@dataclass(frozen=True, slots=True, weakref_slot=True, init=False)
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

    def __init__(
        self,
        run_id: str,
        status: RunStatus,
        reason: CancelReason | None,
        value: T | None,
        error: BaseException | None,
        partial: Any = None,
        _run: _Receipted | None = None,
    ) -> None:
        # Frozen, yet made once per awaited run: a frozen dataclass's own __init__
        # goes through object.__setattr__ by name per field (about 1 us for seven),
        # the slots' own setters do the same in a third of that.
        _set_run_id(self, run_id)
        _set_status(self, status)
        _set_reason(self, reason)
        _set_value(self, value)
        _set_error(self, error)
        _set_partial(self, partial)
        _set_run(self, _run)

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


# The slots' setters, bypassing the frozen __setattr__ (made after the class: a
# dataclass with slots is a new class).
_set_run_id = RunOutcome.__dict__["run_id"].__set__
_set_status = RunOutcome.__dict__["status"].__set__
_set_reason = RunOutcome.__dict__["reason"].__set__
_set_value = RunOutcome.__dict__["value"].__set__
_set_error = RunOutcome.__dict__["error"].__set__
_set_partial = RunOutcome.__dict__["partial"].__set__
_set_run = RunOutcome.__dict__["_run"].__set__
