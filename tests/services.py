"""The real services the suite starts, for any test folder: PostgreSQL and Redis.

PostgreSQL runs from the binaries on the machine (``initdb``, ``pg_ctl``), in a
temporary folder, listening on a unix socket only. ``pg_ctl`` leaves it running on
its own, so a watchdog process stops it and removes the folder when the session
ends, however it ends: it waits for the end of a pipe only the session holds, which
the kernel closes when pytest exits or is killed. Both refuse to run as root, so
when the suite runs as root the server runs as ``nobody``. Redis is Debian's
``redis-server`` (``scripts/test`` installs it), on a unix socket in a temporary
folder, ended with the session (or by the kernel, if pytest is killed). A missing
binary fails the tests that need it: they are never skipped silently.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cancelkit._lifetime import FolderWatchdog
from cancelkit.distributed import RedisServer

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in PG_BIN_DIRS if Path(f"{d}/{name}").exists()), None
    )
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed; the store tests need it")
    return found


def _as_server_user(command: list[str], owner: int | None) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *command] if owner is not None else command


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")  # before anything is made
    owner = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="ck-pg-"))
    data, sock = root / "data", root / "sock"
    stop = _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], owner)
    watchdog = FolderWatchdog(root, stop)

    def run(command: list[str]) -> None:
        subprocess.run(_as_server_user(command, owner), check=True, capture_output=True, text=True)

    options = (
        f"-k {sock} -c listen_addresses='' -c fsync=off -c max_connections=200"
        " -c client_connection_check_interval=100ms"  # notice killed clients mid-query
    )
    try:
        sock.mkdir()
        if owner is not None:
            for path in (root, sock):
                os.chown(path, owner, -1)
        run([initdb, "-D", str(data), "-A", "trust", "-U", "cancelkit", "--no-sync"])
        run(
            [
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "start",
            ]
        )
        yield f"host={sock} dbname=postgres user=cancelkit"
    finally:
        watchdog.release()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session (no persistence); tests use their own key prefixes."""
    try:
        server = RedisServer()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
