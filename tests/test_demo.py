"""The terminal demo: every layer stops at the deadline, with its reason."""

from __future__ import annotations

import pytest

from cancelkit.demo._cli import main
from cancelkit.demo._terminal import render, run_demo


@pytest.mark.anyio
async def test_every_layer_stops_with_the_deadline_reason() -> None:
    report = await run_demo(deadline=0.3, rate=50, verbose=False)
    assert report.reason is not None
    assert report.reason.kind == "timeout"
    # The promise is at most one chunk after the Stop: a word whose wait was under
    # way when the deadline fired (in its timer thread) may still arrive before the
    # loop hears of it, and the guarded stream asks for none after that.
    assert report.tokens_after_stop <= 1
    for layer in report.layers:
        assert layer.reason == report.reason, layer.name
        latency = report.stop_latency_ms(layer)
        assert latency is not None
        assert latency >= 0, (layer.name, latency)  # stopped, after the Stop; how fast is
        # for the bench: a timing bound here would fail on a loaded machine
    assert "every layer stopped within" in render(report)


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--terminal", "--deadline", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "sync tool in a worker thread" in out
    assert "timeout" in out


def test_the_command_refuses_a_bad_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--terminal", "--deadline", "-1"])
    assert "must be positive" in capsys.readouterr().err
