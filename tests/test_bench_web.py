"""bench/bench_web.py at a tiny size, so that it cannot rot.

It asserts what the bench relies on and reports (every session ran, every Stop was
answered with the run's final event and its tokens counted by the model server, the
closed tabs were noticed, nothing was left behind), never a timing: the machine may
be busy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))

import bench_web  # found through the path above

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("peer", ["cancelkit", "naive"])
def test_the_web_bench_drives_a_peer_and_counts(peer: str) -> None:
    results, stop_rows = bench_web.run([6], 1, 3, [peer], tokens=40, stop_requests=20)
    [load] = results["6 sessions"][peer]
    [together] = results["3 concurrent Stops"][peer]
    [cold] = results["3 concurrent Stops, new connections"][peer]
    assert all(s.warm for s in load.sessions + together.sessions)
    assert not any(s.warm for s in cold.sessions)
    for measured in (load, together, cold):
        assert [s.error for s in measured.sessions] == [None] * len(measured.sessions)
        for session in measured.sessions:
            if session.kind == "stop":
                assert session.final is not None
                assert session.final["status"] == "cancelled"
            if session.kind in ("stop", "disconnect"):
                assert session.tokens_after is not None  # the model server's count
        metrics = measured.metrics()
        assert metrics["client Stop p50 (ms)"] is not None
        assert metrics["CPU per streamed token (us)"] is not None
        assert metrics["tokens streamed to clients"]
        assert metrics["left: active runs"] == 0
    if peer == "cancelkit":  # what only cancelkit can say, and promises
        metrics = load.metrics()
        assert metrics["service Stop p50 (ms)"] is not None
        assert metrics["Stop reached the service p50 (ms)"] is not None
        assert metrics["partial writes"] == 0
        assert metrics["left: abandoned threads"] == 0
        assert load.outcomes["disconnect"] == {"cancelled": 2}  # closed tabs stop their runs
        assert load.outcomes["complete"] == {"committed": 2}
        # Each Stop closed its model stream. How many tokens came after the Stop's
        # moment is the bench's measure, a timing: a busy machine makes it larger.
        assert all("disconnected" in s.model_outcomes for s in together.sessions)
    else:
        assert load.outcomes["complete"] == {"completed": 2}
    [stop_row] = stop_rows  # one Stop request: the service's CPU for it, measured
    assert (stop_row.contestant, stop_row.unit) == (peer, "us")
    assert stop_row.comparison == "one Stop request: service CPU (us)"
    assert stop_row.median >= 0  # CPU time is read in clock ticks: 20 requests may be 0
