"""Shared plumbing for the benchmarks: interleaved repeats, a table, a JSON file.

Contestants of one comparison run in turn within each repeat (a, b, c, a, b, c, ...)
so that drift in machine load spreads over all of them; the median is reported.
"""

from __future__ import annotations

import gc
import json
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

RESULTS = Path(__file__).parent / "results"


@dataclass
class Row:
    """One measured contestant of one comparison."""

    comparison: str
    contestant: str
    unit: str
    median: float
    best: float
    baseline: str | None = None
    ratio: float | None = None
    target: str | None = None
    samples: list[float] = field(default_factory=list)


def measure(
    comparison: str,
    contestants: dict[str, Callable[[], float]],
    *,
    unit: str,
    repeats: int,
    baseline: str | None = None,
    target: str | None = None,
) -> list[Row]:
    """Run each contestant ``repeats`` times, interleaved; each call returns its number."""
    samples: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(repeats):
        for name, run in contestants.items():
            gc.collect()
            samples[name].append(run())
    rows = [
        Row(comparison, name, unit, statistics.median(values), min(values), samples=values)
        for name, values in samples.items()
    ]
    if baseline is not None:
        base = next(row.median for row in rows if row.contestant == baseline)
        for row in rows:
            row.baseline = baseline
            row.ratio = row.median / base if base else None
            row.target = target if row.contestant.startswith("cancelkit") else None
    return rows


def against(rows: list[Row], baseline: str, *, target: str | None = None) -> list[Row]:
    """The cancelkit rows of one comparison again, as ratios to another peer of it.

    For a comparison with two fair peers (psycopg with and without a pipeline, say):
    the table then shows the ratio to each, from the same samples.
    """
    base = next(row.median for row in rows if row.contestant == baseline)
    return [
        Row(
            f"{row.comparison}, vs {baseline}",
            row.contestant,
            row.unit,
            row.median,
            row.best,
            baseline=baseline,
            ratio=row.median / base if base else None,
            target=target,
            samples=row.samples,
        )
        for row in rows
        if row.contestant.startswith("cancelkit")
    ]


def report(name: str, rows: list[Row]) -> Path:
    """Print the table and write ``bench/results/<name>.json``."""
    header = (
        f"{'comparison':<44} {'contestant':<28} {'median':>12} {'best':>12} {'ratio':>7}  target"
    )
    print(header)
    print("-" * len(header))
    last = None
    for row in rows:
        label = row.comparison if row.comparison != last else ""
        last = row.comparison
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        print(
            f"{label:<44} {row.contestant:<28} {row.median:>9.3f} {row.unit:<2} "
            f"{row.best:>9.3f} {row.unit:<2} {ratio:>7}  {row.target or ''}"
        )
    path = save(name, rows)
    print(f"\nwritten: {path}")
    return path


def save(name: str, rows: list[Row]) -> Path:
    """Write ``bench/results/<name>.json`` (for a bench that prints its own tables)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    machine = {"python": sys.version.split()[0], "platform": platform.platform()}
    path.write_text(json.dumps({"machine": machine, "rows": [asdict(r) for r in rows]}, indent=2))
    return path
