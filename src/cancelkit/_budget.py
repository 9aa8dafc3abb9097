"""``Budget``: hard caps on tokens, requests and cost that concurrency cannot overshoot.

Checking "is there budget left?" before a call and adding the usage after it is a
race: fifty concurrent calls all see budget left, and all spend it. A ``Budget``
instead *reserves* before each call, under one lock: the call's input estimate and
its ``max_tokens``, clamped to what is left (so the provider itself stops at the
cap). When the call ends its reservation is settled with the actual usage and the
unused part released. Safe across tasks and threads.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from ._exceptions import CancelReason, RunCancelled

__all__ = ("Budget", "BudgetExceeded", "Pricing", "Reservation")


class BudgetExceeded(RunCancelled):
    """A call could not be made within the budget; ``.reason.kind`` is ``budget``."""


@dataclass(frozen=True)
class Pricing:
    """Prices in currency units per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The price of so many tokens."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def _cap(value: object, name: str) -> float:
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"Budget({name}=...) must be a number >= 0, not {value!r}")
    return float(value)


class Budget:
    """Caps for a run (or a user, or a day): exceeded by no interleaving of calls.

    Args:
        input_tokens: cap on input (prompt) tokens.
        output_tokens: cap on output (generated) tokens.
        total_tokens: cap on input + output.
        requests: cap on the number of calls.
        cost: cap on ``pricing.cost(...)`` summed over calls.
        pricing: required with ``cost``.

    Raises:
        ValueError: a negative cap, or ``cost`` without ``pricing``.
    """

    def __init__(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
        requests: int | None = None,
        cost: float | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self._caps = {
            "input_tokens": _cap(input_tokens, "input_tokens"),
            "output_tokens": _cap(output_tokens, "output_tokens"),
            "total_tokens": _cap(total_tokens, "total_tokens"),
            "requests": _cap(requests, "requests"),
            "cost": _cap(cost, "cost"),
        }
        if cost is not None and pricing is None:
            raise ValueError("Budget(cost=...) needs pricing=Pricing(...)")
        self.pricing = pricing
        self._lock = threading.Lock()
        self._spent = {"input_tokens": 0.0, "output_tokens": 0.0, "requests": 0.0, "cost": 0.0}
        self._held = {"input_tokens": 0.0, "output_tokens": 0.0, "requests": 0.0, "cost": 0.0}

    def __repr__(self) -> str:
        return f"<Budget spent={self.spent}>"

    @property
    def spent(self) -> dict[str, float]:
        """Settled usage: ``input_tokens``, ``output_tokens``, ``requests``, ``cost``."""
        with self._lock:
            return dict(self._spent)

    def remaining(self) -> dict[str, float]:
        """What is left of each cap, counting reservations in flight."""
        with self._lock:
            used = {k: self._spent[k] + self._held[k] for k in self._spent}
            caps = self._caps
            return {
                "input_tokens": caps["input_tokens"] - used["input_tokens"],
                "output_tokens": caps["output_tokens"] - used["output_tokens"],
                "total_tokens": caps["total_tokens"] - used["input_tokens"] - used["output_tokens"],
                "requests": caps["requests"] - used["requests"],
                "cost": caps["cost"] - used["cost"],
            }

    def _cost(self, input_tokens: float, output_tokens: float) -> float:
        if self.pricing is None:
            return 0.0
        return self.pricing.cost(int(input_tokens), int(output_tokens))

    def reserve(
        self, *, input_tokens: int, max_output_tokens: int, min_output_tokens: int = 1
    ) -> Reservation:
        """Hold budget for one call before making it.

        Args:
            input_tokens: the call's input, estimated.
            max_output_tokens: the most output the caller wants.
            min_output_tokens: below this, the call is not worth making.

        Returns:
            A reservation whose ``max_output_tokens`` is the (possibly clamped)
            ``max_tokens`` to send.

        Raises:
            BudgetExceeded: the call does not fit (kind ``budget``, the cap named).
        """
        with self._lock:
            caps, spent, held = self._caps, self._spent, self._held

            def left(key: str) -> float:
                return caps[key] - spent[key] - held[key]

            if left("requests") < 1:
                raise _exceeded("requests", caps["requests"])
            if input_tokens > left("input_tokens"):
                raise _exceeded("input_tokens", caps["input_tokens"])
            total_left = (
                caps["total_tokens"]
                - spent["input_tokens"]
                - spent["output_tokens"]
                - held["input_tokens"]
                - held["output_tokens"]
                - input_tokens
            )
            limits = {
                "output_tokens": left("output_tokens"),
                "total_tokens": total_left,
            }
            if self.pricing is not None and self.pricing.output_per_mtok > 0:
                money = left("cost") - self._cost(input_tokens, 0)
                limits["cost"] = math.floor(money * 1e6 / self.pricing.output_per_mtok)
            binding = min(limits, key=lambda k: limits[k])
            grant = int(min(max_output_tokens, limits[binding]))
            if grant < min_output_tokens:
                raise _exceeded(binding, caps[binding])
            cost = self._cost(input_tokens, grant)
            held["input_tokens"] += input_tokens
            held["output_tokens"] += grant
            held["requests"] += 1
            held["cost"] += cost
            return Reservation(self, input_tokens, grant, grant < max_output_tokens, cost)

    def _settle(self, reservation: Reservation, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            held, spent = self._held, self._spent
            held["input_tokens"] -= reservation.input_tokens
            held["output_tokens"] -= reservation.max_output_tokens
            held["requests"] -= 1
            held["cost"] -= reservation.cost
            spent["input_tokens"] += input_tokens
            spent["output_tokens"] += output_tokens
            spent["requests"] += 1
            spent["cost"] += self._cost(input_tokens, output_tokens)


def _exceeded(cap: str, limit: float) -> BudgetExceeded:
    return BudgetExceeded(CancelReason("budget", f"the {cap} cap of {limit:g} is reached"))


class Reservation:
    """Budget held for one call; ``settle()`` it with what the call really used."""

    __slots__ = ("_budget", "_settled", "clamped", "cost", "input_tokens", "max_output_tokens")

    def __init__(
        self, budget: Budget, input_tokens: int, max_output_tokens: int, clamped: bool, cost: float
    ) -> None:
        self._budget = budget
        self._settled = False
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.clamped = clamped
        self.cost = cost

    def over(self, output_tokens: int) -> str | None:
        """Whether a stream that has produced ``output_tokens`` must be stopped, and why.

        A clamped reservation is the last of the budget: reaching it is reaching the
        cap. An unclamped one is only exceeded by a provider that ignores
        ``max_tokens`` (a margin absorbs estimation error).
        """
        if self.clamped and output_tokens >= self.max_output_tokens:
            return f"the output cap is reached ({output_tokens} tokens)"
        if output_tokens > self.max_output_tokens * 1.2 + 16:
            return f"the call exceeded its {self.max_output_tokens}-token reservation"
        return None

    def settle(self, input_tokens: int, output_tokens: int) -> None:
        """Record what the call used and release the rest; later calls do nothing."""
        if self._settled:
            return
        self._settled = True
        self._budget._settle(self, input_tokens, output_tokens)  # noqa: SLF001
