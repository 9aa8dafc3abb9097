"""``Budget``: hard caps on tokens, requests and cost that concurrency cannot overshoot.

Checking "is there budget left?" before a call and adding the usage after it is a
race: fifty concurrent calls all see budget left, and all spend it. A ``Budget``
instead *reserves* before each call, under one lock: the call's input estimate and
its ``max_tokens``, clamped to what is left (so the provider itself stops at the
cap). When the call ends its reservation is settled with the actual usage and the
unused part released. Safe across tasks and threads.

A provider may ignore ``max_tokens``. So a stream reports its output as it arrives
(:meth:`Reservation.track`): past its reservation it must hold more, under the same
lock, and when a cap has no room left it must stop. The budget never holds more than
its caps, and a stream is charged at most the one chunk it saw before it stopped.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from ._exceptions import BudgetExceeded, CancelReason

__all__ = ("Budget", "Pricing", "Reservation")


@dataclass(frozen=True)
class Pricing:
    """Prices in currency units per million tokens.

    Raises:
        ValueError: a price that is not a finite number >= 0.
    """

    input_per_mtok: float
    output_per_mtok: float

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < math.inf:
                raise ValueError(f"Pricing({name}=...) must be a finite number >= 0, not {value!r}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The price of so many tokens."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cap(value: object, name: str) -> float:
    if value is None:
        return math.inf
    if not _is_number(value) or not value >= 0:  # type: ignore[operator]  # nan fails too
        raise ValueError(f"Budget({name}=...) must be a number >= 0, not {value!r}")
    return float(value)  # type: ignore[arg-type]


def _count(value: object, where: str) -> int:
    """A token count as given by a caller: an int >= 0 (a bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an int >= 0, not {value!r}")
    if value < 0:
        raise ValueError(f"{where} must be an int >= 0, not {value}")
    return value


class Budget:
    """Caps for a run (or a user, or a day): exceeded by no interleaving of calls.

    Args:
        input_tokens: cap on input (prompt) tokens.
        output_tokens: cap on output (generated) tokens.
        total_tokens: cap on input + output.
        requests: cap on the number of calls.
        cost: cap on ``pricing.cost(...)`` summed over calls, input and output,
            whichever of the prices is zero.
        pricing: required with ``cost``.

    Raises:
        ValueError: a cap that is not a number >= 0 (``nan`` included), or ``cost``
            without ``pricing``.
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

    def _left(self, key: str) -> float:
        """What is left of one cap, counting what is held (call with the lock held)."""
        return self._caps[key] - self._spent[key] - self._held[key]

    def _output_room(self, input_tokens: int) -> dict[str, float]:
        """How many more output tokens each cap allows, after ``input_tokens`` more input.

        Call with the lock held. The cost cap bounds output only when output has a
        price; input cost is checked by the caller whatever the prices.
        """
        total = (
            self._caps["total_tokens"]
            - self._spent["input_tokens"]
            - self._spent["output_tokens"]
            - self._held["input_tokens"]
            - self._held["output_tokens"]
            - input_tokens
        )
        room = {"output_tokens": self._left("output_tokens"), "total_tokens": total}
        if self.pricing is not None and self.pricing.output_per_mtok > 0:
            money = self._left("cost") - self._cost(input_tokens, 0)
            # Sums of float prices drift by a few ulps: 19.999999999999996 tokens is 20.
            room["cost"] = math.floor(money * 1e6 / self.pricing.output_per_mtok + 1e-6)
        return room

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
            ValueError: a count that is not an int >= 0, or ``max_output_tokens``
                below ``min_output_tokens``.
        """
        _count(input_tokens, "Budget.reserve(input_tokens=...)")
        _count(max_output_tokens, "Budget.reserve(max_output_tokens=...)")
        _count(min_output_tokens, "Budget.reserve(min_output_tokens=...)")
        if max_output_tokens < min_output_tokens:
            raise ValueError(
                f"Budget.reserve(max_output_tokens={max_output_tokens}) is below "
                f"min_output_tokens={min_output_tokens}"
            )
        with self._lock:
            caps, held = self._caps, self._held
            if self._left("requests") < 1:
                raise _exceeded("requests", caps["requests"])
            if input_tokens > self._left("input_tokens"):
                raise _exceeded("input_tokens", caps["input_tokens"])
            input_cost = self._cost(input_tokens, 0)
            if input_cost - self._left("cost") > 1e-12 * caps["cost"]:  # even if output is free
                raise _exceeded("cost", caps["cost"])
            room = self._output_room(input_tokens)
            binding = min(room, key=lambda k: room[k])
            left = math.floor(room[binding]) if room[binding] < math.inf else math.inf
            grant = int(min(max_output_tokens, left))
            if grant < min_output_tokens:
                raise _exceeded(binding, caps[binding])
            cost = self._cost(input_tokens, grant)
            held["input_tokens"] += input_tokens
            held["output_tokens"] += grant
            held["requests"] += 1
            held["cost"] += cost
            # Taking all that is left (asking for more, or for exactly that) makes this
            # call the cap's end: reaching its grant is reaching the cap.
            return Reservation(self, input_tokens, grant, grant >= left, cost)

    def _extend(self, reservation: Reservation, output_tokens: int) -> bool:
        """Hold ``output_tokens`` in all for a reservation its stream has run past.

        Only if every cap has room for the difference; ``False`` (and nothing more
        held) if one has not.
        """
        with self._lock:
            extra = output_tokens - reservation.held_output_tokens
            if extra <= 0 or reservation._settled:  # noqa: SLF001 - same module
                return True
            if min(self._output_room(0).values()) < extra:
                return False
            cost = self._cost(0, extra)
            self._held["output_tokens"] += extra
            self._held["cost"] += cost
            reservation.held_output_tokens = output_tokens
            reservation.cost += cost
            return True

    def _settle(self, reservation: Reservation, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            if reservation._settled:  # noqa: SLF001 - same module
                return
            reservation._settled = True  # noqa: SLF001
            held, spent = self._held, self._spent
            held["input_tokens"] -= reservation.input_tokens
            held["output_tokens"] -= reservation.held_output_tokens
            held["requests"] -= 1
            held["cost"] -= reservation.cost
            spent["input_tokens"] += input_tokens
            spent["output_tokens"] += output_tokens
            spent["requests"] += 1
            spent["cost"] += self._cost(input_tokens, output_tokens)


def _exceeded(cap: str, limit: float) -> BudgetExceeded:
    return BudgetExceeded(CancelReason("budget", f"the {cap} cap of {limit:g} is reached"))


class Reservation:
    """Budget held for one call; ``settle()`` it with what the call really used.

    Attributes:
        input_tokens: the input held.
        max_output_tokens: the output granted: the ``max_tokens`` to send.
        held_output_tokens: the output held now: the grant, or more once a stream
            ran past it and the budget had room (see :meth:`track`).
        clamped: the grant took all that was left of a cap, so reaching it is
            reaching the cap.
        cost: the cost held.
    """

    __slots__ = (
        "_budget",
        "_settled",
        "clamped",
        "cost",
        "held_output_tokens",
        "input_tokens",
        "max_output_tokens",
    )

    def __init__(
        self, budget: Budget, input_tokens: int, max_output_tokens: int, clamped: bool, cost: float
    ) -> None:
        self._budget = budget
        self._settled = False
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.held_output_tokens = max_output_tokens
        self.clamped = clamped
        self.cost = cost

    def track(self, output_tokens: int) -> str | None:
        """A stream has produced ``output_tokens`` so far: why it must stop, or ``None``.

        Call it after every chunk. A clamped reservation is the last of the budget:
        reaching it is reaching the cap. Past its reservation (a provider ignoring
        ``max_tokens``, or an estimate running ahead) a stream holds the difference,
        under the budget's lock, if every cap has room for it; if one has not, it must
        stop. So however the provider behaves and however calls interleave, the caps
        are never held beyond, and a stream that stops has been charged at most the
        chunk it just saw. Past ``max_output_tokens * 1.2 + 16`` (a margin for the
        estimate) it stops whatever the budget: the provider is not honouring the call.

        Raises:
            ValueError: ``output_tokens`` is not an int >= 0.
        """
        _count(output_tokens, "Reservation.track(output_tokens=...)")
        if self._settled or output_tokens < self.held_output_tokens:
            return None
        if self.clamped:
            return f"the output cap is reached ({output_tokens} tokens)"
        if output_tokens > self.max_output_tokens * 1.2 + 16:
            return (
                f"the call exceeded its {self.max_output_tokens}-token reservation "
                f"({output_tokens} tokens)"
            )
        if not self._budget._extend(self, output_tokens):  # noqa: SLF001 - same module
            return f"no budget left for output past the reservation ({output_tokens} tokens)"
        return None

    def settle(self, input_tokens: int, output_tokens: int) -> None:
        """Record what the call used and release the rest; later calls do nothing.

        Raises:
            ValueError: a count that is not an int >= 0 (the reservation stays open).
        """
        _count(input_tokens, "Reservation.settle(input_tokens=...)")
        _count(output_tokens, "Reservation.settle(output_tokens=...)")
        self._budget._settle(self, input_tokens, output_tokens)  # noqa: SLF001
