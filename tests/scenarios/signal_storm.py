"""Runs cancelled from a signal handler while the loop itself starts and stops runs.

Usage: ``python -m tests.scenarios.signal_storm asyncio|trio``. A timer signal
fires every 0.2 ms; its handler cancels the newest run (kind ``shutdown``) through
``Runs.cancel``, as a service's SIGTERM handler does. Meanwhile the loop starts
runs, cancels some itself, and checks that every run's answer to ``cancel()``
agrees with how it ended. Prints ``OK <runs> <cancelled by the handler>``; a
deadlock shows as the process never printing.
"""

from __future__ import annotations

import signal
import sys

import anyio
import anyio.lowlevel

from cancelkit import CancelReason, Runs

RUNS = 2000
SHUTDOWN = CancelReason("shutdown", "signal")
USER = CancelReason("user", "Stop")


async def main() -> None:
    runs = Runs(history=10)
    newest: list[str] = []
    answers: dict[str, bool] = {}
    by_handler: list[str] = []

    def handler(_signum: int, _frame: object) -> None:
        if newest:
            run_id = newest[-1]
            if runs.cancel(run_id, SHUTDOWN):
                answers[run_id] = True
                by_handler.append(run_id)

    async def work(steps: int) -> int:
        for _ in range(steps):
            await anyio.lowlevel.checkpoint()
        return steps

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        for index in range(RUNS):
            run = runs.start(work, index % 7, run_id=f"r{index}")
            newest.append(run.id)
            if index % 3 == 0 and run.cancel(USER):
                answers[run.id] = True
            outcome = await run.wait()
            cancelled = answers.get(run.id, False)
            assert (outcome.status == "cancelled") == cancelled, (index, outcome, cancelled)
            assert outcome.status in ("completed", "cancelled"), outcome
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert by_handler, "the handler never cancelled a run: the storm missed"
    print("OK", RUNS, len(by_handler), flush=True)


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1])
