"""The demo in a real browser: Debian's Chromium, driven by Playwright.

Type a prompt, watch the answer stream, press Stop: the page shows ``cancelled`` with
reason ``user``, the model server stops generating, and the Stop receipt is drawn as
a timeline, one row per layer. Close a tab mid-answer: its run is cancelled with
reason ``disconnect``. Markup from the model is shown as text, never run, and the
page's Content-Security-Policy would stop it if it got in.

With ``CANCELKIT_DEMO_SCREENSHOT=docs/demo.png`` the receipt test saves the page after
Stop there (the README's picture).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

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
WAIT = 30_000  # milliseconds: a generous bound, not a measurement
# The page's Content-Security-Policy forbids eval, so Playwright's string predicates
# (wait_for_function) cannot run in it: the tests wait with locators instead.


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
    expect(page.locator("#answer")).to_have_text(re.compile(".{60}", re.DOTALL), timeout=WAIT)
    streamed = len(page.text_content("#answer") or "")
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("cancelled", timeout=WAIT)
    assert page.text_content("#reason") == "reason: user (Stop pressed)"
    assert "cancelled (user)" in (page.text_content("#history") or "")
    assert streamed >= 60
    stats = demo.once_the_model_is_still()  # the model server stopped
    assert stats["tokens_after_disconnect"] == 0
    assert isinstance(stats["tokens_saved_by_stop"], int)
    assert stats["tokens_saved_by_stop"] > 2000
    expect(page.locator("#timeline li").first).to_be_visible(timeout=WAIT)
    page.close()


# Four tools at once: a sync one in a worker thread (long), an async one, a sub-agent
# (a child run with its own model stream) and a staged write, which returns at once.
TOOLS = (
    'Research this [[tool:crunch_numbers {"n": 3000}]]'
    ' [[tool:search_notes {"query": "cancel scopes"}]]'
    ' [[tool:researcher {"task": "Find prior art"}]]'
    ' [[tool:save_note {"text": "draft"}]] [[tokens:400]]'
)


def test_the_receipt_shows_which_layer_stopped_when(browser: Browser, demo: Demo) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(demo.url)
    page.fill("#prompt", TOOLS)
    page.click("#send")
    # All four tools were started together; the write has returned, the rest are running.
    expect(page.locator("#answer")).to_contain_text("save_note returned", timeout=WAIT)
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("cancelled", timeout=WAIT)
    receipt = page.locator("#receipt")
    expect(receipt.locator("#timeline li").first).to_be_visible(timeout=WAIT)
    rows = receipt.locator("#timeline li").all()
    layers = [row.get_attribute("data-layer") for row in rows]
    assert {"stream", "tool", "thread", "child run", "transaction", "run"} <= set(layers)
    assert layers[-1] == "run"
    text = receipt.text_content() or ""
    assert "every layer had stopped" in text
    assert "user (Stop pressed)" in text  # the reason
    assert "4 started, 4 finished, 0 prevented" in text
    whens = [row.locator(".lwhen").text_content() or "" for row in rows]
    assert any(when.endswith("before Stop") for when in whens)  # the write, done first
    assert any(when.endswith("after Stop") for when in whens)
    # Each layer stopped after the Stop has a bar on the shared scale.
    stopped = [row for row, when in zip(rows, whens, strict=True) if when.endswith("after Stop")]
    assert all(row.locator(".bar").count() == 1 for row in stopped)
    thread = rows[layers.index("thread")]
    assert thread.locator(".lname").text_content() == "crunch_numbers"
    assert thread.locator(".lout").text_content() == "cancelled"
    if shot := os.environ.get("CANCELKIT_DEMO_SCREENSHOT"):
        expect(page.locator("#s-runs")).to_have_text("0", timeout=WAIT)  # the counters caught up
        page.screenshot(path=shot, full_page=True)
    page.close()


def test_closing_the_tab_cancels_the_run_with_reason_disconnect(
    browser: Browser, demo: Demo
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(demo.url)
    page.fill("#prompt", LONG)
    page.click("#send")
    expect(page.locator("#answer")).to_have_text(re.compile(".{20}", re.DOTALL), timeout=WAIT)
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


# The model calls a "tool" whose name is markup; the agent reports it back, and the
# page shows the call. The first form is refused by the local model (the tool name
# ends at the first space, so the rest is not JSON): the run fails and the page shows
# the error, which quotes the markup. The second reaches the page as a tool name.
ATTACKS = [
    "Hi [[tool:<img src=x onerror=window.__pwned=1> {}]]",
    "Hi [[tool:<img/src/onerror=window.__pwned=1> {}]]",
]


@pytest.mark.parametrize("prompt", ATTACKS, ids=["with-spaces", "without-spaces"])
def test_markup_from_the_model_is_shown_as_text_never_run(
    browser: Browser, demo: Demo, prompt: str
) -> None:
    page = browser.new_page()
    page.goto(demo.url)
    page.fill("#prompt", prompt)
    page.click("#send")
    expect(page.locator("#status")).to_have_text(re.compile("^(completed|failed)$"), timeout=WAIT)
    shown = (page.text_content("#answer") or "") + (page.text_content("#reason") or "")
    assert "<img" in shown  # the markup is there, as text
    expect(page.locator("#timeline li").first).to_be_visible(timeout=WAIT)
    assert "<img" in (page.text_content("#receipt") or "")  # in the receipt too, as text
    assert page.evaluate("document.querySelectorAll('img').length") == 0  # not as an element
    assert page.evaluate("window.__pwned") is None
    page.close()


def test_the_page_forbids_inline_script(browser: Browser, demo: Demo) -> None:
    page = browser.new_page()
    response = page.goto(demo.url)
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'sha256-" in policy
    assert "unsafe-inline" not in policy
    # Were markup to get into the page anyway, its inline handler would not run.
    violated = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener(
                "securitypolicyviolation", (e) => resolve(e.effectiveDirective), {once: true});
            const box = document.createElement("div");
            box.innerHTML = "<img src=/missing.png onerror=window.__pwned=1>";
            document.body.append(box);
        })"""
    )
    assert violated.startswith("script-src")
    assert page.evaluate("window.__pwned") is None
    expect(page.locator("#s-model")).to_have_text("up", timeout=WAIT)
    page.close()
