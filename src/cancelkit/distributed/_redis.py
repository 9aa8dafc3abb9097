"""``RedisBackend``: runs of several processes and hosts meet in Redis.

Built on redis-py's asyncio client (``pip install "cancelkit[redis]"``). A Stop is
state, not an event: the cancel script checks the owner and sets the run's tombstone
(``SET NX EX``, first reason wins) in one atomic step, then publishes the wake-up on
the channel of the one process that holds the run. That process subscribes once,
re-reads its runs' tombstones on every (re)subscribe and every ``backstop`` seconds,
and renews a lease; the runs of a process whose lease expired are settled by any
other. The keys are listed in :mod:`cancelkit.distributed._redis_scripts`.

Needs one Redis (a primary, with replicas if you like); Redis Cluster is not
supported (the scripts touch keys of several runs and processes).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .._extras import require
from . import _redis_scripts as scripts
from ._base import BackendBase, Ending, dump_reason, load_reason

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript

    from .._exceptions import CancelReason

__all__ = ("RedisBackend",)


class RedisBackend(BackendBase):
    """Stop any process's run through Redis; see :class:`cancelkit.RunsBackend`.

    Args:
        url: ``redis://host:port/db``, ``rediss://...`` or ``unix:///path/redis.sock``.
        prefix: put before every key and channel, to share one Redis between services.
        backstop, lease, history, timeout: see :class:`BackendBase`.
        max_connections: connections to Redis this process opens at most (one holds
            the subscription); more concurrent calls wait their turn.

    Example::

        async with Runs(backend=RedisBackend("redis://127.0.0.1:6379/0")) as runs:
            run = runs.start(work, owner=user_id)
            ...  # any process: await runs.stop(run_id, owner=user_id)
    """

    service = "Redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cancelkit:",
        backstop: float = 1.0,
        lease: float = 10.0,
        history: float = 24 * 3600.0,
        timeout: float = 5.0,
        max_connections: int = 32,
    ) -> None:
        super().__init__(backstop=backstop, lease=lease, history=history, timeout=timeout)
        if not isinstance(url, str) or not url.strip():
            raise ValueError("RedisBackend needs a Redis URL, e.g. redis://127.0.0.1:6379/0")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        redis = require("redis", "redis", "RedisBackend")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError("max_connections must be an int")
        if max_connections < 2:
            raise ValueError("max_connections must be at least 2 (one is the subscription's)")
        self.url = url
        self.prefix = prefix
        self.max_connections = max_connections
        self.unreachable = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            OSError,
        )
        self._no_script: type[Exception] = redis.exceptions.NoScriptError
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url!r} worker={self.worker!r}>"

    @property
    def client(self) -> Redis:
        """The redis-py client (open only between ``open()`` and ``aclose()``)."""
        if self._client is None:
            raise RuntimeError("the RedisBackend is not open")
        return self._client

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    async def _connect(self) -> None:
        redis = require("redis.asyncio", "redis", "RedisBackend")
        # A bounded pool that makes callers wait their turn: a thousand runs starting
        # at once share these connections rather than opening a thousand.
        pool = redis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            health_check_interval=max(1.0, self.lease / 3),
        )
        client = redis.Redis.from_pool(pool)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in ("REGISTER", "CANCEL", "MARK", "END", "REAP", "RECLAIM")
        }

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _listen(
        self, deliver: Callable[[str, CancelReason], None], subscribed: Callable[[], None]
    ) -> None:
        # A connection of its own; each wait is bounded, so its health check runs.
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self._key("stops", self.worker))
            while not self._closing:
                message = await pubsub.get_message(timeout=self.backstop)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    subscribed()
                elif message["type"] == "message":
                    run_id, kind, text = json.loads(message["data"])
                    deliver(run_id, load_reason(json.dumps([kind, text])))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def _write(self, batch: list[Ending]) -> None:
        # EVALSHA straight into the pipeline: redis-py's scripts would first ask
        # SCRIPT EXISTS, a second round trip per batch. After a Redis restart the
        # scripts are gone (NoScriptError): load them again and retry once.
        for attempt in (1, 2):
            async with self.client.pipeline(transaction=False) as pipe:
                self._queue_endings(pipe, batch)
                try:
                    await pipe.execute()
                except self._no_script:
                    if attempt == 2:
                        raise
                    await self._load_scripts()
                    continue
                return

    def _queue_endings(self, pipe: Pipeline, batch: list[Ending]) -> None:
        for ending in batch:
            run_key = self._key("run", ending.run_id)
            if ending.status is None:
                assert ending.reason is not None
                args: list[str | int] = [dump_reason(ending.reason), int(self.history)]
                keys = [run_key, self._key("stop", ending.run_id)]
                pipe.evalsha(self._scripts["MARK"].sha, len(keys), *keys, *args)
            else:
                reason = ending.reason
                args = [
                    ending.status,
                    reason.kind if reason else "",
                    reason.message if reason else "",
                    repr(ending.at),
                    int(self.history),
                    ending.run_id,
                    self.worker,
                ]
                keys = [run_key, self._key("runs-of", self.worker)]
                pipe.evalsha(self._scripts["END"].sha, len(keys), *keys, *args)

    async def _tombstones(self, run_ids: list[str]) -> dict[str, CancelReason]:
        if not run_ids:
            return {}
        found = await self.client.mget([self._key("stop", run_id) for run_id in run_ids])
        return {
            run_id: load_reason(text)
            for run_id, text in zip(run_ids, found, strict=True)
            if text is not None
        }

    async def _renew(self, *, leaving: bool = False) -> bool:
        lease_key = self._key("worker", self.worker)
        async with self.client.pipeline(transaction=True) as pipe:
            if leaving:
                pipe.delete(lease_key, self._key("runs-of", self.worker))
                pipe.srem(f"{self.prefix}workers", self.worker)
                await pipe.execute()
                return False
            pipe.set(lease_key, "1", px=int(self.lease * 1000), get=True)
            pipe.sadd(f"{self.prefix}workers", self.worker)
            previous, _ = await pipe.execute()
        return previous is not None

    async def _reap(self) -> int:
        args: list[str | int] = [self.prefix, repr(time.time()), int(self.history)]
        return int(await self._scripts["REAP"](keys=[], args=args))

    async def _reclaim(self, runs: dict[str, str]) -> list[str]:
        items, lost = list(runs.items()), []
        for start in range(0, len(items), 500):
            args: list[str | int] = [self.prefix, self.worker, repr(time.time())]
            for run_id, owner in items[start : start + 500]:
                args += [run_id, owner]
            lost += [_text(run_id) for run_id in await self._scripts["RECLAIM"](args=args)]
        return lost

    async def _register(self, run_id: str, owner: str) -> tuple[bool, CancelReason | None]:
        (answer,) = await self._register_many([(run_id, owner)])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def _register_many(
        self, claims: list[tuple[str, str]]
    ) -> list[tuple[bool, CancelReason | None] | BaseException]:
        """Every claim in one pipeline of REGISTER scripts (see :meth:`_write`)."""
        sha = self._scripts["REGISTER"].sha
        for attempt in (1, 2):
            async with self.client.pipeline(transaction=False) as pipe:
                now = repr(time.time())
                for run_id, owner in claims:
                    keys = [
                        self._key("run", run_id),
                        self._key("prestop", run_id),
                        self._key("stop", run_id),
                        self._key("runs-of", self.worker),
                    ]
                    args: list[str | int] = [owner, self.worker, now, int(self.history), run_id]
                    pipe.evalsha(sha, len(keys), *keys, *args)
                answers = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(a, self._no_script) for a in answers):
                sha = await self._load_scripts()  # Redis restarted: nothing ran; again
                continue
            break
        return [_claim_answer(answer) for answer in answers]

    async def _load_scripts(self) -> str:
        """Load every script again (Redis lost them); the REGISTER script's sha."""
        for script in self._scripts.values():
            script.sha = await self.client.script_load(script.script)
        return self._scripts["REGISTER"].sha

    async def _cancel(self, run_id: str, reason: CancelReason, owner: str) -> bool:
        keys = [
            self._key("run", run_id),
            self._key("stop", run_id),
            self._key("prestop", run_id),
        ]
        args: list[str | int] = [owner, dump_reason(reason), int(self.history), run_id, self.prefix]
        return bool(await self._scripts["CANCEL"](keys=keys, args=args))

    async def _info(self, run_id: str) -> dict[str, Any] | None:
        record = await self.client.hgetall(self._key("run", run_id))
        if not record:
            return None
        return {_text(key): _text(value) for key, value in record.items()}


def _claim_answer(answer: Any) -> tuple[bool, CancelReason | None] | BaseException:
    """A REGISTER script's answer: ``{-1}`` used, ``{0}`` fresh, ``{1, reason}`` stopped."""
    if isinstance(answer, BaseException):
        return answer
    if int(answer[0]) < 0:
        return False, None
    return True, (load_reason(answer[1]) if int(answer[0]) == 1 else None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
