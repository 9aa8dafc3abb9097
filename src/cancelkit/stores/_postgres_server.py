"""A throwaway PostgreSQL server: for the test suite, the benches and examples.

It runs from the machine's binaries (``initdb``, ``pg_ctl``) in a temporary folder,
listening on a unix socket in that folder only (no TCP port). ``pg_ctl`` leaves the
server running on its own, detached from whoever started it, so a
:class:`~cancelkit._lifetime.FolderWatchdog` stops it and removes the folder when its
owner calls :meth:`PostgresServer.stop` or ends however it ends (an exception, a
SIGTERM, a SIGKILL). PostgreSQL refuses to run as root: as root, the server runs as
``nobody``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .._lifetime import FolderWatchdog

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = ("PostgresServer", "postgres_binary")

#: Where the binaries are looked for beyond ``PATH`` (this project's machine; Debian's).
BINARY_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")
INSTALL_HINT = "install PostgreSQL's server binaries (Debian: apt-get install -y postgresql)"


def postgres_binary(name: str) -> str | None:
    """PostgreSQL's ``name`` (``initdb``, ``pg_ctl``) on this machine, if any."""
    return shutil.which(name) or next(
        (f"{folder}/{name}" for folder in BINARY_DIRS if Path(f"{folder}/{name}").exists()),
        None,
    )


class PostgresServer:
    """Start and stop a private PostgreSQL on a unix socket; :attr:`dsn` connects to it.

    Args:
        user: the superuser's name (trust authentication: no password).
        fsync: whether the server syncs its writes to disk (off: faster, and a
            crash of the machine loses them; right for a test suite).
        settings: more server settings, each ``name=value`` without spaces
            (``"max_connections=200"``).
        stop_mode: how :meth:`stop` ends it (``pg_ctl stop -m``): ``fast`` (roll the
            open transactions back, then a checkpoint) or ``immediate`` (no checkpoint:
            for a server whose data is thrown away).

    Raises:
        RuntimeError: ``initdb`` or ``pg_ctl`` is not installed (the message says how
            to get them).
        ValueError: a setting is not ``name=value`` without spaces (``pg_ctl``
            hands them to the server through a shell), or ``stop_mode`` is unknown.
    """

    def __init__(
        self,
        *,
        user: str = "cancelkit",
        fsync: bool = True,
        settings: Sequence[str] = (),
        stop_mode: str = "fast",
    ) -> None:
        initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
        if initdb is None or pg_ctl is None:  # found out before anything is made
            missing = "initdb" if initdb is None else "pg_ctl"
            raise RuntimeError(f"PostgreSQL's {missing} is not installed: {INSTALL_HINT}")
        if stop_mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"stop_mode must be smart, fast or immediate, not {stop_mode!r}")
        for setting in settings:
            name, equals, value = setting.partition("=")
            if not (name and equals and value) or any(c.isspace() for c in setting):
                raise ValueError(f"a setting is name=value without spaces, not {setting!r}")
        self.user = user
        self.fsync = fsync
        self.settings = tuple(settings)
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self.directory = Path(tempfile.mkdtemp(prefix="ck-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "sock"
        self._owner = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None
        stop = self._as_server_user([pg_ctl, "-D", str(self.data), "-m", stop_mode, "stop"])
        # From here, the server (once started) and the folder go with this process.
        self._watchdog: FolderWatchdog | None = FolderWatchdog(self.directory, stop)

    @property
    def dsn(self) -> str:
        """The libpq connection string (``host=<socket folder> dbname=postgres user=...``)."""
        return f"host={self.socket_dir} dbname=postgres user={self.user}"

    def _as_server_user(self, command: list[str]) -> list[str]:
        if self._owner is None:
            return command
        return ["runuser", "-u", "nobody", "--", *command]

    def _run(self, command: list[str], timeout: float) -> None:
        try:
            subprocess.run(  # noqa: S603 - our own argument list
                self._as_server_user(command),
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.CalledProcessError as exc:
            log = self.directory / "log"
            tail = log.read_text()[-500:] if log.exists() else ""
            raise RuntimeError(
                f"{Path(command[0]).name} failed ({exc.returncode}): {exc.stderr.strip()}"
                + (f"\nserver log: {tail}" if tail else "")
            ) from None

    def start(self, timeout: float = 60.0) -> str:
        """Create the database cluster, start the server and wait until it accepts
        connections (``pg_ctl -w``); returns :attr:`dsn`.

        Raises:
            RuntimeError: it could not start (with the tool's message and the
                server's log), or :meth:`stop` was called before.
        """
        if self._watchdog is None:
            raise RuntimeError("this PostgresServer was stopped: make a new one")
        self.socket_dir.mkdir(exist_ok=True)
        if self._owner is not None:
            for path in (self.directory, self.socket_dir):
                os.chown(path, self._owner, -1)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [self._initdb, "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync"],
                timeout,
            )
        options = [f"-k {self.socket_dir}", "-c listen_addresses=''"]
        if not self.fsync:
            options.append("-c fsync=off")
        options += [f"-c {setting}" for setting in self.settings]
        start = [
            self._pg_ctl,
            "-D", str(self.data),
            "-o", " ".join(options),
            "-l", str(self.directory / "log"),
            "-t", str(max(1, round(timeout))),
            "-w",
            "start",
        ]  # fmt: skip
        self._run(start, timeout + 10)
        return self.dsn

    def stop(self) -> None:
        """Stop the server and remove its folder (waits for both); idempotent."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.release()

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:  # no __exit__ then: the folder and its watchdog go here
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
