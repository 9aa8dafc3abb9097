"""Budget: reservations that concurrent calls cannot overshoot (no model needed)."""

from __future__ import annotations

import threading

import pytest

from cancelkit import Budget, BudgetExceeded, Pricing


def test_max_tokens_is_clamped_to_what_is_left() -> None:
    budget = Budget(output_tokens=100)
    first = budget.reserve(input_tokens=0, max_output_tokens=70)
    second = budget.reserve(input_tokens=0, max_output_tokens=70)
    assert (first.max_output_tokens, first.clamped) == (70, False)
    assert (second.max_output_tokens, second.clamped) == (30, True)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(input_tokens=0, max_output_tokens=70)
    assert info.value.reason.kind == "budget"
    assert "output_tokens cap of 100" in info.value.reason.message


def test_settling_releases_what_was_not_used() -> None:
    budget = Budget(output_tokens=100)
    reservation = budget.reserve(input_tokens=0, max_output_tokens=100)
    reservation.settle(input_tokens=5, output_tokens=40)
    reservation.settle(input_tokens=5, output_tokens=40)  # idempotent
    assert budget.spent["output_tokens"] == 40
    assert budget.remaining()["output_tokens"] == 60
    assert budget.reserve(input_tokens=0, max_output_tokens=100).max_output_tokens == 60


def test_request_input_and_total_caps() -> None:
    budget = Budget(requests=2, input_tokens=50, total_tokens=80)
    budget.reserve(input_tokens=30, max_output_tokens=10)
    with pytest.raises(BudgetExceeded, match="input_tokens"):
        budget.reserve(input_tokens=30, max_output_tokens=10)
    grant = budget.reserve(input_tokens=10, max_output_tokens=100)
    assert grant.max_output_tokens == 80 - 30 - 10 - 10  # total cap binds
    with pytest.raises(BudgetExceeded, match="requests"):
        budget.reserve(input_tokens=0, max_output_tokens=1)


def test_cost_cap_with_pricing() -> None:
    budget = Budget(cost=0.01, pricing=Pricing(input_per_mtok=1.0, output_per_mtok=10.0))
    grant = budget.reserve(input_tokens=1000, max_output_tokens=100_000)
    assert grant.max_output_tokens == 900  # (0.01 - 1000 * 1e-6) / 10e-6
    with pytest.raises(BudgetExceeded, match="cost"):
        budget.reserve(input_tokens=0, max_output_tokens=10)


def test_bad_caps_are_refused() -> None:
    with pytest.raises(ValueError, match="output_tokens"):
        Budget(output_tokens=-1)
    with pytest.raises(ValueError, match="pricing"):
        Budget(cost=1.0)


def test_threads_racing_for_the_last_tokens_never_overshoot() -> None:
    budget = Budget(output_tokens=1000)
    barrier = threading.Barrier(50)
    granted: list[int] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait()
        for _ in range(20):
            try:
                reservation = budget.reserve(input_tokens=0, max_output_tokens=7)
            except BudgetExceeded:
                return
            with lock:
                granted.append(reservation.max_output_tokens)
            reservation.settle(0, reservation.max_output_tokens)

    threads = [threading.Thread(target=caller) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 1000
    assert budget.spent["output_tokens"] == 1000


def test_over_names_why_a_stream_must_stop() -> None:
    budget = Budget(output_tokens=100)
    open_ended = budget.reserve(input_tokens=0, max_output_tokens=60)
    last = budget.reserve(input_tokens=0, max_output_tokens=60)
    assert open_ended.over(60) is None
    assert open_ended.over(89) is not None  # > 60 * 1.2 + 16  # a provider ignoring max_tokens
    assert last.over(39) is None
    assert last.over(40) == "the output cap is reached (40 tokens)"
