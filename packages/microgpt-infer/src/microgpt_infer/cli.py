"""Command-line entry points: `generate` (sample text, streamed) and `push-to-hub`.

    generate "Once upon a time" --model runs/quickstart/model --max-new-tokens 100 --seed 1
    echo "Once upon a time" | generate --temperature 0.8 --top-k 50
    push-to-hub runs/quickstart/model my-name/my-model --private

Bad input prints `error: ...` on stderr and exits 2 (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "push_main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors read `error: ...` like every other error of these commands."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def _parse(text: str, cast: type) -> int | float:
    """`cast(text)`, or the argparse error that names what was expected."""
    try:
        return cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _parse(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _parse(text, float)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = _parse(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _generate_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="generate",
        description="Sample a continuation of a prompt from a microGPT model (or a GPT-2 checkpoint), "
        "streaming it to stdout as it is generated.",
        epilog="The model defaults to $MICROGPT_MODEL, else the newest runs/*/model under the current "
        "folder.",
    )
    p.add_argument("prompt", nargs="?", help="the prompt text (default: read stdin)")
    p.add_argument("--model", help="a model folder or a Hugging Face Hub repo id (org/name)")
    p.add_argument("--revision", help="Hub branch, tag or commit (Hub repo ids only)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=50, help="tokens to generate at most (50)")
    p.add_argument(
        "--temperature", type=_nonnegative_float, default=1.0, help="sampling temperature; 0 is greedy (1.0)"
    )
    p.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k most likely tokens")
    p.add_argument(
        "--top-p", type=_probability, default=None, help="nucleus sampling: smallest set of mass >= p"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop before TEXT (repeatable)"
    )
    p.add_argument(
        "--crop-prompt", action="store_true", help="keep the end of a prompt too long for the context"
    )
    p.add_argument(
        "--no-prompt-echo", action="store_true", help="print only the continuation, not the prompt"
    )
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    return p


def _fail(err: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(err)
    print(f"error: {err}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """`generate`: prompt argument or stdin; streams tokens as they are generated."""
    args = _generate_parser().parse_args(argv)
    prompt = args.prompt
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            print(
                "error: give a prompt argument or pipe text to stdin (see generate --help)", file=sys.stderr
            )
            return 2
        prompt = sys.stdin.read()
    try:
        import jax

        from microgpt_infer.errors import InferError
        from microgpt_infer.generation import generate
        from microgpt_infer.model import find_default_model, load_model

        model = load_model(args.model or find_default_model(), args.revision)
        if not args.no_prompt_echo:
            sys.stdout.write(prompt)
            sys.stdout.flush()

        def on_token(row: int, text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        generate(
            model, prompt, rng=jax.random.key(args.seed), max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, stop=args.stop,
            on_token=on_token, crop_prompt=args.crop_prompt,
        )  # fmt: skip
        sys.stdout.write("\n")
        sys.stdout.flush()
    except (InferError, ValueError, OSError) as err:  # ours, core's and data's errors are ValueErrors
        return _fail(err, args.debug)
    except KeyboardInterrupt:
        return 130
    return 0


def push_main(argv: Sequence[str] | None = None) -> int:
    """`push-to-hub MODEL_DIR REPO_ID`: uploads a model folder to the Hugging Face Hub."""
    p = _Parser(
        prog="push-to-hub",
        description="Upload a model folder (weights, config, tokenizer files, model card) to the Hugging "
        "Face Hub as one commit. The token comes from $HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("model_dir", help="a model folder, e.g. runs/quickstart/model")
    p.add_argument("repo_id", help="the Hub repository, org/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="branch to commit to (default main)")
    p.add_argument("--commit-message", default="Upload microGPT model", help="the commit's summary")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    args = p.parse_args(argv)
    try:
        from microgpt_infer.hub import push_to_hub

        url = push_to_hub(
            args.model_dir, args.repo_id, private=args.private, revision=args.revision,
            commit_message=args.commit_message,
        )  # fmt: skip
    except (ValueError, OSError) as err:
        return _fail(err, args.debug)
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
