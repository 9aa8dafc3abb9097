"""The throwaway PostgreSQL the suite and the benches start (``PostgresServer``): it
serves, it refuses bad settings clearly, and it goes with its owner however the
owner ends, folder and server process both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from cancelkit.stores._postgres_server import PostgresServer

from ..helpers import alive


def _gone(pid: int, folder: Path, limit: float = 60.0) -> bool:
    """Whether the server ``pid`` has ended and ``folder`` is removed, within ``limit``."""
    deadline = time.monotonic() + limit
    while (alive(pid) or folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid) and not folder.exists()


def test_it_serves_with_its_settings_and_stop_removes_everything() -> None:
    with PostgresServer(fsync=False, settings=("max_connections=37",)) as server:
        with psycopg.connect(server.dsn) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
            assert connection.execute("SHOW fsync").fetchone() == ("off",)
            assert connection.execute("SHOW max_connections").fetchone() == ("37",)
            assert connection.execute("SHOW listen_addresses").fetchone() == ("",)
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        assert alive(pid)
    assert _gone(pid, server.directory)
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="was stopped"):
        server.start()


@pytest.mark.parametrize("setting", ["fsync", "=on", "fsync=", "a=b c", "log_line_prefix=%m x"])
def test_a_malformed_setting_is_refused_before_anything_starts(setting: str) -> None:
    with pytest.raises(ValueError, match="name=value without spaces"):
        PostgresServer(settings=(setting,))


def test_an_unknown_stop_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="stop_mode"):
        PostgresServer(stop_mode="now")


def test_a_server_that_cannot_start_says_why_and_leaves_nothing() -> None:
    server = PostgresServer(settings=("no_such_setting_here=1",))
    with pytest.raises(RuntimeError, match="no_such_setting_here") as failure:
        server.__enter__()
    assert "pg_ctl failed" in str(failure.value)
    deadline = time.monotonic() + 60
    while server.directory.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.directory.exists()


OWNER = """
import sys, time
from cancelkit.stores._postgres_server import PostgresServer

server = PostgresServer(fsync=False)
server.start()
print(server.directory, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_the_server_and_its_folder_go_with_an_owner_that_is_killed(how: signal.Signals) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None
            assert owner.stderr is not None
            line = owner.stdout.readline().strip()
            assert line, f"the owner ended before its server started: {owner.stderr.read()}"
            folder = Path(line)
            pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
            assert alive(pid)
        finally:
            owner.send_signal(how)
            owner.wait()
    assert owner.returncode == -how
    assert _gone(pid, folder)


def test_the_dsn_names_the_socket_folder_and_user() -> None:
    server = PostgresServer(user="someone")
    try:
        assert server.dsn == f"host={server.socket_dir} dbname=postgres user=someone"
        assert server.socket_dir.parent == server.directory
        assert os.path.isdir(server.directory)
    finally:
        server.stop()
    assert not server.directory.exists()
