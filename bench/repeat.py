"""Run one bench several times and report the median of its runs, row by row.

Run: ``python bench/repeat.py bench_runs [--times 3] [-- args for the bench]``.

Each bench interleaves its contestants and reports medians within one run; between
runs on a shared machine the whole table moves. The README's figures are the median
over whole runs of each row's median and ratio, as this prints them, with the
machine's load average at the start and the end, so that a figure can be reproduced
and its conditions read.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from _harness import RESULTS, Row, report
from cancelkit._lifetime import tied_to_this_process

HERE = Path(__file__).parent


def run_once(bench: str, args: list[str]) -> list[Row]:
    """Run ``bench`` (``bench_runs``) once; the rows it wrote."""
    subprocess.run(
        [sys.executable, str(HERE / f"{bench}.py"), *args],
        check=True,
        preexec_fn=tied_to_this_process(signal.SIGTERM),  # it ends with this one
    )
    name = bench.removeprefix("bench_")
    data = json.loads((RESULTS / f"{name}.json").read_text())
    return [Row(**row) for row in data["rows"]]


def median_rows(runs: list[list[Row]]) -> list[Row]:
    """One row per (comparison, contestant): the median of the runs' medians and ratios."""
    merged: dict[tuple[str, str], list[Row]] = {}
    for rows in runs:
        for row in rows:
            merged.setdefault((row.comparison, row.contestant), []).append(row)
    out = []
    for seen in merged.values():
        first = seen[0]
        ratios = [row.ratio for row in seen if row.ratio is not None]
        out.append(
            Row(
                first.comparison,
                first.contestant,
                first.unit,
                statistics.median(row.median for row in seen),
                min(row.best for row in seen),
                baseline=first.baseline,
                ratio=statistics.median(ratios) if ratios else None,
                target=first.target,
                samples=[row.median for row in seen],
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("bench", help="the bench's module name, e.g. bench_runs")
    parser.add_argument("--times", type=int, default=3)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    options = parser.parse_args(argv[:split])
    args = argv[split + 1 :]
    load_before = os.getloadavg()
    runs = [run_once(options.bench, args) for _ in range(options.times)]
    load_after = os.getloadavg()
    print(f"\nmedian of {options.times} runs of {options.bench} {' '.join(args)}")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}\n")
    report(f"{options.bench.removeprefix('bench_')}-median", median_rows(runs))


if __name__ == "__main__":
    main()
