"""The throwaway PostgreSQL the suite and the benches start (``PostgresServer``): it
serves with its settings exactly as written, refuses bad ones before it makes
anything, says why it cannot start, and goes with its owner however the owner ends,
folder and server process both."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from cancelkit.stores import _postgres_server
from cancelkit.stores._postgres_server import PostgresServer

from ..helpers import alive


def _gone(pid: int, folder: Path, limit: float = 30.0) -> bool:
    """Whether the server ``pid`` has ended and ``folder`` is removed, within ``limit``."""
    deadline = time.monotonic() + limit
    while (alive(pid) or folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid) and not folder.exists()


def _postmaster(server: PostgresServer) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


def test_it_serves_with_its_settings_as_written_and_stop_removes_everything() -> None:
    # pg_ctl hands the settings to the server through a shell: nothing in a value
    # may run, and the value arrives as written.
    witness = Path(f"/tmp/ck-injected-{uuid.uuid4().hex[:8]}")
    value = f"a b$(touch {witness})`id`|;&'\"q"
    settings = ("max_connections=37", f"application_name={value}")
    with PostgresServer(fsync=False, settings=settings) as server:
        assert server.start() == server.dsn  # started already: the same server
        with psycopg.connect(server.dsn) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
            assert connection.execute("SHOW fsync").fetchone() == ("off",)
            assert connection.execute("SHOW max_connections").fetchone() == ("37",)
            assert connection.execute("SHOW listen_addresses").fetchone() == ("",)
            shown = connection.execute("SELECT current_setting('application_name', true)")
            assert shown.fetchone() == (value,)
        pid = _postmaster(server)
        assert alive(pid)
    assert not witness.exists()
    assert _gone(pid, server.directory)
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="was stopped"):
        server.start()


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"settings": ("fsync",)}, ValueError, "name=value"),
        ({"settings": ("=on",)}, ValueError, "name=value"),
        ({"settings": ("a b=c",)}, ValueError, "name=value"),
        ({"settings": ("$(x)=1",)}, ValueError, "name=value"),
        ({"settings": ("a=b\nc",)}, ValueError, "name=value"),
        ({"settings": "fsync=off"}, TypeError, "not one string"),
        ({"user": "a b"}, ValueError, "identifier"),
        ({"user": "x;y"}, ValueError, "identifier"),
        ({"stop_mode": "now"}, ValueError, "stop_mode"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_made(
    arguments: dict[str, object],
    error: type[Exception],
    match: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def made(*args: object, **kwargs: object) -> str:
        raise AssertionError("a folder was made for arguments that are refused")

    monkeypatch.setattr(tempfile, "mkdtemp", made)
    with pytest.raises(error, match=match):
        PostgresServer(**arguments)  # type: ignore[arg-type]


def test_a_server_that_cannot_start_says_why_and_leaves_nothing() -> None:
    server = PostgresServer(settings=("no_such_setting_here=1",))
    with pytest.raises(RuntimeError, match="no_such_setting_here") as failure:
        server.__enter__()
    assert "pg_ctl failed" in str(failure.value)
    assert not server.directory.exists()  # the stop waited for its watchdog


OWNER = """
import time
from cancelkit.stores._postgres_server import PostgresServer

server = PostgresServer(fsync=False)
server.start()
print(server.directory, flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(120)
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
        assert server.directory.is_dir()
    finally:
        server.stop()
    assert not server.directory.exists()


def test_the_binaries_come_from_one_folder() -> None:
    found = _postgres_server.postgres_binaries()
    assert found is not None
    initdb, pg_ctl = found
    assert Path(initdb).parent == Path(pg_ctl).parent
    assert Path(initdb).name == "initdb"
    assert Path(pg_ctl).name == "pg_ctl"
