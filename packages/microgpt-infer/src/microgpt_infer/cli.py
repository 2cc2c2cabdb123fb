"""Command-line entry points: `generate` (sample text, streamed), `push-to-hub` and `export-hf`
(`inspect` is `inspect_command.py`'s).

    generate "Once upon a time"                  # the shipped model (stderr says so)
    generate "Once upon a time" --model runs/quickstart/model --max-new-tokens 100 --seed 1
    generate "Once upon a time" --num-samples 3 --temperature 0.8     # samples with seeds S, S+1, S+2
    generate --chat "What is a list?" --system "Answer in one sentence." --model runs/chat/model
    echo "Once upon a time" | generate --temperature 0.8 --top-k 50
    push-to-hub runs/quickstart/model my-name/my-model --private
    export-hf runs/quickstart/model hf/quickstart          # Hugging Face's layout, for transformers

Bad input prints one `error: ...` line on stderr and exits 2 (a traceback only with --debug), and
nothing reaches stdout before the generation has started: every argument is checked first, and the
prompt is echoed with the first piece of the continuation. Ctrl-C (or SIGTERM) ends every command
within a moment in any phase (loading, compiling, decoding, writing): the line being written is
ended, `interrupted` goes to stderr, and the status is 130 (143); see `microgpt_data.signals`. The
parser and the error line are `microgpt_data.commands`', shared by every microGPT command.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence

from microgpt_data.commands import Parser, fail, interrupted, notes_on_stderr
from microgpt_data.signals import Interrupts

__all__ = ["MODEL_NAMES", "StdinError", "export_main", "main", "push_main", "read_stdin"]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader has gone
SAMPLE_SEPARATOR = "---\n"  # the line between the samples of --num-samples
MODEL_NAMES = (
    "default (the model microgpt-infer ships), a model folder (ours, or GPT-2 or Llama in Hugging "
    "Face's layout), a run folder (runs/NAME) or a Hugging Face Hub repo id (org/name)"
)


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


def _fraction(text: str) -> float:
    value = _parse(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _penalty(text: str) -> float:
    value = _parse(text, float)
    if not -2 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be in [-2, 2], got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _parse(text, float)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _seed(text: str) -> int:
    from microgpt_infer.generation import SEED_RANGE  # imports JAX, which generating needs anyway

    value = _parse(text, int)
    lo, hi = SEED_RANGE
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {text}")
    return value


def _generate_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="generate",
        description="Sample a continuation of a prompt from a microGPT model (or a GPT-2 checkpoint), "
        "streaming it to stdout as it is generated.",
        epilog="The model defaults to $MICROGPT_MODEL, else the model microgpt-infer ships (default; "
        "trained on Python's documentation), and stderr says which; a training run's model is used "
        "when named (--model runs/NAME/model). Seeds: without --seed each run draws a new one and says "
        "it on stderr; the same seed, prompt, model and settings give the same text, and sample i of "
        "--num-samples N uses seed + i (so --seed S+i alone gives that sample again). Ctrl-C stops it "
        "at once in any phase (exit status 130).",
    )
    p.add_argument("prompt", nargs="?", help="the prompt text (default: read stdin, UTF-8)")
    p.add_argument("--model", help=f"{MODEL_NAMES} (default: $MICROGPT_MODEL, else default)")
    p.add_argument("--revision", help="Hub branch, tag or commit (Hub repo ids only)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=50, help="tokens to generate at most")
    p.add_argument(
        "--temperature", type=_nonnegative_float, default=1.0, help="sampling temperature; 0 is greedy"
    )
    p.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k most likely tokens")
    p.add_argument(
        "--top-p", type=_probability, default=None, help="nucleus sampling: smallest set of mass >= p"
    )
    p.add_argument(
        "--min-p",
        type=_fraction,
        default=None,
        help="min-p sampling: only tokens at least MIN_P times as likely as the most likely (0 to 1)",
    )
    p.add_argument(
        "--presence-penalty",
        type=_penalty,
        default=0.0,
        help="lower the logit of every token already generated by this much (-2 to 2; default 0)",
    )
    p.add_argument(
        "--frequency-penalty",
        type=_penalty,
        default=0.0,
        help="lower each token's logit by this much per time it was generated (-2 to 2; default 0)",
    )
    p.add_argument(
        "--repetition-penalty", type=_positive_float, default=1.0,
        help="divide the positive logits (multiply the negative ones) of tokens of the prompt or already "
        "generated by this (> 0; default 1, none; 1.1 to 1.3 discourage repeats)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=_seed, default=None,
        help="random seed, an integer in [0, 2**32 - 1] (default: a new one each run, said on stderr); "
        "the same seed, prompt, model and settings give the same text; sample i of --num-samples uses "
        "seed + i",
    )  # fmt: skip
    p.add_argument(
        "--num-samples", type=_positive_int, default=1, metavar="N",
        help="samples of the prompt to generate, one after another, separated by a line "
        f"{SAMPLE_SEPARATOR.strip()}",
    )  # fmt: skip
    p.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop before TEXT (repeatable)"
    )
    p.add_argument(
        "--crop-prompt", action="store_true", help="keep the end of a prompt too long for the context"
    )
    p.add_argument(
        "--no-prompt-echo", action="store_true", help="print only the continuation, not the prompt"
    )
    p.add_argument(
        "--chat", action="store_true",
        help="the prompt is a user's message: print the assistant's reply, the conversation written by "
        "the model's chat template (a chat model's own, else a plain 'User: ... Assistant:' one); "
        'needs jinja2 (pip install "microgpt-infer[serve]")',
    )  # fmt: skip
    p.add_argument("--system", metavar="TEXT", help="with --chat: a system message before the user's")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    return p


class StdinError(ValueError):
    """The text on stdin cannot be read (not UTF-8, or none given)."""


def read_stdin() -> str:
    """The whole of stdin as UTF-8 text; `StdinError` naming the offset of the first bad byte."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (io.StringIO): already text
        return sys.stdin.read()
    data = stream.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StdinError(
            f"stdin is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} ({e.reason}); "
            "convert it first (e.g. iconv -t UTF-8)"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """`generate`: prompt argument or stdin; streams tokens as they are generated."""
    # Ctrl-C: "interrupted", exit 130, within a moment, in any phase; the library's notes on stderr
    with Interrupts() as interrupts, notes_on_stderr("microgpt_infer"):
        return _generate(_generate_parser().parse_args(argv), interrupts)


def _generate(args: argparse.Namespace, interrupts: Interrupts) -> int:
    started: list[bool] = []  # anything written to stdout yet?

    def end_the_line() -> None:  # on Ctrl-C, the continuation's line is ended
        if started:
            sys.stdout.write("\n")

    interrupts.on_stop(end_the_line)
    try:
        if args.prompt is not None:
            prompt = args.prompt
        elif sys.stdin is None or sys.stdin.isatty():
            raise StdinError("give a prompt argument or pipe text to stdin (see generate --help)")
        else:
            prompt = read_stdin()
        if args.system is not None and not args.chat:
            raise ValueError("--system is a chat's system message: give --chat too")
        seed = _first_seed(args.seed, args.num_samples)
        import jax

        from microgpt_infer.generation import generate, generate_chat
        from microgpt_infer.model import default_model_note, find_default_model, load_model

        source = args.model or find_default_model()
        if not args.model:
            print(f"generate: {default_model_note(source)}", file=sys.stderr, flush=True)
        model = load_model(source, args.revision)
        if args.seed is None and args.temperature > 0:
            print(f"generate: seed {seed} (--seed {seed} gives this text again)", file=sys.stderr, flush=True)

        def write(text: str) -> None:
            with interrupts.critical():  # a stop ends the line after a whole piece
                sys.stdout.write(text)
                sys.stdout.flush()
                started.append(True)

        if args.chat:  # the reply alone: the rendered conversation is the template's, not the user's
            system = [] if args.system is None else [{"role": "system", "content": args.system}]
            messages = [*system, {"role": "user", "content": prompt}]
            run = lambda **options: generate_chat(model, messages, **options)  # noqa: E731
        else:
            run = lambda **options: generate(model, prompt, **options)  # noqa: E731
        for sample in range(args.num_samples):
            if sample:
                write(SAMPLE_SEPARATOR)
            echo = [] if args.no_prompt_echo or args.chat else [prompt]  # written with the first piece
            piece = lambda text, echo=echo: write((echo.pop() if echo else "") + text)  # noqa: E731
            run(
                rng=jax.random.key(seed + sample), max_new_tokens=args.max_new_tokens,
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                repetition_penalty=args.repetition_penalty, stop=args.stop,
                on_token=lambda row, text, piece=piece: piece(text), crop_prompt=args.crop_prompt,
            )  # fmt: skip
            piece("\n")
    except KeyboardInterrupt:  # without the handlers (not the main thread): Python's own Ctrl-C
        if started:  # end the line the continuation was on
            sys.stdout.write("\n")
            sys.stdout.flush()
        return interrupted()
    except BrokenPipeError:  # `generate ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return EXIT_BROKEN_PIPE
    except (ValueError, OSError) as err:  # ours, core's and data's errors are ValueErrors
        return fail(err, args.debug)
    return 0


def _first_seed(seed: int | None, num_samples: int) -> int:
    """The seed of sample 0: `seed`, or a new one when None. Sample i uses seed + i, so the last one
    must be a seed too."""
    from microgpt_infer.generation import SEED_RANGE

    last = SEED_RANGE[1] - num_samples + 1  # the largest first seed
    if seed is None:
        return secrets.randbelow(last + 1)
    if seed > last:
        raise ValueError(
            f"--seed {seed} with --num-samples {num_samples}: sample i uses seed + i, which must stay "
            f"<= {SEED_RANGE[1]}; use a smaller --seed"
        )
    return seed


def push_main(argv: Sequence[str] | None = None) -> int:
    """`push-to-hub MODEL_DIR REPO_ID`: uploads a model folder to the Hugging Face Hub."""
    p = Parser(
        prog="push-to-hub",
        description="Upload a model folder (weights, config, tokenizer files, model card) to the Hugging "
        "Face Hub as one commit. The token comes from $HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("model_dir", help=MODEL_NAMES)
    p.add_argument("repo_id", help="the Hub repository, org/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="branch to commit to (default main)")
    p.add_argument("--commit-message", default="Upload microGPT model", help="the commit's summary")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    with Interrupts(), notes_on_stderr("microgpt_infer"):  # Ctrl-C: exit 130 (a Hub commit is whole)
        return _push(p.parse_args(argv))


def _push(args: argparse.Namespace) -> int:
    try:
        from microgpt_infer.hub import push_to_hub

        url = push_to_hub(
            args.model_dir, args.repo_id, private=args.private, revision=args.revision,
            commit_message=args.commit_message,
        )  # fmt: skip
    except KeyboardInterrupt:  # Python's own Ctrl-C (outside the main thread)
        return interrupted()
    except (ValueError, OSError) as err:
        return fail(err, args.debug)
    print(url)
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """`export-hf MODEL_DIR OUT_DIR`: writes a model in Hugging Face's GPT-2 or Llama layout."""
    p = Parser(
        prog="export-hf",
        description="Write a microGPT model in Hugging Face's own layout (config.json, model.safetensors, "
        "tokenizer.json, tokenizer_config.json, a model card), which transformers' from_pretrained "
        "loads: GPT-2's for GPT-2-style models, Llama's for Llama-style ones.",
        epilog="The folder is written whole or not at all; an existing non-empty OUT_DIR is replaced only "
        "with --force. Upload it with push-to-hub.",
    )
    p.add_argument("model_dir", help=MODEL_NAMES)
    p.add_argument("out_dir", help="the folder to write (created if missing)")
    p.add_argument(
        "--layout", metavar="gpt2|llama", help="the layout to write (default: the one the model fits)"
    )
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists and is not empty")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    # Ctrl-C: "interrupted", exit 130, the staged folder removed and OUT_DIR untouched
    with Interrupts(), notes_on_stderr("microgpt_infer"):
        return _export(p.parse_args(argv))


def _export(args: argparse.Namespace) -> int:
    try:
        from microgpt_infer.export_hf import export_hf

        out = export_hf(args.model_dir, args.out_dir, layout=args.layout, force=args.force)
    except KeyboardInterrupt:  # Python's own Ctrl-C (outside the main thread)
        return interrupted()
    except (ValueError, OSError) as err:
        return fail(err, args.debug)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
