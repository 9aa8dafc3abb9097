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
    model = commands.add_parser("model", help="serve the local model (Anthropic and OpenAI APIs)")
    model.add_argument("--host", default="127.0.0.1", help="address to bind")
    model.add_argument("--port", type=int, default=8765, help="port to listen on")
    model.add_argument("--rate", type=float, default=50.0, help="tokens per second")
    model.add_argument("--chunk-tokens", type=int, default=1, help="tokens per streamed chunk")
    model.add_argument(
        "--first-token-latency", type=float, default=0.05, help="seconds before the first token"
    )
    args = parser.parse_args(argv)

    if args.command == "model":
        return _serve_model(parser, args)
    if args.deadline <= 0 or args.rate <= 0:
        parser.error("--deadline and --rate must be positive")
    print(f"cancelkit demo on {args.backend}")
    report = anyio.run(lambda: run_demo(args.deadline, args.rate), backend=args.backend)
    print(render(report))
    return 0


def _serve_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        from .llm.local import LocalModelConfig, serve  # noqa: PLC0415 - needs the web extra
    except ImportError as exc:  # pragma: no cover - depends on the installation
        parser.error(f"the local model server needs uvicorn: pip install 'cancelkit[web]' ({exc})")
    try:
        config = LocalModelConfig(
            rate=args.rate,
            chunk_tokens=args.chunk_tokens,
            first_token_latency=args.first_token_latency,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(f"cancelkit local model on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    serve(config, args.host, args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
