"""What the demo service keeps between requests, and the limits it enforces.

The runs themselves live in the agent's :class:`~cancelkit.Runs` registry, the
demo's source of truth for whether a run exists and whose it is: a lookup or a
Stop for someone else's run finds nothing, exactly as for an unknown id. Beside it
the service keeps only what the registry has no reason to know: each run's event
log (its :class:`~cancelkit.agent.AgentRun`), who follows it, the session cookie's
signer, and the Stop latencies it reports.

With several workers (``--workers N``) the registry has a Redis backend, shared by
them all, and who follows a run is counted there too (``_feeds.py``), so the last
follower leaving is noticed whichever worker it was on. The limits stay per worker:
``--max-runs 50`` with four workers admits up to 200 runs in all.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import HTTPException
from itsdangerous import BadSignature, TimestampSigner

from .. import BackendUnavailable, CancelToken

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .. import CancelReason
    from ..agent import Agent, AgentRun
    from ..distributed import RedisBackend
    from ._feeds import RunFeeds

__all__ = (
    "COOKIE",
    "MIN_SECRET_BYTES",
    "SESSIONS_REMEMBERED",
    "SESSION_SALT",
    "DemoState",
    "Limits",
)

COOKIE = "cancelkit_session"
SESSION_SALT = "cancelkit.web.session"  # unchanged by the move: issued cookies stay valid
MIN_SECRET_BYTES = 32
SESSIONS_REMEMBERED = 10_000  # checked cookies kept (session_of): a bounded memory
# A cookie as sign() makes it (session.timestamp.signature, URL-safe base64): only those
# are remembered. base64 decoding skips stray characters, so a signed cookie padded
# with them still verifies; remembering each padded copy would let one session fill
# the memory with long keys.
_SIGNED_COOKIE = re.compile(r"[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{1,12}\.[A-Za-z0-9_-]{20,64}")

logger = logging.getLogger("cancelkit.demo")


@dataclass(frozen=True)
class Limits:
    """What one session, and all of them together, may ask of the demo service.

    Args:
        runs_per_session: runs one session may have active at once (then 429).
        runs: runs the service keeps active at once, all sessions together (429).
        run_seconds: a run still going after this long is cancelled (kind
            ``timeout``), whether or not anyone follows it.
        body_bytes: the largest request body read (413 beyond, before buffering).
        session_max_age: seconds a session cookie is honoured after it was issued.
        retry_after: the ``Retry-After`` seconds of a 429.

    Raises:
        ValueError: a limit that is not positive.
    """

    runs_per_session: int = 3
    runs: int = 50
    run_seconds: float = 300.0
    body_bytes: int = 64 * 1024
    session_max_age: int = 24 * 3600
    retry_after: int = 5

    def __post_init__(self) -> None:
        for name in ("runs_per_session", "runs", "body_bytes", "session_max_age", "retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if not math.isfinite(self.run_seconds) or self.run_seconds <= 0:
            raise ValueError(f"run_seconds must be positive, not {self.run_seconds!r}")


@dataclass
class DemoState:
    """What the service keeps, and the limits it enforces.

    Args:
        agent: the agent every run is started on; its ``runs`` registry says which
            runs exist and whose they are.
        secret: signs the session cookie; at least :data:`MIN_SECRET_BYTES` bytes.
        model_stats: the model server's counters (``None`` when it cannot be reached).
        model_health: the model server's health, for ``/api/stats``: at least a
            ``status`` (``up``, ``restarting``, ``down``); ``None`` for an external one.
        grace: seconds active runs get to end when the service shuts down.
        limits: what sessions may ask of this process (:class:`Limits`).
        worker: this process's name, in the ``X-Cancelkit-Worker`` header.
        feeds: with several workers, the runs' event streams and follower counts
            shared in Redis (the registry's backend); ``None`` in one process.
    """

    agent: Agent
    secret: bytes
    model_stats: Callable[[], Awaitable[dict[str, int] | None]] | None = None
    model_health: Callable[[], dict[str, Any]] | None = None
    grace: float = 5.0
    limits: Limits = field(default_factory=Limits)
    worker: str = field(default_factory=lambda: str(os.getpid()))
    feeds: RunFeeds | None = None
    runs: dict[str, AgentRun] = field(default_factory=dict)  # the event logs, by run id
    stop_latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    stopping: dict[str, float] = field(default_factory=dict)
    followers: dict[str, int] = field(default_factory=dict)
    stop_when_unwatched: set[str] = field(default_factory=set)
    closing: CancelToken = field(default_factory=CancelToken)  # cancelled on shutdown

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the session secret must be at least {MIN_SECRET_BYTES} bytes"
                f" (got {len(self.secret) if isinstance(self.secret, bytes) else 'no bytes'})"
            )
        self._signer = TimestampSigner(self.secret, salt=SESSION_SALT)
        self._checked: dict[str, tuple[str, int]] = {}  # cookie -> (session, issued at)

    @property
    def backend(self) -> RedisBackend | None:
        """The registry's backend, shared by every worker (``None`` in one process)."""
        return self.feeds.backend if self.feeds is not None else None

    def sign(self, session: str) -> str:
        """The cookie value for ``session``: signed, with the time it was issued."""
        return self._signer.sign(session).decode()

    def session_of(self, cookie: str | None) -> str | None:
        """The session a cookie names, if it is ours and younger than ``limits.session_max_age``.

        A cookie whose signature checked out is remembered (the latest
        :data:`SESSIONS_REMEMBERED`) with the time it was issued: a session's every
        request, each Stop above all, then costs a lookup, not an HMAC. Its age is
        checked on every request all the same, as itsdangerous checks it.
        """
        if not cookie:
            return None
        known = self._checked.get(cookie)
        if known is None:
            try:
                value, issued = self._signer.unsign(cookie, return_timestamp=True)
            except BadSignature:  # forged or tampered with (never remembered)
                return None
            known = (value.decode(), int(issued.timestamp()))
            if _SIGNED_COOKIE.fullmatch(cookie) is not None:  # else valid, not kept
                if len(self._checked) >= SESSIONS_REMEMBERED:
                    del self._checked[next(iter(self._checked))]  # the oldest checked
                self._checked[cookie] = known
        session, issued_at = known
        age = int(time.time()) - issued_at
        return session if 0 <= age <= self.limits.session_max_age else None

    def remember(self, run: AgentRun, keep: int = 1000) -> None:
        """Keep a new run's event log; forget the oldest finished ones beyond ``keep``."""
        self.runs[run.id] = run
        if len(self.runs) > keep:
            finished = [i for i, r in self.runs.items() if r.run.done()]
            for old_id in finished[: len(self.runs) - keep]:
                del self.runs[old_id]

    def local(self, run_id: str, session: str) -> AgentRun | None:
        """The session's run by id, if this process holds it (``None`` for someone
        else's, exactly as for an unknown id)."""
        found = self.runs.get(run_id)
        if found is None or self.agent.runs.get(run_id, owner=session) is None:
            return None
        return found

    def admit(self, session: str) -> None:
        """Refuse a new run (429, or 503 with the model down) before any work starts."""
        health = self.model_health() if self.model_health else None
        if health is not None and health.get("status") == "down":
            raise HTTPException(503, "the model server is down; runs cannot start")
        active = self.agent.runs.active
        limits = self.limits
        retry = {"Retry-After": str(limits.retry_after)}
        if len(active) >= limits.runs:
            raise HTTPException(
                429, f"the service is running {limits.runs} runs, its limit", headers=retry
            )
        if sum(run.owner == session for run in active) >= limits.runs_per_session:
            raise HTTPException(
                429,
                f"at most {limits.runs_per_session} runs at once per session: "
                "stop one or wait for it to end",
                headers=retry,
            )

    def stop(self, run_id: str, reason: CancelReason, owner: str) -> bool:
        """Cancel ``owner``'s run of this process, timing the Stop from here.

        Returns:
            Whether this call cancelled it (False: already ended or stopped).
        """
        if self.agent.runs.cancel(run_id, reason, owner=owner):
            self.stopping[run_id] = time.perf_counter()
            return True
        return False

    async def stop_anywhere(self, run_id: str, reason: CancelReason, owner: str) -> bool:
        """Cancel ``owner``'s run wherever it lives (here: :meth:`stop`).

        Raises:
            BackendUnavailable: the run is on another worker and Redis cannot be reached.
        """
        if run_id in self.runs or self.backend is None:
            return self.stop(run_id, reason, owner)
        return await self.agent.runs.stop(run_id, reason, owner=owner)

    def note_end(self, run_id: str) -> None:
        """A run ended (its done-callback): record how long its Stop took."""
        started = self.stopping.pop(run_id, None)
        if started is not None:
            self.stop_latencies_ms.append((time.perf_counter() - started) * 1e3)
        self.stop_when_unwatched.discard(run_id)

    # -- who follows a run: here, or in every worker through Redis -------------------

    async def ask_stop_when_unwatched(self, run_id: str) -> None:
        """The run is stopped when its last follower goes away (see ``StartRun``).

        Raises:
            BackendUnavailable: with several workers, Redis cannot be reached.
        """
        if self.feeds is not None:
            await self.feeds.stop_when_unwatched(run_id)
        else:
            self.stop_when_unwatched.add(run_id)

    async def joined(self, run_id: str) -> bool:
        """One more follower; ``False`` if it could not be counted (Redis down)."""
        self.followers[run_id] = self.followers.get(run_id, 0) + 1
        if self.feeds is None:
            return True
        try:
            await self.feeds.joined(run_id)
        except BackendUnavailable as exc:
            logger.warning("cancelkit demo: a follower of %s is not counted: %s", run_id, exc)
            return False
        return True

    async def left(self, run_id: str, *, counted: bool) -> tuple[int, bool]:
        """One follower fewer: how many are left, and whether the run asked to be
        stopped when none is. Shielded and bounded: called as a follower goes away."""
        left = self.followers.get(run_id, 1) - 1
        if left:
            self.followers[run_id] = left
        else:
            self.followers.pop(run_id, None)
        if self.feeds is None:
            return left, run_id in self.stop_when_unwatched
        if not counted:
            return 1, False  # never counted there: leaving decides nothing
        answer = 1, False  # uncounted: leaving decides nothing
        with anyio.CancelScope(shield=True):
            try:
                answer = await self.feeds.left(run_id)
            except BackendUnavailable as exc:
                logger.warning("cancelkit demo: a follower of %s left uncounted: %s", run_id, exc)
        return answer

    async def followers_of(self, run_id: str) -> int | None:
        """How many follow the run now (every worker's; ``None``: Redis is down)."""
        if self.feeds is None:
            return self.followers.get(run_id, 0)
        try:
            return await self.feeds.followers(run_id)
        except BackendUnavailable:
            return None
