"""The session cookie: signed with the configured secret, with an expiry.

A cookie is honoured only if it was signed with the service's secret and is younger
than the session's maximum age; otherwise the client simply gets a new session, and
the old session's runs are a 404 to it, exactly like someone else's.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from itsdangerous import TimestampSigner

from cancelkit.demo._state import COOKIE, SESSION_SALT, DemoState

from .conftest import Demo, start_demo, stop_demo
from .test_demo_service import LONG

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "a-test-secret-that-is-long-enough-0123456789"
MAX_AGE = 3600


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    env = os.environ | {"CANCELKIT_SECRET": SECRET}
    running = start_demo(
        tmp_path_factory.mktemp("sessions"), args=["--session-max-age", str(MAX_AGE)], env=env
    )
    yield running
    stop_demo(running)


class _Backdated(TimestampSigner):
    """Signs as if it were ``age`` seconds ago (what an old cookie looks like)."""

    def __init__(self, secret: str, age: int) -> None:
        super().__init__(secret, salt=SESSION_SALT)
        self.age = age

    def get_timestamp(self) -> int:
        return int(time.time()) - self.age


def _status(url: str, run_id: str, cookie: str) -> int:
    with httpx2.Client(base_url=url, cookies={COOKIE: cookie}) as client:
        return client.get(f"/api/runs/{run_id}").status_code


def test_the_cookie_is_signed_with_the_configured_secret_and_expires(configured: Demo) -> None:
    with httpx2.Client(base_url=configured.url) as client:
        reply = client.post("/api/runs", json={"prompt": LONG})
        run_id = reply.json()["id"]
        issued = reply.cookies[COOKIE]
        header = reply.headers["set-cookie"].lower()
        try:
            assert f"max-age={MAX_AGE}" in header
            assert "httponly" in header
            assert "samesite=strict" in header
            signer = TimestampSigner(SECRET, salt=SESSION_SALT)
            session = signer.unsign(issued, max_age=MAX_AGE).decode()  # ours, and signed
            assert _status(configured.url, run_id, issued) == 200
            # Anyone holding the configured secret can sign for the session ...
            assert _status(configured.url, run_id, signer.sign(session).decode()) == 200
            # ... but not past the maximum age, and not with another secret or a change.
            expired = _Backdated(SECRET, MAX_AGE + 60).sign(session).decode()
            assert _status(configured.url, run_id, expired) == 404
            other = TimestampSigner("x" * 40, salt=SESSION_SALT).sign(session).decode()
            assert _status(configured.url, run_id, other) == 404
            assert _status(configured.url, run_id, session) == 404
            tampered = ("B" if issued[0] == "A" else "A") + issued[1:]
            assert _status(configured.url, run_id, tampered) == 404
        finally:
            client.post(f"/api/runs/{run_id}/cancel")


def test_someone_elses_run_looks_exactly_like_an_unknown_one(configured: Demo) -> None:
    with (
        httpx2.Client(base_url=configured.url) as alice,
        httpx2.Client(base_url=configured.url) as mallory,
    ):
        run_id = alice.post("/api/runs", json={"prompt": LONG}).json()["id"]
        try:
            answers: list[Any] = []
            for target in (run_id, "no-such-run"):
                for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events")):
                    reply = mallory.request(method, f"/api/runs/{target}{path}")
                    answers.append((reply.status_code, reply.json()))
            assert answers[:3] == answers[3:]
            assert {a[0] for a in answers} == {404}
        finally:
            alice.post(f"/api/runs/{run_id}/cancel")


def test_the_secret_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        DemoState(agent=None, secret=b"x" * 31)  # type: ignore[arg-type]
    DemoState(agent=None, secret=b"x" * 32)  # type: ignore[arg-type]


def test_a_remembered_cookie_still_expires_and_a_bad_one_is_never_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = DemoState(agent=None, secret=SECRET.encode())  # type: ignore[arg-type]
    max_age = state.limits.session_max_age
    cookie = state.sign("alice")
    assert state.session_of(cookie) == "alice"  # checked, and remembered
    assert state.session_of(cookie) == "alice"  # from memory
    at = cookie.rindex(".") + 1  # the signature's first character: all 6 bits count
    tampered = cookie[:at] + ("A" if cookie[at] != "A" else "B") + cookie[at + 1 :]
    assert state.session_of(tampered) is None
    assert state.session_of(tampered) is None  # a bad one is checked again, every time
    assert state.session_of(_Backdated(SECRET, max_age + 1).sign("bob").decode()) is None
    assert state.session_of(_Backdated(SECRET, -60).sign("eve").decode()) is None  # future
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + max_age + 2)
    assert state.session_of(cookie) is None  # remembered, and expired all the same


def test_the_remembered_cookies_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cancelkit.demo._state.SESSIONS_REMEMBERED", 3)
    state = DemoState(agent=None, secret=SECRET.encode())  # type: ignore[arg-type]
    cookies = [state.sign(f"s{i}") for i in range(5)]
    assert [state.session_of(cookie) for cookie in cookies] == [f"s{i}" for i in range(5)]
    assert len(state._checked) == 3
    assert list(state._checked) == cookies[2:]  # the oldest checked go first
    assert state.session_of(cookies[0]) == "s0"  # forgotten is checked again, not refused


def test_a_padded_copy_of_a_cookie_is_honoured_but_never_remembered() -> None:
    # base64 decoding skips stray characters: a signed cookie padded with them still
    # verifies. Remembering each padded copy would let one session fill the memory.
    state = DemoState(agent=None, secret=SECRET.encode())  # type: ignore[arg-type]
    cookie = state.sign("alice")
    padded = [cookie + "!" * n for n in (4, 8, 4000)]
    assert [state.session_of(copy) for copy in padded] == ["alice"] * 3
    assert state._checked == {}
    assert state.session_of(cookie) == "alice"
    assert list(state._checked) == [cookie]
