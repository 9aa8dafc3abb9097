"""What the local model server counts: per request, and in total.

The server is the yardstick for tokens (DESIGN.md, "Measuring"): every token it
generates is counted, with its time, and so is every token generated after the
client went away, the waste that Stop is there to prevent. A client that never goes
away (a service that keeps streaming after its user pressed Stop) is caught by the
token times instead: a benchmark notes its Stop moment (``time.monotonic()``, which
is system-wide on Linux, so comparable across processes) and asks how many tokens
came after it (:meth:`RequestRecord.tokens_after`, ``GET /stats/requests``).

Memory is bounded: the server keeps its last ``history`` records, and each record
the times of its last :data:`TOKEN_TIMES_KEPT` to twice that many tokens (earlier
ones are folded into a count, see :meth:`RequestRecord.tokens_after`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

__all__ = ("TOKEN_TIMES_KEPT", "Counters", "RequestRecord")

TOKEN_TIMES_KEPT = 10_000
"""Token times a record keeps at least (at most twice as many) before folding the
oldest into :attr:`RequestRecord.folded_tokens`."""


@dataclass
class RequestRecord:
    """What the server did for one request (times are ``time.monotonic()``).

    Attributes:
        label: the request's ``[[label:TEXT]]``, if its prompt had one.
        token_times: when each of the last tokens was generated, in order.
        folded_tokens: the earliest tokens whose times were dropped to bound memory.
        folded_until: when the last of those was generated (``None``: none dropped).
    """

    id: str
    protocol: str
    stream: bool
    started_at: float
    status: int = 200
    outcome: str = "running"
    label: str | None = None
    tokens_generated: int = 0
    tokens_after_disconnect: int = 0
    tokens_planned: int = 0
    first_token_at: float | None = None
    disconnected_at: float | None = None
    ended_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    folded_tokens: int = 0
    folded_until: float | None = None

    def add_tokens(self, now: float, count: int) -> None:
        """Note ``count`` tokens generated at ``now``; fold the oldest times past the
        bound (amortised O(1) a token: half the kept times are dropped at once)."""
        times = self.token_times
        times.extend([now] * count)
        if len(times) > 2 * TOKEN_TIMES_KEPT:
            drop = len(times) - TOKEN_TIMES_KEPT
            self.folded_until = times[drop - 1]
            self.folded_tokens += drop
            del times[:drop]

    def tokens_after(self, moment: float) -> int:
        """Tokens generated after ``moment`` (a ``time.monotonic()`` value).

        Exact unless ``moment`` is earlier than :attr:`folded_until` (more than
        :data:`TOKEN_TIMES_KEPT` tokens before the end of a long reply): then every
        folded token is counted as after it, an upper bound.
        """
        after = len(self.token_times) - bisect.bisect_right(self.token_times, moment)
        if self.folded_until is not None and self.folded_until > moment:
            after += self.folded_tokens
        return after

    def summary(self, after: float | None = None) -> dict[str, Any]:
        """The record as JSON-ready data without its token times; with ``after``,
        ``tokens_after``: the tokens generated after that moment."""
        data = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("token_times", "folded_tokens", "folded_until")
        }
        if after is not None:
            data["tokens_after"] = self.tokens_after(after)
        return data


@dataclass
class Counters:
    """The server's totals since it started (or was reset): ``GET /stats``."""

    requests: int = 0
    tokens_generated: int = 0
    tokens_after_disconnect: int = 0
    open_streams: int = 0
    disconnects: int = 0
    completed: int = 0
    faults: int = 0
    bad_requests: int = 0
    tokens_saved: int = 0
