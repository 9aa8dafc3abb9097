"""A throwaway ``redis-server``: for development, tests, examples and the multi-worker demo.

It listens on a unix socket in a temporary directory only (no TCP port), and it
ends with its owner however the owner ends: :meth:`RedisServer.stop`, an exception
(the context manager), or a SIGKILL of the owner (the kernel's parent-death signal,
Linux); the folder it made goes then too (see
:class:`~cancelkit._lifetime.FolderWatchdog`). It runs in a process group of its
own, so a Ctrl-C in a terminal reaches its owner only, which stops it after what
still writes to it. ``persist=True`` turns the append-only file on (fsync on every
write), so a restart keeps every tombstone written before it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .._lifetime import FolderWatchdog, StoppedWithItsBlock, end_process, tied_to_this_process

__all__ = ("RedisServer", "redis_server_binary")

INSTALL_HINT = "install it (Debian: apt-get install -y redis-server)"


def redis_server_binary() -> str | None:
    """The ``redis-server`` on this machine, if any."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


class RedisServer(StoppedWithItsBlock):
    """Start, restart and stop a private ``redis-server``.

    Args:
        persist: keep an append-only file (fsync always), so data survives a restart.
        directory: where its socket and files go (default: a new temporary folder,
            removed on :meth:`stop`).

    Raises:
        RuntimeError: ``redis-server`` is not installed (the message says how to get it).
    """

    def __init__(self, *, persist: bool = False, directory: Path | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(f"redis-server is not installed: {INSTALL_HINT}")
        self.binary = binary
        self.persist = persist
        self.directory = directory or Path(tempfile.mkdtemp(prefix="ck-redis-"))
        # A folder of its own goes with its owner, however the owner ends (a SIGKILL
        # too, where redis-server itself is killed by the kernel).
        self._watchdog = FolderWatchdog(self.directory) if directory is None else None
        self.socket = self.directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``unix://.../redis.sock``, for :class:`~cancelkit.distributed.RedisBackend`."""
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> str:
        """Start it and wait until it accepts connections; returns :attr:`url`."""
        if self.process is not None and self.process.poll() is None:
            return self.url
        self.socket.unlink(missing_ok=True)
        command = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(  # noqa: S603 - our own argument list
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=tied_to_this_process(),  # SIGKILLed when its owner ends
            process_group=0,  # a Ctrl-C meant for its owner does not reach it: stopped last
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.directory / "redis.log"
                tail = log.read_text()[-500:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start: {tail}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.socket))
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not accept connections within {timeout}s")

    def kill(self) -> None:
        """SIGKILL it (a crash: what was not persisted is lost); :meth:`start` again."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop it and remove its folder (if it made one)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            end_process(process)
        if self._watchdog is not None:
            self._watchdog.release()  # removes the folder
