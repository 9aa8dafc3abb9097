"""kill -9 of the demo service in the middle of a run, then a restart."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import httpx2

from ..web.conftest import gone_within, model_pid, start_demo, stop_demo
from ..web.test_demo_service import LONG, wait_for

if TYPE_CHECKING:
    from pathlib import Path


def _ledger(data: Path, run_id: str) -> tuple[Any, ...]:
    with sqlite3.connect(data / "demo.db") as db:
        row = db.execute(
            "SELECT status, reason_kind FROM cancelkit_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        replies = db.execute(
            "SELECT count(*) FROM cancelkit_replies WHERE run_id = ?", (run_id,)
        ).fetchone()
    db.close()
    return (*row, replies[0])


def test_the_service_killed_mid_run_leaves_nothing_and_its_run_settles_at_restart(
    tmp_path: Path,
) -> None:
    demo = start_demo(tmp_path)
    model = model_pid(demo)
    with httpx2.Client(base_url=demo.url) as client:
        run_id = client.post("/api/runs", json={"prompt": LONG}).json()["id"]
        assert wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["text"])  # streaming
    demo.process.kill()  # SIGKILL: no handler, no finally, no shutdown of runs
    demo.process.wait(15)
    assert gone_within(model, 10)  # its model process did not outlive it
    assert _ledger(tmp_path, run_id) == ("running", None, 0)  # nobody will finish it
    restarted = start_demo(tmp_path)  # its store's setup() reconciles the ledger
    try:
        assert _ledger(tmp_path, run_id) == ("cancelled", "shutdown", 0)  # no partial write
    finally:
        stop_demo(restarted)
