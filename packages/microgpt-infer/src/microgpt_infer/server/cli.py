"""The `serve` command: an OpenAI-compatible HTTP server over one model (server/app.py).

    serve                                       # the shipped model on http://127.0.0.1:8000
    serve --model runs/quickstart/model --port 8080 --slots 16
    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
        -d '{"prompt": "Once upon a time", "max_tokens": 32}'

Loading and compiling are interruptible (Ctrl-C: exit 130); then uvicorn serves until SIGINT or
SIGTERM: it stops accepting, lets open requests finish for --shutdown-timeout seconds, the engine
stops (`Engine.stop`), and the command exits 0. Bad flags print `error: ...` and exit 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from microgpt_data.commands import Parser, fail, interrupted, notes_on_stderr
from microgpt_data.signals import Interrupts

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be in [1, 65535], got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    from microgpt_infer.cli import MODEL_NAMES

    p = Parser(
        prog="serve",
        description="Serve a microGPT model over HTTP with OpenAI's API (/v1/completions, "
        "/v1/chat/completions, /v1/models), /health, /metrics and a playground page at /.",
        epilog="Requests may set top_k, min_p and repetition_penalty besides OpenAI's fields. Choice i "
        "of a request with seed S draws with seed S + i: the same request gives the same text, "
        "whatever else the server is doing.",
    )
    p.add_argument("--model", default=None, help=f"{MODEL_NAMES} (default: $MICROGPT_MODEL, else default)")
    p.add_argument("--revision", help="Hub branch, tag or commit (Hub repo ids only)")
    p.add_argument("--served-model-name", help="the model's id in the API (default: --model as given)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on")
    p.add_argument("--slots", type=_positive_int, default=8, help="requests decoded together")
    p.add_argument(
        "--max-queue", type=int, default=64, help="requests that may wait for a slot (more: HTTP 503)"
    )
    p.add_argument(
        "--max-tokens-limit", type=_positive_int, default=None,
        help="the most tokens one choice may generate (default: the model's context length)",
    )  # fmt: skip
    p.add_argument("--max-n", type=_positive_int, default=8, help="the most choices (n) one request may ask")
    p.add_argument(
        "--shutdown-timeout", type=float, default=30.0,
        help="seconds open requests may finish in on SIGINT or SIGTERM",
    )  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`serve`: load, compile, then serve until SIGINT or SIGTERM (exit 0)."""
    args = _parser().parse_args(argv)
    if args.max_queue < 0:
        _parser().error(f"argument --max-queue: must be >= 0, got {args.max_queue}")
    with Interrupts(), notes_on_stderr("microgpt_infer"):
        try:
            try:
                import uvicorn

                from microgpt_infer.server.app import create_app
            except ImportError as e:
                raise ImportError(
                    f'serve needs the serve extra: pip install "microgpt-infer[serve]" ({e})'
                ) from e
            from microgpt_infer.model import default_model_note, find_default_model, load_model

            source = args.model or find_default_model()
            if not args.model:
                print(f"serve: {default_model_note(source)}", file=sys.stderr, flush=True)
            model = load_model(source, args.revision)
            print("serve: compiling the engine's programs", file=sys.stderr, flush=True)
            app = create_app(
                model, name=args.served_model_name or args.model or "default", slots=args.slots,
                max_queue=args.max_queue, max_tokens_limit=args.max_tokens_limit, max_n=args.max_n,
                stop_timeout=args.shutdown_timeout,
            )  # fmt: skip
        except KeyboardInterrupt:
            return interrupted()
        except (ValueError, OSError, ImportError) as err:
            return fail(err, args.debug)
    # uvicorn installs its own SIGINT and SIGTERM handlers: a graceful shutdown, then the lifespan's
    # end stops the engine.
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="info",
        timeout_graceful_shutdown=max(1, int(args.shutdown_timeout)),
    )  # fmt: skip
    # After its shutdown uvicorn raises the signal it caught again, for the handler it found: a
    # no-op one here, so a stop by SIGINT or SIGTERM is an orderly exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
