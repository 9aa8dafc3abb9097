"""``cancelkit demo --workers N`` (and ``serve``): N worker processes behind one port.

Each request may land on any worker; the workers share their runs through Redis (the
registry's ``RedisBackend``, and the runs' event streams of ``_feeds.py``), so a run
started on one is followed, described and stopped through any other. Without
``--redis URL`` the parent starts a private ``redis-server`` (unix socket only) when
one is installed, and otherwise refuses to start, saying what to install.

Why a supervisor of our own rather than uvicorn's ``workers=N``: uvicorn's workers
are ``multiprocessing`` children that neither watch their parent nor ask the kernel
to end them with it, so a SIGKILLed parent would leave them serving; and its parent
loop could not also own the model process and Redis and stop them *after* the
workers. Here:

- the parent binds the listening socket once and passes its descriptor to every
  worker (``pass_fds``), as gunicorn and uvicorn do: the kernel hands each new
  connection to a worker that is accepting, and one worker dying loses no
  connection waiting in the queue;
- every worker is tied to the parent as the local model process is: it watches a
  pipe from it (its stdin) and, on Linux, gets SIGTERM from the kernel when the
  parent dies (``PR_SET_PDEATHSIG``); redis-server gets SIGKILL the same way, and
  its folder is removed by a watchdog (``RedisServer``);
- each worker runs the one-process demo's graceful server: SIGTERM cancels its runs
  (kind ``shutdown``) first, then their last events and endings reach Redis;
- workers run in a process group of their own (and so does redis-server), so a
  Ctrl-C in a terminal reaches the parent alone, which stops the workers first,
  then the model process and Redis, in that order;
- the configuration travels in one environment variable (JSON) and the session
  secret in ``CANCELKIT_SECRET``, the same for every worker (the parent makes one if
  none is given): never on a command line, which ``ps`` shows;
- a worker that dies is restarted, at most three times per slot.

The limits (``--max-runs`` and the others) are per worker: every worker admits that
many runs of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

from .._extras import require
from ..distributed._redis_server import INSTALL_HINT, RedisServer, redis_server_binary
from ._model_process import LocalModelProcess
from ._serve import SECRET_VARIABLE, DemoConfigError, exit_status
from ._worker import STARTUP_FAILED, WORKER_VARIABLE, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._serve import DemoOptions

__all__ = ("PREFIX", "check_redis", "serve_workers")

#: The key prefix of the demo's runs and streams in Redis.
PREFIX = "cancelkit-demo:"
_READY_TIMEOUT = 60.0
_RESTARTS = 3


def check_redis(options: DemoOptions, find: Callable[[], str | None] | None = None) -> None:
    """Refuse, before anything starts, workers that would have no Redis to share.

    Args:
        options: the demo's options; ``redis`` is the URL given, if any.
        find: where ``redis-server`` is (``None``: not installed); by default
            :func:`~cancelkit.distributed._redis_server.redis_server_binary`.

    Raises:
        DemoConfigError: no ``--redis`` and no ``redis-server`` to start, the redis
            client is not installed, or the given Redis cannot be reached.
    """
    try:
        redis = require("redis", "redis", f"--workers {options.workers}")
    except ImportError as exc:
        raise DemoConfigError(str(exc)) from None
    if options.redis is None:
        if (find or redis_server_binary)() is None:
            raise DemoConfigError(
                f"--workers {options.workers} shares runs through Redis, and redis-server"
                f" is not installed: {INSTALL_HINT}, or pass --redis URL"
            )
        return
    client = redis.Redis.from_url(options.redis, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except (redis.exceptions.RedisError, OSError, ValueError) as exc:
        raise DemoConfigError(
            f"cannot reach the Redis of --redis ({exc}): start it, or leave --redis out"
            " to have the demo start its own redis-server"
        ) from None
    finally:
        client.close()


def serve_workers(options: DemoOptions, *, with_local_model: bool) -> int:
    """Run the demo in ``options.workers`` processes until SIGTERM or Ctrl-C.

    Returns:
        As the one-process demo (0, or 130 after Ctrl-C; SIGTERM is re-raised), or
        1 if the workers could not start.

    Raises:
        DemoConfigError: see :func:`check_redis`, or the address cannot be bound;
            raised before anything is started.
    """
    check_redis(options)
    options.data.mkdir(parents=True, exist_ok=True)
    secret = options.secret or os.environ.get(SECRET_VARIABLE) or None
    listening = _listen(options.host, options.port)
    supervisor = _Supervisor(options, with_local_model, secret, listening)
    try:
        signals = asyncio.run(supervisor.run())
    finally:
        listening.close()
    if supervisor.failed:
        return 1
    return exit_status(signals)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listening = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise DemoConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listening.set_inheritable(True)
    return listening


def _shown(url: str) -> str:
    """A Redis URL without its password, for the banner."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))


class _Worker:
    """One worker process, and the slot it fills (restarted there if it dies)."""

    def __init__(self, slot: int, process: asyncio.subprocess.Process, ready_fd: int) -> None:
        self.slot = slot
        self.process = process
        self.ended = asyncio.ensure_future(process.wait())
        self.ready_fd = ready_fd

    async def ready(self) -> bool:
        """Whether the worker says it serves (``False``: it ended first)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(self.ready_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            return await reader.readline() == b"ready\n"
        finally:
            transport.close()

    async def stop(self, grace: float) -> None:
        """SIGTERM (its runs end with kind shutdown), then SIGKILL after ``grace``."""
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self.ended), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await self.ended
        if process.stdin is not None:
            process.stdin.close()


class _Supervisor:
    """The parent: Redis (its own, or the given one), the model process, the workers."""

    def __init__(
        self,
        options: DemoOptions,
        with_local_model: bool,
        secret: str | None,
        listening: socket.socket,
    ) -> None:
        self.options = options
        self.listening = listening
        self.random_secret = secret is None
        self.secret = secret or secrets.token_urlsafe(32)
        self.model = (
            LocalModelProcess(options.model_rate, restarts=options.model_restarts)
            if with_local_model
            else None
        )
        self.redis_server = RedisServer() if options.redis is None else None
        self.redis_url = options.redis or ""
        self.workers: list[_Worker] = []
        self.restarts = [0] * options.workers
        self.signals: list[int] = []
        self.stopping = asyncio.Event()
        self.failed = False

    def _on_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if self.model is not None:
            self.model.shutting_down()
        self.stopping.set()

    async def run(self) -> list[int]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        supervisor: asyncio.Task[None] | None = None
        try:
            try:
                if self.redis_server is not None:  # from this (the main) thread: see its docs
                    self.redis_url = self.redis_server.start()
                if self.model is not None:
                    await self.model.start()
                    supervisor = asyncio.create_task(self.model.supervise())
            except RuntimeError as exc:  # redis-server or the model process did not start
                print(f"cancelkit demo: {exc}", file=sys.stderr)
                self.failed = True
                return self.signals
            if not self.stopping.is_set() and await self._start_all():
                self._banner()
                await self._keep_serving()
        finally:
            await asyncio.gather(*(w.stop(self.options.grace + 15) for w in self.workers))
            if supervisor is not None:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            if self.model is not None:
                await self.model.stop()
            if self.redis_server is not None:
                self.redis_server.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self.signals

    async def _spawn(self, slot: int) -> _Worker:
        ready_read, ready_write = os.pipe()
        spec = WorkerSpec(
            parent=os.getpid(),
            listen_fd=self.listening.fileno(),
            ready_fd=ready_write,
            redis=self.redis_url,
            prefix=PREFIX,
            model_url=self.model.base_url if self.model is not None else None,
            options=self.options,
        )
        environment = os.environ | {WORKER_VARIABLE: spec.dumps(), SECRET_VARIABLE: self.secret}
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cancelkit.demo._worker",
                stdin=asyncio.subprocess.PIPE,  # the watchdog pipe: EOF when we are gone
                env=environment,
                pass_fds=(spec.listen_fd, ready_write),
                process_group=0,  # a Ctrl-C is for the parent, which stops workers in order
            )
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
        return _Worker(slot, process, ready_read)

    async def _start_all(self) -> bool:
        """Start every worker and wait until each serves; ``False`` if one could not."""
        self.workers = [await self._spawn(slot) for slot in range(self.options.workers)]
        stop = asyncio.ensure_future(self.stopping.wait())
        started = asyncio.ensure_future(asyncio.gather(*(w.ready() for w in self.workers)))
        either: set[asyncio.Future[Any]] = {stop, started}
        try:
            await asyncio.wait(either, timeout=_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if self.stopping.is_set():
            started.cancel()
            return False
        if not started.done() or not all(started.result()):
            started.cancel()
            self.failed = True
            codes = [w.process.returncode for w in self.workers]
            hint = " (Redis unreachable?)" if STARTUP_FAILED in codes else ""
            print(f"cancelkit demo: a worker did not start{hint}; see above", file=sys.stderr)
            return False
        return True

    async def _keep_serving(self) -> None:
        """Until a signal: restart a worker that dies (at most ``_RESTARTS`` per slot)."""
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                live = [w for w in self.workers if not w.ended.done()]
                if not live:
                    print("cancelkit demo: every worker has died; stopping", file=sys.stderr)
                    self.failed = True
                    return
                awaited: set[asyncio.Future[Any]] = {stop, *(w.ended for w in live)}
                await asyncio.wait(awaited, return_when=asyncio.FIRST_COMPLETED)
                for worker in [w for w in live if w.ended.done()]:
                    if self.stopping.is_set():
                        return
                    await self._replace(worker)
        finally:
            stop.cancel()

    async def _replace(self, worker: _Worker) -> None:
        slot = worker.slot
        code = worker.process.returncode
        await worker.stop(0)  # closes its pipe
        if self.restarts[slot] >= _RESTARTS:
            print(f"cancelkit demo: worker {slot} exited ({code}); not restarted", file=sys.stderr)
            return
        self.restarts[slot] += 1
        print(f"cancelkit demo: worker {slot} exited ({code}); restarting it", file=sys.stderr)
        await asyncio.sleep(0.25 * 2 ** (self.restarts[slot] - 1))
        replacement = await self._spawn(slot)
        os.close(replacement.ready_fd)  # it joins the others once it accepts; no one waits
        self.workers[self.workers.index(worker)] = replacement

    def _banner(self) -> None:
        options = self.options
        port = self.listening.getsockname()[1]
        where = (
            "a private redis-server" if self.redis_server is not None else _shown(self.redis_url)
        )
        print(
            f"cancelkit demo: http://{options.host}:{port}/"
            f" ({options.workers} workers, runs shared through {where})",
            flush=True,
        )
        if self.model is not None:
            print(
                f"  local model server: {self.model.base_url} (rate {options.model_rate} tokens/s)"
            )
        print(
            f"  limits are per worker: {options.limits.runs} runs each"
            f" ({options.limits.runs_per_session} per session)"
        )
        if self.random_secret:
            print(f"  sessions: a random secret for this run ({SECRET_VARIABLE} keeps them)")
        sys.stdout.flush()
