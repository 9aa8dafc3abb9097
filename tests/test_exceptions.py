"""Reasons and the two kinds of exception (DESIGN.md contract 1 and 2)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import cancelkit
from cancelkit import Cancelled, CancelReason, RunCancelled, other_errors
from cancelkit.stores import StoreUnavailable


def test_reason_kinds_are_a_closed_set() -> None:
    for kind in ("user", "disconnect", "timeout", "budget", "shutdown", "error", "parent"):
        assert CancelReason(kind).kind == kind
    with pytest.raises(ValueError, match="unknown cancel kind 'stop'"):
        CancelReason("stop")  # type: ignore[arg-type]


def test_reason_message_must_be_text() -> None:
    with pytest.raises(TypeError, match="message must be a str"):
        CancelReason("user", 42)  # type: ignore[arg-type]


def test_reason_reads_well_and_is_immutable() -> None:
    reason = CancelReason("timeout", "deadline of 5s")
    assert str(reason) == "timeout: deadline of 5s"
    assert str(CancelReason("user")) == "user"
    with pytest.raises(AttributeError):
        reason.kind = "user"  # type: ignore[misc]


def test_cancelled_escapes_except_exception() -> None:
    reason = CancelReason("user", "stop pressed")
    caught: list[str] = []
    with pytest.raises(Cancelled) as info:
        try:
            raise Cancelled(reason)
        except Exception:  # what tool code writes; must not swallow a Stop
            caught.append("swallowed")
    assert caught == []
    assert info.value.reason is reason
    assert "stop pressed" in str(info.value)


def test_run_cancelled_is_an_ordinary_exception() -> None:
    error = RunCancelled(CancelReason("budget", "out of tokens"))
    assert isinstance(error, Exception)
    assert error.reason.kind == "budget"


@pytest.mark.parametrize("cls", [Cancelled, RunCancelled])
def test_exceptions_survive_pickling(cls: Any) -> None:
    error = cls(CancelReason("shutdown", "SIGTERM"))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert copy.reason == CancelReason("shutdown", "SIGTERM")


def test_other_errors_of_a_plain_exception_is_empty() -> None:
    assert other_errors(ValueError("x")) == ()


def test_the_two_kinds_of_cancellation_read_differently() -> None:
    # "Stop what you are doing" and "what you waited for was stopped" are different
    # news; a log line must tell them apart (they printed the same before).
    reason = CancelReason("user", "Stop pressed")
    stop, outcome = str(Cancelled(reason)), str(RunCancelled(reason))
    assert stop != outcome
    assert "being cancelled" in stop
    assert "awaited was cancelled" in outcome
    assert "user: Stop pressed" in stop
    assert "user: Stop pressed" in outcome


def test_every_exception_lives_in_one_module_with_its_tree_drawn() -> None:
    import cancelkit._exceptions as module  # noqa: PLC0415

    public = [cancelkit.BudgetExceeded, StoreUnavailable, Cancelled, RunCancelled]
    for error in [*public, cancelkit.AbandonedThreadWarning]:
        assert getattr(module, error.__name__) is error
        assert error.__name__ in (module.__doc__ or ""), error.__name__
