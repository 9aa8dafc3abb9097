"""bench/bench_unwind.py at a tiny size, so that it cannot rot.

It asserts what the bench relies on (both peers' runs are stopped, each follower gets
its final event, the rows name both peers and their ratio), never a timing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))

import bench_unwind  # found through the path above
from _web_load import start_model

pytestmark = pytest.mark.slow


def test_the_unwind_bench_stops_both_peers_and_reports_both() -> None:
    before = set(Path(tempfile.gettempdir()).glob("ck-bench-unwind-*"))
    model_url, model = start_model()
    try:
        rows = bench_unwind.measure(model_url, runs=3, repeats=1)
    finally:
        model.stop()
    assert [row.contestant for row in rows] == ["cancelkit", "naive"]
    for row in rows:
        assert row.comparison == "3 runs stopped at once: CPU per run until its final event"
        assert row.unit == "us"
        assert row.median > 0  # process CPU time, read at nanosecond resolution
        assert row.baseline == "naive"
    assert rows[1].ratio == 1.0
    after = set(Path(tempfile.gettempdir()).glob("ck-bench-unwind-*"))
    assert after <= before  # its data folders are gone
