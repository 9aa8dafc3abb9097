"""The load of bench_web: the services in their processes, and the sessions.

Every process is started in a session of its own and stopped with its whole group
(:class:`Process`), on SIGTERM and Ctrl-C too; the model server and the naive service
are also tied to the bench's process (a parent-death signal and a stdin pipe), so they
exit with it however it ends, SIGKILL included (the demo has no such option). A
session is one browser tab: it starts a run, follows its events, and presses Stop,
closes its stream, or reads to the end (:func:`drive`).
Every wait is bounded: a session by :data:`SESSION_SECONDS`, a load by twice that.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.streams.buffered import BufferedByteReceiveStream

from cancelkit._lifetime import tied_to_this_process
from cancelkit.llm.local import count_tokens

PROMPT = 'Research [[tool:save_note {"text": "session %d"}]] [[tokens:%d]] [[label:%s]]'
REPLY_TOKENS = 300
MODEL_RATE = 50.0
NAIVE = Path(__file__).with_name("_naive_service.py")
SESSION_SECONDS = 60.0  # a bound on one session: a 300-token reply takes about 6 s


def free_port() -> int:
    """A free TCP port on the loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Process:
    """A child process in a session of its own, stopped with its whole group."""

    def __init__(self, argv: list[str], ready_url: str, *, stdin: int | None = None) -> None:
        self.popen = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # SIGTERM (a graceful stop) when the bench ends, however it ends.
            preexec_fn=tied_to_this_process(signal.SIGTERM),
        )
        try:
            self._wait_ready(ready_url)
        except BaseException:  # SIGTERM (SystemExit) or Ctrl-C while it starts, too
            self.stop()
            raise

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(url, timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.popen.args!r} did not start")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def stop(self) -> None:
        """SIGTERM to the group, then SIGKILL after 15 s; idempotent."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        if self.popen.stdin is not None:
            self.popen.stdin.close()


def start_model() -> tuple[str, Process]:
    """The local model server, tied to this process (it exits when the bench does)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "cancelkit", "model", "--port", str(port)]
    argv += ["--rate", str(MODEL_RATE), "--exit-with-parent", str(os.getpid())]
    return url, Process(argv, url + "/health", stdin=subprocess.PIPE)


def start_service(peer: str, model_url: str, data: Path) -> tuple[str, Process]:
    """A fresh service of ``peer`` on ``model_url``, its database in ``data``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if peer == "cancelkit":
        argv = [sys.executable, "-m", "cancelkit", "demo", "--port", str(port)]
        argv += ["--data", str(data), "--base-url", model_url]
        argv += ["--max-runs", "100000", "--max-runs-per-session", "100"]
    else:
        argv = [sys.executable, str(NAIVE), "--port", str(port)]
        argv += ["--model-url", model_url, "--data", str(data)]
        argv += ["--exit-with-parent", str(os.getpid())]
        return url, Process(argv, url + "/api/stats", stdin=subprocess.PIPE)
    return url, Process(argv, url + "/api/stats")


@dataclass
class Session:
    """One browser session: what it did and saw."""

    index: int
    kind: str  # stop, disconnect (a closed tab), complete
    label: str
    stop_after: int  # deltas before it presses Stop or closes its stream
    reply_tokens: int = REPLY_TOKENS  # the answer's length (after the tool call)
    run_id: str | None = None
    moment: float | None = None  # time.monotonic() of its Stop or close
    stop_sent: float | None = None  # time.perf_counter() of its cancel request
    stop_answered: float | None = None  # time.perf_counter() of the cancel's response
    stop_wall: float | None = None  # time.time() of the Stop, beside the receipt's clock
    stop_reached_wall: float | None = None  # time.time() the naive handler ran, if said
    stop_written_wall: float | None = None  # time.time() the cancel request was sent off
    done_at: float | None = None  # time.perf_counter() of the run's final event
    final: dict[str, Any] | None = None
    tokens: int = 0  # tokens received
    error: str | None = None
    tokens_after: int | None = None  # generated after ``moment``, by the model server
    model_outcomes: list[str] = field(default_factory=list)  # its model calls' ends
    arrived: bool = False  # (concurrent Stops) counted as streaming, or as gone
    warm: bool = True  # polls as the page does; a concurrent Stop uses an idle connection


@dataclass
class Together:
    """The 60 concurrent Stops: every session presses Stop once all are streaming."""

    expected: int
    arrived: int = 0
    go: anyio.Event = field(default_factory=anyio.Event)

    def arrive(self) -> None:
        """One more session is streaming; the last one gives the signal."""
        self.arrived += 1
        if self.arrived >= self.expected:
            self.go.set()


async def press_stop(client: httpx2.AsyncClient, session: Session) -> None:
    """The Stop button: the moment is taken just before the cancel request."""
    session.moment = time.monotonic()
    session.stop_wall = time.time()
    session.stop_sent = time.perf_counter()

    async def written(event: str, info: dict[str, Any]) -> None:  # httpcore's trace hook
        if event == "http11.send_request_body.complete":
            session.stop_written_wall = time.time()

    reply = await client.post(f"/api/runs/{session.run_id}/cancel", extensions={"trace": written})
    session.stop_answered = time.perf_counter()
    if reply.status_code == 200:  # the naive service says when its handler ran
        session.stop_reached_wall = reply.json().get("reached")


async def drive(url: str, session: Session, together: Together | None) -> None:
    """Start a run, follow its events, and Stop, close or read to the end."""
    async with httpx2.AsyncClient(base_url=url, timeout=SESSION_SECONDS) as client:
        prompt = PROMPT % (session.index, session.reply_tokens, session.label)
        body = {"prompt": prompt, "stop_when_unwatched": True}
        reply = await client.post("/api/runs", json=body)
        if reply.status_code not in (200, 201):
            session.error = f"start: {reply.status_code}"
            return
        session.run_id = reply.json()["id"]
        deltas, event = 0, ""
        async with (
            anyio.create_task_group() as group,
            client.stream("GET", f"/api/runs/{session.run_id}/events") as response,
        ):
            if session.warm:
                group.start_soon(_poll, client)
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    continue
                if not line.startswith("data: "):
                    continue
                if event == "delta":
                    deltas += 1
                    session.tokens += count_tokens(json.loads(line[6:])["text"])
                    if deltas != session.stop_after:
                        continue
                    if session.kind == "disconnect":
                        session.moment = time.monotonic()
                        break
                    if session.kind == "stop" and together is None:
                        await press_stop(client, session)
                    elif session.kind == "stop" and together is not None:
                        session.arrived = True
                        together.arrive()
                        group.start_soon(_stop_together, client, session, together)
                elif event == "done":
                    session.done_at = time.perf_counter()
                    session.final = json.loads(line[6:])
                    break
            group.cancel_scope.cancel()  # a Stop that never came is not waited for


async def _poll(client: httpx2.AsyncClient) -> None:
    """The page's poll of ``/api/stats`` beside its event stream (it polls every
    second): on a second connection, left open and idle, which its Stop then uses,
    as a browser's does. One poll, not one a second: the Stop needs the connection,
    not the load of the polls."""
    (await client.get("/api/stats")).raise_for_status()


async def _stop_together(client: httpx2.AsyncClient, session: Session, together: Together) -> None:
    """One of the concurrent Stops, sent as its own browser would send it.

    60 browsers send their Stops each at once; one load generator sending 60 through
    httpx2 would interleave them with its own handling of the replies and events that
    the first Stops bring back, so a faster service would see its later Stops sent
    later. So the request is written by hand on a socket: opened in advance (the
    idle connection a browser's page keeps, ``warm``) or at the signal (a new one);
    the moment is taken just before it is written.
    """
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    request = (
        f"POST /api/runs/{session.run_id}/cancel HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Cookie: {cookies}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    stream = await anyio.connect_tcp(host, port) if session.warm else None
    try:
        await together.go.wait()
        session.moment = time.monotonic()
        session.stop_wall = time.time()
        session.stop_sent = time.perf_counter()
        if stream is None:
            stream = await anyio.connect_tcp(host, port)
        await stream.send(request)
        session.stop_written_wall = time.time()
        status, body = await _read_reply(BufferedByteReceiveStream(stream))
        session.stop_answered = time.perf_counter()
    finally:
        if stream is not None:
            await stream.aclose()
    if status == 200:  # the naive service says when its handler ran
        session.stop_reached_wall = json.loads(body).get("reached")


async def _read_reply(reader: BufferedByteReceiveStream) -> tuple[int, bytes]:
    """The status and body of an HTTP/1.1 reply with a ``Content-Length``."""
    try:
        head = (await reader.receive_until(b"\r\n\r\n", 65536)).decode("latin-1")
        status, *lines = head.split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
        body = await reader.receive_exactly(int(fields.get("content-length", "0")))
    except (anyio.IncompleteRead, anyio.DelimiterNotFound) as exc:
        raise OSError(f"a broken reply to a Stop: {exc!r}") from exc
    return int(status.split()[1]), body


async def load(url: str, sessions: list[Session], together: Together | None) -> None:
    """Drive every session at once; each is bounded, and so is the whole."""
    with anyio.fail_after(SESSION_SECONDS * 2):
        async with anyio.create_task_group() as outer:
            if together is not None:  # the signal comes however many got there
                outer.start_soon(_give_signal_by, together, SESSION_SECONDS / 2)
            async with anyio.create_task_group() as group:
                for session in sessions:
                    group.start_soon(_bounded, url, session, together)
            outer.cancel_scope.cancel()


async def _give_signal_by(together: Together, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await together.go.wait()
    together.go.set()


async def _bounded(url: str, session: Session, together: Together | None) -> None:
    try:
        with anyio.fail_after(SESSION_SECONDS):
            await drive(url, session, together)
    except (TimeoutError, OSError, httpx2.HTTPError, anyio.EndOfStream) as exc:
        session.error = f"{type(exc).__name__}: {exc}"
    finally:
        if together is not None and not session.arrived:
            together.arrive()  # a session that never got there holds nobody up
            session.arrived = True


def plan(size: int, seed: int, tag: str, tokens: int = REPLY_TOKENS) -> list[Session]:
    """``size`` sessions, a third of each kind, with Stop/close moments from ``seed``
    (the same for every peer): after 5 to 120 deltas of a 300-token answer (the
    first 5 are the tool-call turn), proportionally for another length."""
    rng = random.Random(seed)
    kinds = ("stop", "disconnect", "complete")
    latest = max(5, min(120, tokens * 2 // 5))
    return [
        Session(index, kinds[index % 3], f"{tag}-{index}", rng.randint(5, latest), tokens)
        for index in range(size)
    ]


def together_plan(
    size: int, tag: str, tokens: int = REPLY_TOKENS, *, warm: bool = True
) -> list[Session]:
    """``size`` sessions that all press Stop once every one has had 20 deltas; each
    on an idle connection it opened before (``warm``), else on a new one."""
    return [
        Session(index, "stop", f"{tag}-{index}", 20, tokens, warm=warm) for index in range(size)
    ]
