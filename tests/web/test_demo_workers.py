"""``cancelkit demo --workers N``: any worker follows, describes and stops any run.

The demo is started as a user starts it, with real uvicorn worker processes behind
one port, the local model process, and a real Redis (the session's, or the private
``redis-server`` the demo starts itself). Each fresh connection may land on any
worker; ``X-Cancelkit-Worker`` says which one answered, so the tests open
connections (a bounded number of times) until one lands where they need it. However
the demo ends (SIGTERM, SIGKILL), none of its processes is left.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx2
import pytest

from cancelkit._lifetime import tied_to_this_process
from cancelkit.distributed import RedisServer

from ..helpers import alive
from .conftest import Demo, children, gone_within
from .test_demo_service import wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.slow

WORKER = "x-cancelkit-worker"
LONG = "Write at length [[tokens:3000]] [[rate:60]]"
ATTEMPTS = 200  # fresh connections tried before giving up on reaching another worker
NO_SUCH_RUN = (404, {"detail": "no such run"})


@dataclass
class Workers:
    url: str
    process: subprocess.Popen[str]
    log: Path

    def fail(self, message: str) -> str:
        return f"{message}; the demo said:\n{self.log.read_text()[-3000:]}"


def start_workers(tmp_path: Path, *args: str) -> Workers:
    """``cancelkit demo --workers ...`` on a port of its choosing, once every worker
    serves (the parent prints its address only then)."""
    log = tmp_path / "demo.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cancelkit",
                "demo",
                "--port",
                "0",
                "--data",
                str(tmp_path / "data"),
                "--model-rate",
                "100",
                "--grace",
                "3",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            preexec_fn=tied_to_this_process(signal.SIGTERM),  # never outlives the session
        )
    assert process.stdout is not None
    line = _line(process.stdout, timeout=60)
    if not line.startswith("cancelkit demo: http://"):
        process.kill()
        process.wait()
        process.stdout.close()
        raise AssertionError(f"the demo did not start ({line!r}): {log.read_text()[-3000:]}")
    return Workers(line.split()[2].rstrip("/"), process, log)


def _line(stream: IO[str], timeout: float) -> str:
    """The next line of a child's stdout, or ``""`` after ``timeout`` or its end."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline()


def stop_workers(demo: Workers, sig: signal.Signals = signal.SIGTERM) -> None:
    if demo.process.poll() is None:
        demo.process.send_signal(sig)
        try:
            demo.process.wait(40)
        except subprocess.TimeoutExpired:
            demo.process.kill()
            demo.process.wait()
    if demo.process.stdout is not None:
        demo.process.stdout.close()


@contextlib.contextmanager
def running(tmp_path: Path, *args: str) -> Iterator[Workers]:
    demo = start_workers(tmp_path, *args)
    try:
        yield demo
    finally:
        stop_workers(demo)


def landing(
    demo: Workers,
    cookies: httpx2.Cookies | None,
    accept: Callable[[str], bool],
    attempts: int = ATTEMPTS,
) -> httpx2.Client | None:
    """A client whose (kept-alive) connection landed on a worker ``accept`` takes,
    within ``attempts`` fresh connections (else ``None``)."""
    for _ in range(attempts):
        client = httpx2.Client(base_url=demo.url, cookies=cookies, timeout=30)
        if accept(client.get("/api/stats").headers[WORKER]):
            return client
        client.close()
    return None


def answers(demo: Workers, method: str, path: str, *, workers: int) -> dict[str, tuple[int, Any]]:
    """``method path`` from fresh sessions (no cookie) until ``workers`` different
    workers have answered: each worker's ``(status, body)``."""
    found: dict[str, tuple[int, Any]] = {}
    for _ in range(ATTEMPTS):
        with httpx2.Client(base_url=demo.url, timeout=30) as stranger:
            reply = stranger.request(method, path)
        found[reply.headers[WORKER]] = (reply.status_code, reply.json())
        if len(found) >= workers:
            return found
    raise AssertionError(demo.fail(f"only {len(found)} workers answered"))


def test_a_run_is_followed_and_stopped_through_other_workers(
    tmp_path: Path, redis_url: str
) -> None:
    with running(tmp_path, "--workers", "4", "--redis", redis_url) as demo:
        with httpx2.Client(base_url=demo.url, timeout=30) as alice:
            started = alice.post("/api/runs", json={"prompt": LONG})
            assert started.status_code == 201, started.text
            run_id, home = started.json()["id"], started.headers[WORKER]
            cookies = alice.cookies

        # Follow it from a connection that landed on another worker.
        follower = landing(demo, cookies, lambda worker: worker != home)
        assert follower is not None, demo.fail("no connection landed on another worker")
        with (
            contextlib.closing(follower),
            follower.stream("GET", f"/api/runs/{run_id}/events") as events,
        ):
            assert events.status_code == 200
            watcher = events.headers[WORKER]
            assert watcher != home
            lines = events.iter_lines()
            kinds: list[str] = []
            for line in lines:  # the answer streams in, through Redis
                if line.startswith("event: "):
                    kinds.append(line[7:])
                if kinds.count("delta") == 3:
                    break

            # Stop it through a third worker (any but the run's, if four won't do).
            stopper = landing(demo, cookies, lambda worker: worker not in {home, watcher})
            stopper = stopper or landing(demo, cookies, lambda worker: worker != home)
            assert stopper is not None
            with contextlib.closing(stopper):
                stopped = stopper.post(f"/api/runs/{run_id}/cancel")
            assert stopped.headers[WORKER] != home
            assert stopped.json() == {"cancelled": True}

            done: dict[str, Any] = {}
            for line in lines:
                if line.startswith("event: "):
                    kinds.append(line[7:])
                elif line.startswith("data: ") and kinds[-1] == "done":
                    done = json.loads(line[6:])
        assert kinds[0] == "delta"
        assert kinds[-1] == "done"
        assert done["status"] == "cancelled"
        assert done["reason"] == {"kind": "user", "message": "Stop pressed"}
        # The receipt came through Redis as JSON, whole: the model stream closed by a
        # Stop sent through another worker.
        receipt = done["receipt"]
        assert (receipt["run_id"], receipt["status"]) == (run_id, "cancelled")
        assert receipt["reason"] == {"kind": "user", "message": "Stop pressed"}
        assert receipt["asked_at"] is not None
        closed = [
            s for s in receipt["layers"] if (s["layer"], s["outcome"]) == ("stream", "closed")
        ]
        assert len(closed) == 1
        assert closed[0]["output_tokens"] > 0
        assert closed[0]["after_stop_ms"] >= 0
        assert receipt["layers"][-1]["layer"] == "run"

        # Every worker tells the owner the same outcome.
        seen: set[str] = set()
        for _ in range(ATTEMPTS):
            with httpx2.Client(base_url=demo.url, cookies=cookies, timeout=30) as owner:
                status = owner.get(f"/api/runs/{run_id}")
            assert status.status_code == 200, status.text
            assert status.json()["status"] == "cancelled"
            assert status.json()["reason"] == {"kind": "user", "message": "Stop pressed"}
            assert done["text"].startswith(status.json()["text"])
            assert status.json()["receipt"] == receipt
            seen.add(status.headers[WORKER])
            if len(seen) == 4:
                break
        assert home in seen
        assert len(seen) >= 2

        # Anyone else gets exactly what an unknown id gets, on every worker.
        for method, path in [("POST", "/cancel"), ("GET", "")]:
            theirs = answers(demo, method, f"/api/runs/{run_id}{path}", workers=3)
            unknown = answers(demo, method, f"/api/runs/no-such-run{path}", workers=3)
            assert [*theirs.values(), *unknown.values()] == [NO_SUCH_RUN] * 6

        # Closing the page stops a run that asked for it, whichever worker followed it.
        with httpx2.Client(base_url=demo.url, cookies=cookies, timeout=30) as page:
            body = {"prompt": LONG, "stop_when_unwatched": True}
            started = page.post("/api/runs", json=body)
            run_id, home = started.json()["id"], started.headers[WORKER]
        tab = landing(demo, cookies, lambda worker: worker != home)
        assert tab is not None
        with contextlib.closing(tab), tab.stream("GET", f"/api/runs/{run_id}/events") as events:
            assert next(events.iter_lines()) == "event: delta"
        # The tab is closed: its worker notices, and the run's worker stops it.
        assert wait_for(lambda: _status(demo, cookies, run_id)["status"] == "cancelled")
        assert _status(demo, cookies, run_id)["reason"] == {
            "kind": "disconnect",
            "message": "the client went away",
        }


def _status(demo: Workers, cookies: httpx2.Cookies, run_id: str) -> dict[str, Any]:
    with httpx2.Client(base_url=demo.url, cookies=cookies, timeout=30) as owner:
        reply = owner.get(f"/api/runs/{run_id}")
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def test_sigterm_ends_every_process_of_a_demo_with_its_own_redis(tmp_path: Path) -> None:
    demo = start_workers(tmp_path, "--workers", "2")
    try:
        processes = _processes(demo)
        with httpx2.Client(base_url=demo.url, timeout=30) as client:
            started = client.post("/api/runs", json={"prompt": LONG})
            assert started.status_code == 201
    finally:
        stop_workers(demo, signal.SIGTERM)
    assert demo.process.returncode == -signal.SIGTERM, demo.fail("not ended by SIGTERM")
    left = [command for pid, command in processes.items() if not gone_within(pid, 10)]
    assert not left, demo.fail(f"left running: {left}")


def test_sigkill_of_the_parent_leaves_no_process_and_no_folder(tmp_path: Path) -> None:
    demo = start_workers(tmp_path, "--workers", "2")
    try:
        processes = _processes(demo)
        redis_folder = _redis_folder(processes)
        assert redis_folder.is_dir()
    finally:
        stop_workers(demo, signal.SIGKILL)  # no handler, no finally: each must notice
    left = [command for pid, command in processes.items() if not gone_within(pid, 30)]
    assert not left, demo.fail(f"left running: {left}")
    deadline = time.monotonic() + 30
    while redis_folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_folder.exists(), demo.fail(f"its Redis folder was left: {redis_folder}")


def _redis_folder(processes: dict[int, str]) -> Path:
    """The folder of the demo's own redis-server, as its watchdog names it."""
    command = next(c for c in processes.values() if "cancelkit-watchdog" in c).split()
    return Path(command[command.index("cancelkit-watchdog") + 1])


def _processes(demo: Workers) -> dict[int, str]:
    """The demo's child processes (pid -> command): two workers, the model, Redis, and
    the watchdog that removes Redis's folder (and its ``cat``)."""
    found = {pid: _command(pid) for pid in children(demo.process.pid)}
    watchdogs = [pid for pid, command in found.items() if "cancelkit-watchdog" in command]
    assert len(watchdogs) == 1, found
    found.update((pid, _command(pid)) for pid in children(watchdogs[0]))
    commands = " | ".join(found.values())
    assert len(found) == 6, commands
    assert "redis-server" in commands
    assert " model " in commands
    assert sum("cancelkit.demo._worker" in c for c in found.values()) == 2, commands
    return found


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"


def test_every_response_names_its_worker(demo: Demo) -> None:
    with httpx2.Client(base_url=demo.url) as client:
        replies = [
            client.get("/api/stats"),
            client.get("/api/runs/no-such-run"),
            client.post("/api/runs", json={}),
            client.post("/api/runs", content=b"x" * 100_000),
        ]
    assert [r.status_code for r in replies] == [200, 404, 422, 413]
    assert {r.headers[WORKER] for r in replies} == {str(demo.process.pid)}
    assert alive(demo.process.pid)


def test_with_redis_down_another_workers_run_is_a_503(tmp_path: Path) -> None:
    with RedisServer() as redis, running(tmp_path, "--workers", "2", "--redis", redis.url) as demo:
        with httpx2.Client(base_url=demo.url, timeout=30) as alice:
            started = alice.post("/api/runs", json={"prompt": LONG})
            run_id, home = started.json()["id"], started.headers[WORKER]
            cookies = alice.cookies
        # Two workers: every connection that is not on the run's worker is on the other.
        clients = [landing(demo, cookies, lambda worker: worker != home) for _ in range(3)]
        asker, stopper, follower = (c for c in clients if c is not None)
        with (
            contextlib.closing(asker),
            contextlib.closing(stopper),
            contextlib.closing(follower),
            follower.stream("GET", f"/api/runs/{run_id}/events") as events,
        ):
            lines = events.iter_lines()
            assert next(lines) == "event: delta"  # followed through Redis
            redis.kill()
            with ThreadPoolExecutor(2) as pool:
                status = pool.submit(asker.get, f"/api/runs/{run_id}")
                stop = pool.submit(stopper.post, f"/api/runs/{run_id}/cancel")
                for reply in (status.result(), stop.result()):
                    assert reply.headers[WORKER] != home
                    assert reply.status_code == 503, reply.text
                    assert "Redis" in reply.json()["detail"]
                    assert "cannot be reached" in reply.json()["detail"]
            assert "event: error" in list(lines)  # the follower is told, then the stream ends
            redis.start()  # back, so that the demo's workers shut down without waiting
