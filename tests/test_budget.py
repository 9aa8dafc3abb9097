"""Budget: reservations that concurrent calls cannot overshoot (no model needed)."""

from __future__ import annotations

import math
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


def test_track_names_why_a_stream_must_stop() -> None:
    budget = Budget(output_tokens=1000)
    open_ended = budget.reserve(input_tokens=0, max_output_tokens=60)
    assert not open_ended.clamped
    assert open_ended.track(60) is None
    assert open_ended.track(88) is None  # room left: the reservation grows with the stream
    assert open_ended.held_output_tokens == 88
    last = budget.reserve(input_tokens=0, max_output_tokens=2000)
    assert (last.max_output_tokens, last.clamped) == (912, True)
    why = open_ended.track(89)  # > 60 * 1.2 + 16: a provider ignoring max_tokens
    assert why == "the call exceeded its 60-token reservation (89 tokens)"
    assert last.track(911) is None
    assert last.track(912) == "the output cap is reached (912 tokens)"


def test_a_reservation_of_exactly_what_is_left_is_the_caps_end() -> None:
    """Issue #9: ``grant == what is left`` was not "clamped", so the stream ran on."""
    budget = Budget(output_tokens=50)
    reservation = budget.reserve(input_tokens=0, max_output_tokens=50)
    assert reservation.clamped
    assert reservation.track(49) is None
    assert reservation.track(50) == "the output cap is reached (50 tokens)"


def test_a_stream_past_its_reservation_holds_more_or_stops() -> None:
    """Past its reservation a stream holds more budget under the lock, or must stop."""
    budget = Budget(output_tokens=100)
    first = budget.reserve(input_tokens=0, max_output_tokens=50)
    second = budget.reserve(input_tokens=0, max_output_tokens=30)
    assert not first.clamped
    assert first.track(60) is None  # 20 were free: now held by the first call
    assert first.held_output_tokens == 60
    assert budget.remaining()["output_tokens"] == 10
    assert first.track(70) is None
    why = first.track(71)  # the second call holds the rest: no room
    assert why is not None
    assert "no budget left" in why
    assert budget.remaining()["output_tokens"] == 0  # never negative, whatever the provider
    second.settle(input_tokens=0, output_tokens=10)  # 20 released
    assert first.track(75) is None
    first.settle(input_tokens=0, output_tokens=75)
    assert budget.spent["output_tokens"] == 85
    assert budget.remaining()["output_tokens"] == 15


def test_total_and_cost_caps_bound_an_overshooting_stream() -> None:
    total = Budget(total_tokens=100)
    reservation = total.reserve(input_tokens=40, max_output_tokens=50)
    assert reservation.track(60) is None
    assert reservation.track(61) is not None
    priced = Budget(cost=0.001, pricing=Pricing(input_per_mtok=0.0, output_per_mtok=10.0))
    reservation = priced.reserve(input_tokens=0, max_output_tokens=80)
    assert not reservation.clamped
    assert reservation.track(100) is None  # 100 tokens at 10 per million: the whole cap
    assert reservation.track(101) is not None


def test_threads_overshooting_their_reservations_hold_the_cap() -> None:
    """Providers ignoring ``max_tokens`` in every thread: each stops within one chunk.

    Whatever the interleaving, budget is never held beyond the cap, and what is
    charged exceeds it by at most the one chunk each stream saw before it stopped.
    """
    cap, chunk, callers = 1000, 7, 40
    budget = Budget(output_tokens=cap)
    barrier = threading.Barrier(callers)
    overshoots: list[int] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait()
        try:
            reservation = budget.reserve(input_tokens=0, max_output_tokens=30)
        except BudgetExceeded:
            return
        produced = 0
        while True:
            produced += chunk  # the provider sends a chunk whatever max_tokens said
            why = reservation.track(produced)
            assert budget.remaining()["output_tokens"] >= 0
            if why is not None:
                break
        with lock:
            overshoots.append(produced - reservation.held_output_tokens)
        reservation.settle(0, produced)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(0 <= over <= chunk for over in overshoots)
    assert budget.spent["output_tokens"] <= cap + chunk * len(overshoots)
    assert budget.spent["output_tokens"] - sum(overshoots) <= cap  # held never passed it


def test_the_cost_cap_holds_when_a_price_is_zero() -> None:
    """Issue #9: with a free output the cost cap was not checked at all, input included."""
    free_output = Budget(cost=0.01, pricing=Pricing(input_per_mtok=1.0, output_per_mtok=0.0))
    with pytest.raises(BudgetExceeded, match=r"cost cap of 0\.01 "):
        free_output.reserve(input_tokens=20_000, max_output_tokens=10)  # 0.02 of input
    free_output.reserve(input_tokens=6_000, max_output_tokens=10).settle(6_000, 10)
    with pytest.raises(BudgetExceeded, match="cost"):
        free_output.reserve(input_tokens=5_000, max_output_tokens=10)  # 0.011 in all
    assert free_output.reserve(input_tokens=4_000, max_output_tokens=10**9).max_output_tokens == (
        10**9
    )  # output is free: the cost cap does not bound it
    free_input = Budget(cost=0.001, pricing=Pricing(input_per_mtok=0.0, output_per_mtok=10.0))
    assert free_input.reserve(input_tokens=10**6, max_output_tokens=500).max_output_tokens == 100


def test_bad_counts_are_value_errors() -> None:
    """Issue #9: negative or non-int counts corrupted the books instead of failing."""
    budget = Budget(output_tokens=100)
    for bad in (-1, 2.5, True, "3", None):
        with pytest.raises(ValueError, match="input_tokens"):
            budget.reserve(input_tokens=bad, max_output_tokens=10)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_output_tokens"):
            budget.reserve(input_tokens=0, max_output_tokens=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_output_tokens"):
        budget.reserve(input_tokens=0, max_output_tokens=10, min_output_tokens=-1)
    with pytest.raises(ValueError, match="below min_output_tokens"):
        budget.reserve(input_tokens=0, max_output_tokens=0)
    reservation = budget.reserve(input_tokens=0, max_output_tokens=10)
    for bad in (-1, 1.5, False):
        with pytest.raises(ValueError, match="output_tokens"):
            reservation.settle(0, bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="input_tokens"):
            reservation.settle(bad, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_tokens"):
        reservation.track(-1)
    reservation.settle(0, 4)  # a refused settle left the reservation open
    assert budget.spent == {"input_tokens": 0, "output_tokens": 4, "requests": 1, "cost": 0}
    assert budget.remaining()["output_tokens"] == 96


def test_bad_caps_and_prices_are_refused() -> None:
    for bad in (math.nan, -0.5, "10", True):
        with pytest.raises(ValueError, match="cost"):
            Budget(cost=bad, pricing=Pricing(1.0, 1.0))  # type: ignore[arg-type]
    for price in (math.nan, math.inf, -1.0, True):
        with pytest.raises(ValueError, match="output_per_mtok"):
            Pricing(input_per_mtok=1.0, output_per_mtok=price)
        with pytest.raises(ValueError, match="input_per_mtok"):
            Pricing(input_per_mtok=price, output_per_mtok=1.0)
