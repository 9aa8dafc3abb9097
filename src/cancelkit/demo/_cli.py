"""The ``cancelkit`` command line: ``demo`` (web or ``--terminal``), ``serve``, ``model``.

Options are checked here, before anything starts: a bad one is a usage error
(exit status 2) naming what to change. The web demo and the local model server
need the ``web`` extra, imported only when asked for. ``--workers N`` serves the
demo from N processes sharing their runs through Redis (``--redis URL``, else a
private ``redis-server``; see ``_workers.py``); its limits are per worker.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

import anyio

from ._terminal import render, run_demo

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


MAX_WORKERS = 64

# The flags of ``Limits`` (see ``_state.py``): flag, type, default, help.
_LIMIT_FLAGS: tuple[tuple[str, type[int] | type[float], float, str], ...] = (
    ("--max-runs-per-session", int, 3, "active runs per browser session, per worker (then 429)"),
    ("--max-runs", int, 50, "active runs in total, per worker (then 429)"),
    ("--max-run-seconds", float, 300.0, "a run still going after this long ends with kind timeout"),
    ("--max-body-bytes", int, 64 * 1024, "largest request body (then 413)"),
    ("--session-max-age", int, 24 * 3600, "seconds a session cookie is honoured"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cancelkit`` command."""
    parser = argparse.ArgumentParser(prog="cancelkit", description="Stop means stop.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the web demo: Stop from a browser reaches every layer")
    serve = commands.add_parser("serve", help="the demo app alone, on a given model endpoint")
    for sub in (demo, serve):
        sub.add_argument("--host", default="127.0.0.1", help="address to bind")
        sub.add_argument("--port", type=int, default=8000, help="port to listen on")
        sub.add_argument(
            "--provider",
            choices=["local", "anthropic", "openai"],
            default="local",
            help="the model API (anthropic/openai read *_API_KEY from the environment)",
        )
        sub.add_argument("--model", default=None, help="the model name for a real provider")
        sub.add_argument("--base-url", default=None, help="the model API's base URL")
        sub.add_argument("--data", default=".cancelkit-demo", help="folder for the SQLite file")
        sub.add_argument("--grace", type=float, default=5.0, help="shutdown grace, seconds")
        sub.add_argument(
            "--secret",
            default=None,
            help="signs session cookies, at least 32 bytes (default: CANCELKIT_SECRET, "
            "else random per process); prefer the variable, a command line is visible to ps",
        )
        for flag, kind, default, text in _LIMIT_FLAGS:
            sub.add_argument(flag, type=_positive(kind), default=default, help=text)
        sub.add_argument(
            "--workers",
            type=_positive(int),
            default=1,
            help=f"processes serving the port (at most {MAX_WORKERS}); with more than one,"
            " a request may land on any and they share runs through Redis. The limits"
            " above are per worker",
        )
        sub.add_argument(
            "--redis",
            default=None,
            metavar="URL",
            help="the Redis the workers share runs through (redis://host:port/0,"
            " unix:///path/redis.sock); without it, --workers > 1 starts a private"
            " redis-server",
        )
    demo.add_argument(
        "--model-restarts",
        type=_non_negative_int,
        default=3,
        help="times the local model process is restarted if it dies",
    )
    demo.add_argument("--model-rate", type=float, default=40.0, help="local model tokens/second")
    demo.add_argument("--terminal", action="store_true", help="the terminal demonstration instead")
    demo.add_argument("--deadline", type=float, default=1.5, help="(terminal) seconds before Stop")
    demo.add_argument("--rate", type=float, default=40.0, help="(terminal) stream tokens/second")
    demo.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    model = commands.add_parser("model", help="serve the local model (Anthropic and OpenAI APIs)")
    model.add_argument("--host", default="127.0.0.1", help="address to bind")
    model.add_argument("--port", type=int, default=8765, help="port to listen on")
    model.add_argument("--rate", type=float, default=50.0, help="tokens per second")
    model.add_argument("--chunk-tokens", type=int, default=1, help="tokens per streamed chunk")
    model.add_argument(
        "--first-token-latency", type=float, default=0.05, help="seconds before the first token"
    )
    model.add_argument("--exit-with-parent", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.command == "model":
        return _serve_model(parser, args)
    if args.command == "serve" or not args.terminal:
        return _serve_web(parser, args)
    if args.deadline <= 0 or args.rate <= 0:
        parser.error("--deadline and --rate must be positive")
    print(f"cancelkit demo on {args.backend}")
    report = anyio.run(lambda: run_demo(args.deadline, args.rate), backend=args.backend)
    print(render(report))
    return 0


def _serve_web(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    try:
        from ._serve import DemoConfigError, DemoOptions, serve_demo  # noqa: PLC0415 - web extra
        from ._state import Limits  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the installation
        parser.error(f"the demo needs: pip install 'cancelkit[all]' ({exc})")
    rate = getattr(args, "model_rate", 40.0)
    if rate <= 0 or args.grace < 0:
        parser.error("--model-rate must be positive and --grace not negative")
    if args.workers > MAX_WORKERS:
        parser.error(f"--workers is at most {MAX_WORKERS}, not {args.workers}")
    local = args.command == "demo" and args.provider == "local" and args.base_url is None
    if args.command == "serve" and args.provider == "local" and args.base_url is None:
        parser.error("serve needs --base-url of a model server (cancelkit model) or a provider")
    options = DemoOptions(
        host=args.host,
        port=args.port,
        model_rate=rate,
        provider=args.provider,
        model=args.model,
        base_url=args.base_url,
        data=Path(args.data),
        grace=args.grace,
        secret=args.secret,
        limits=Limits(
            runs_per_session=args.max_runs_per_session,
            runs=args.max_runs,
            run_seconds=args.max_run_seconds,
            body_bytes=args.max_body_bytes,
            session_max_age=args.session_max_age,
        ),
        model_restarts=getattr(args, "model_restarts", 0),
        workers=args.workers,
        redis=args.redis,
    )
    try:
        return serve_demo(options, with_local_model=local)
    except DemoConfigError as exc:  # raised before anything started
        parser.error(str(exc))


def _serve_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        from ..llm.local import LocalModelConfig, serve  # noqa: PLC0415 - needs the web extra
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
    if args.exit_with_parent is not None:  # started by the demo: never outlive it
        from ..llm.local._server import exit_with_parent  # noqa: PLC0415

        exit_with_parent(args.exit_with_parent)
    print(f"cancelkit local model on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    serve(config, args.host, args.port)
    return 0


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse type: ``kind`` (int or float), and greater than zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive and finite, not {text}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
