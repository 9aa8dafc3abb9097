"""The test session fails when a process it started outlives it (tests/conftest.py).

Run in a pytest of its own (``pytester``), with this suite's ``conftest.py``: a test
that leaves a child running, or an orphan reparented to init (what a killed parent
leaves behind), fails the session at its end, and the leftovers are killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import SESSION_MARK, leftovers
from .helpers import alive

pytest_plugins = ["pytester"]

# The suite's conftest, without its service fixtures (a pytester run has no ``tests``).
CONFTEST = re.sub(
    r"^pytest_plugins = .*$", "", (Path(__file__).parent / "conftest.py").read_text(), flags=re.M
)

LEAVES_PROCESSES = """
import subprocess, sys
from pathlib import Path

KEEP = []


def test_leaves_a_child_and_an_orphan():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    KEEP.append(child)
    # An orphan: its parent (the shell) ends at once, so init adopts it.
    orphan = subprocess.run(
        ["sh", "-c", "sleep 120 > /dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    Path("pids").write_text(f"{child.pid} {orphan.stdout.strip()}")
"""

CLEANS_UP = """
import subprocess, sys


def test_waits_for_its_child():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
"""


def test_a_process_that_outlives_the_session_fails_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANCELKIT_LEFTOVER_GRACE", "0.5")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_subject=LEAVES_PROCESSES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*processes started by the tests outlived them (now killed):*", "*1 passed*"]
    )
    pids = [int(p) for p in (pytester.path / "pids").read_text().split()]
    assert len(pids) == 2
    assert all(f"  {pid}: " in result.stdout.str() for pid in pids)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)  # and they were killed


def test_a_session_that_cleans_up_passes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_subject=CLEANS_UP)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    assert "outlived" not in result.stdout.str()


def test_the_check_sees_what_this_session_starts() -> None:
    mark = os.environ[SESSION_MARK]
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert child.pid in leftovers(mark, os.getpid())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in leftovers(mark, os.getpid())


HOLDS_POSTGRES = """
import os, time
from pathlib import Path

pytest_plugins = ["tests.services"]


def test_holds_the_server(postgres_dsn):
    Path(os.environ["DSN_FILE"]).write_text(postgres_dsn)
    time.sleep(120)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_the_suites_postgresql_is_gone_when_its_session_is_killed(tmp_path: Path, how: str) -> None:
    # pg_ctl leaves the server running on its own: a pytest killed mid-session must
    # not leave it (or its folder) behind.
    (tmp_path / "test_holder.py").write_text(HOLDS_POSTGRES)
    dsn_file = tmp_path / "dsn"
    repo = Path(__file__).parent.parent
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=repo,
        env={**os.environ, "DSN_FILE": str(dsn_file), "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not dsn_file.exists() and time.monotonic() < deadline:
            assert session.poll() is None, "the session ended before its server started"
            time.sleep(0.05)
        sock = Path(dsn_file.read_text().split()[0].removeprefix("host="))
        root = sock.parent
        server = int((root / "data" / "postmaster.pid").read_text().split()[0])
        assert alive(server)
    finally:
        session.send_signal(getattr(signal, how))
        session.wait(30)
    deadline = time.monotonic() + 30
    while (alive(server) or root.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(server)
    assert not root.exists()
