"""What the local model server counts: per request, and in total.

The server is the yardstick for tokens (DESIGN.md, "Measuring"): every token it
generates is counted, with its time, and so is every token generated after the
client went away, the waste that Stop is there to prevent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ("Counters", "RequestRecord")


@dataclass
class RequestRecord:
    """What the server did for one request (times are ``time.monotonic()``)."""

    id: str
    protocol: str
    stream: bool
    started_at: float
    status: int = 200
    outcome: str = "running"
    tokens_generated: int = 0
    tokens_after_disconnect: int = 0
    tokens_planned: int = 0
    first_token_at: float | None = None
    disconnected_at: float | None = None
    ended_at: float | None = None
    token_times: list[float] = field(default_factory=list)

    def tokens_after(self, moment: float) -> int:
        """Tokens generated after ``moment`` (a ``time.monotonic()`` value)."""
        return sum(1 for t in self.token_times if t > moment)


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
