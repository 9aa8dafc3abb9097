"""The demo in a real browser: Debian's Chromium, driven by Playwright.

Type a prompt, watch the answer stream, press Stop: the page shows ``cancelled`` with
reason ``user`` and the model server stops generating. Close a tab mid-answer: its
run is cancelled with reason ``disconnect``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.web.conftest import Demo, start_demo, stop_demo

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = "/usr/bin/chromium"
# As the machine's notes say: no background networking on a closed network.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LONG = "Tell me everything [[tokens:3000]] [[rate:60]]"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("browser-demo"))
    yield running
    stop_demo(running)


def test_stop_in_the_browser_reaches_the_model(browser: Browser, demo: Demo) -> None:
    page = browser.new_page()
    page.goto(demo.url)
    page.fill("#prompt", LONG)
    page.click("#send")
    page.wait_for_function("document.querySelector('#answer').textContent.length > 60")
    streamed = len(page.text_content("#answer") or "")
    page.click("#stop")
    page.wait_for_function("document.querySelector('#status').textContent === 'cancelled'")
    assert page.text_content("#reason") == "reason: user (Stop pressed)"
    assert "cancelled (user)" in (page.text_content("#history") or "")
    assert streamed >= 60
    generated = demo.stats()["tokens_generated"]
    time.sleep(0.3)
    stats = demo.stats()
    assert stats["tokens_generated"] == generated  # the model server stopped
    assert stats["tokens_after_disconnect"] == 0
    assert isinstance(stats["tokens_saved_by_stop"], int)
    assert stats["tokens_saved_by_stop"] > 2000
    page.wait_for_function("document.querySelector('#s-p50').textContent.endsWith('ms')")
    page.close()


def test_closing_the_tab_cancels_the_run_with_reason_disconnect(
    browser: Browser, demo: Demo
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(demo.url)
    page.fill("#prompt", LONG)
    page.click("#send")
    page.wait_for_function("document.querySelector('#answer').textContent.length > 20")
    run_id = page.evaluate("current")
    page.close()  # the tab goes; its event stream with it
    deadline = time.monotonic() + 10
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = context.request.get(f"{demo.url}/api/runs/{run_id}").json()
        if status["status"] == "cancelled":
            break
        time.sleep(0.05)
    context.close()
    assert status["status"] == "cancelled"
    assert status["reason"] == {"kind": "disconnect", "message": "the client went away"}
