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

import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._lifetime import FolderWatchdog, StoppedWithItsBlock, end_process

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("PostgresServer", "postgres_binaries")

INSTALL_HINT = "install PostgreSQL's server binaries (Debian: apt-get install -y postgresql)"
STOP_SECONDS = 20  # how long a stop may take before the next, harsher one
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")  # a setting's or a role's name


def postgres_binaries() -> tuple[str, str] | None:
    """``(initdb, pg_ctl)`` of one PostgreSQL on this machine, if any: the ones on
    ``PATH``, else ``/usr/local/bin``'s, else those of the newest of Debian's
    ``/usr/lib/postgresql/<version>/bin``. Both come from one folder, so one version."""
    found = shutil.which("initdb")
    folders = [str(Path(found).parent)] if found else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version)
    folders += ["/usr/local/bin", *reversed(versions)]
    for folder in folders:
        initdb, pg_ctl = Path(folder, "initdb"), Path(folder, "pg_ctl")
        if initdb.exists() and pg_ctl.exists():
            return str(initdb), str(pg_ctl)
    return None


def _version(folder: str) -> list[int]:
    """``/usr/lib/postgresql/15/bin`` -> ``[15]``, for sorting (a non-number is 0)."""
    return [int(part) if part.isdigit() else 0 for part in Path(folder).parent.name.split(".")]


class PostgresServer(StoppedWithItsBlock):
    """Start and stop a private PostgreSQL on a unix socket; :attr:`dsn` connects to it.

    Args:
        user: the superuser's name (trust authentication: no password), a plain
            identifier.
        fsync: whether the server syncs its writes to disk (off: faster, and a
            crash of the machine loses them; right for a test suite).
        settings: more server settings, each ``name=value`` (``"max_connections=200"``);
            the value goes to the server as written, spaces and quotes included.
        stop_mode: how :meth:`stop` ends it (``pg_ctl stop -m``): ``fast`` (roll the
            open transactions back, then a checkpoint) or ``immediate`` (no checkpoint:
            for a server whose data is thrown away). A ``fast`` stop that takes over
            ``STOP_SECONDS`` is followed by an ``immediate`` one.

    Raises:
        TypeError, ValueError: ``settings`` is a string, a setting is not
            ``name=value``, ``user`` is not an identifier, or ``stop_mode`` is unknown
            (checked before anything is looked for or made).
        RuntimeError: ``initdb`` or ``pg_ctl`` is not installed (the message says how
            to get them).
    """

    def __init__(
        self,
        *,
        user: str = "cancelkit",
        fsync: bool = True,
        settings: Sequence[str] = (),
        stop_mode: Literal["fast", "immediate"] = "fast",
    ) -> None:
        if isinstance(settings, str):
            raise TypeError("settings is a sequence of 'name=value' strings, not one string")
        for setting in settings:
            name, equals, value = setting.partition("=")
            if not (_NAME.match(name) and equals) or "\0" in value or "\n" in value:
                raise ValueError(f"a setting is name=value, not {setting!r}")
        if not _NAME.match(user):
            raise ValueError(f"user must be a plain identifier, not {user!r}")
        if stop_mode not in ("fast", "immediate"):
            raise ValueError(f"stop_mode must be fast or immediate, not {stop_mode!r}")
        binaries = postgres_binaries()
        if binaries is None:  # found out before anything is made
            raise RuntimeError(f"PostgreSQL's initdb and pg_ctl are not installed: {INSTALL_HINT}")
        self.user = user
        self.fsync = fsync
        self.settings = tuple(settings)
        self._initdb, self._pg_ctl = binaries
        self._owner = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None
        self._started = False
        self.directory = Path(tempfile.mkdtemp(prefix="ck-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "sock"
        # A stop that fails or hangs is followed by an immediate one: the folder is
        # removed after it, never under a server still running.
        pg_ctl, data = shlex.quote(self._pg_ctl), shlex.quote(str(self.data))
        stop = (
            f"{pg_ctl} -D {data} -m {stop_mode} -t {STOP_SECONDS} stop"
            f" || {pg_ctl} -D {data} -m immediate -t {STOP_SECONDS} stop"
        )
        try:
            # From here, the server (once started) and the folder go with this process.
            self._watchdog: FolderWatchdog | None = FolderWatchdog(
                self.directory, self._as_server_user(["/bin/sh", "-c", stop])
            )
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    @property
    def dsn(self) -> str:
        """The libpq connection string (``host=<socket folder> dbname=postgres user=...``)."""
        return f"host={self.socket_dir} dbname=postgres user={self.user}"

    def _as_server_user(self, command: list[str]) -> list[str]:
        if self._owner is None:
            return command
        return ["runuser", "-u", "nobody", "--", *command]

    def _run(self, command: list[str], deadline: float) -> None:
        """Run one of the tools; its failure, or its still running at ``deadline``
        (then it is ended: SIGTERM, which ``runuser`` passes on, then SIGKILL), is a
        ``RuntimeError`` with what it said and the server's log."""
        name = Path(command[0]).name
        with subprocess.Popen(  # noqa: S603 - our own argument list
            self._as_server_user(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            try:
                said, _ = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                said, _ = end_process(process)  # SIGTERM, which runuser passes on
                failure = "did not finish in time"
            else:
                if process.returncode == 0:
                    return
                failure = f"failed ({process.returncode})"
        log = self.directory / "log"
        with contextlib.suppress(OSError):
            said += "\nserver log: " + log.read_text()[-500:]
        raise RuntimeError(f"{name} {failure}: {said.strip()}")

    def start(self, timeout: float = 60.0) -> str:
        """Create the database cluster, start the server and wait until it accepts
        connections (``pg_ctl -w``); returns :attr:`dsn`. Already started: returns it.

        Raises:
            RuntimeError: it did not start within ``timeout`` seconds, or could not
                (with the tool's message and the server's log); or :meth:`stop` was
                called before.
        """
        if self._watchdog is None:
            raise RuntimeError("this PostgresServer was stopped: make a new one")
        if self._started:
            return self.dsn
        deadline = time.monotonic() + timeout
        self.socket_dir.mkdir(exist_ok=True)
        if self._owner is not None:
            for path in (self.directory, self.socket_dir):
                os.chown(path, self._owner, -1)
        if not (self.data / "PG_VERSION").exists():
            initdb = [self._initdb, "-D", str(self.data), "-A", "trust", "-U", self.user]
            try:
                self._run([*initdb, "--no-sync"], deadline)
            except BaseException:
                shutil.rmtree(self.data, ignore_errors=True)  # half a cluster is none
                raise
        # pg_ctl hands these to the server through a shell: each word is quoted.
        options = ["-k", str(self.socket_dir), "-c", "listen_addresses="]
        if not self.fsync:
            options += ["-c", "fsync=off"]
        for setting in self.settings:
            options += ["-c", setting]
        start = [
            self._pg_ctl,
            "-D", str(self.data),
            "-o", shlex.join(options),
            "-l", str(self.directory / "log"),
            "-t", str(max(1, round(deadline - time.monotonic()))),
            "-w",
            "start",
        ]  # fmt: skip
        self._run(start, deadline + 5)  # pg_ctl's own -t ends it first
        self._started = True
        return self.dsn

    def stop(self) -> None:
        """Stop the server and remove its folder, and wait for both (up to the
        watchdog's own limit); idempotent."""
        watchdog, self._watchdog = self._watchdog, None
        self._started = False
        if watchdog is not None:
            watchdog.release()
