"""The ``cancelkit`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import anyio

from ._demo import render, run_demo

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cancelkit`` command."""
    parser = argparse.ArgumentParser(prog="cancelkit", description="Stop means stop.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="watch one Stop reach every layer of a run")
    demo.add_argument("--deadline", type=float, default=1.5, help="seconds before Stop")
    demo.add_argument("--rate", type=float, default=40.0, help="LLM stream tokens/second")
    demo.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)

    if args.deadline <= 0 or args.rate <= 0:
        parser.error("--deadline and --rate must be positive")
    print(f"cancelkit demo on {args.backend}")
    report = anyio.run(lambda: run_demo(args.deadline, args.rate), backend=args.backend)
    print(render(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
