"""The ``train-tokenizer`` command: train a byte-level BPE tokenizer on any text source and save it.

    train-tokenizer --data pydocs --vocab-size 8192 --out runs/tokenizer

writes ``tokenizer.tiktoken`` and ``tokenizer_config.json`` into ``--out`` (see `Tokenizer.save`).
A corpus too small for ``--vocab-size`` (it runs out of pairs to merge) still saves the smaller
tokenizer, with a warning on stderr giving the size reached and the size asked. Bad input prints one
``error: ...`` line to stderr and exits 2 (``--debug`` adds the traceback). The parser, help text and
error form are `microgpt_data.commands`', shared by every microGPT command.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator, Sequence

from microgpt_data import signals
from microgpt_data.commands import Parser, add_bool_flag, fail, interrupted

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from microgpt_data.tokenizer import ENDOFTEXT, GPT2_PATTERN

    parser = Parser(
        prog="train-tokenizer",
        description="Train a byte-level BPE tokenizer (Hugging Face tokenizers); save it as tiktoken files.",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="'pydocs' (built in, offline), a Hub dataset id 'org/name[:config]', or a path to a "
        ".txt/.jsonl/.json/.parquet file or a folder of them",
    )
    parser.add_argument(
        "--vocab-size", type=int, required=True, help="vocabulary size, special tokens included"
    )
    parser.add_argument(
        "--out", required=True, help="folder to write tokenizer.tiktoken and tokenizer_config.json"
    )
    parser.add_argument(
        "--split", default="train", choices=("train", "validation"), help="which split to read"
    )
    parser.add_argument(
        "--text-column", default="text", help="the column holding the text (JSON, Parquet, Hub)"
    )
    parser.add_argument(
        "--max-documents",
        type=int,
        default=None,
        help="stop reading after this many documents (default: all)",
    )
    parser.add_argument(
        "--special-token",
        action="append",
        default=None,
        help=f"a special token, a non-empty string (repeatable); the first ends documents "
        f"(default: {ENDOFTEXT})",
    )
    parser.add_argument("--pattern", default=GPT2_PATTERN, help="the split regex applied before BPE")
    parser.add_argument("--min-frequency", type=int, default=2, help="a pair must occur this often to merge")
    add_bool_flag(parser, "progress", dest="progress", default=True, help="show the progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _texts(dataset, limit: int | None, progress: bool) -> Iterator[str]:
    from tqdm import tqdm

    rows = dataset if limit is None else itertools.islice(dataset, limit)
    with tqdm(total=limit, unit="doc", desc="reading", disable=not progress, file=sys.stderr) as bar:
        chars = 0
        for row in rows:
            chars += len(row["text"])
            bar.update(1)
            if bar.n % 64 == 0:
                bar.set_postfix_str(f"{chars / 1e6:.1f}M chars", refresh=False)
            yield row["text"]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns 0 on success, 2 on bad input (with ``error: ...`` on stderr), 130 on
    Ctrl-C (at once, whatever it is doing; a tokenizer being saved is saved whole first)."""
    with signals.Interrupts():
        return _train_tokenizer(build_parser().parse_args(argv))


def _train_tokenizer(args: argparse.Namespace) -> int:
    from microgpt_data.errors import DataError
    from microgpt_data.tokenizer import ENDOFTEXT

    try:
        if args.max_documents is not None and args.max_documents < 1:
            raise DataError(f"--max-documents must be >= 1, got {args.max_documents}")
        if args.min_frequency < 1:
            raise DataError(f"--min-frequency must be >= 1, got {args.min_frequency}")
        from microgpt_data.bpe import check_arguments, train_bpe
        from microgpt_data.sources import load_text_dataset

        special_tokens = args.special_token or [ENDOFTEXT]
        # Fail before reading any data; the messages name the flags.
        check_arguments(
            args.vocab_size,
            special_tokens,
            None,
            names=("--vocab-size", "--special-token", "--special-token"),
        )

        start = time.perf_counter()
        dataset = load_text_dataset(args.data, args.split, text_column=args.text_column)
        tokenizer = train_bpe(
            _texts(dataset, args.max_documents, args.progress),
            args.vocab_size,
            pattern=args.pattern,
            special_tokens=special_tokens,
            min_frequency=args.min_frequency,
            show_progress=args.progress,
        )
        with signals.critical():
            out = tokenizer.save(args.out)
    except KeyboardInterrupt:  # Python's own Ctrl-C (outside the main thread)
        return interrupted()
    except (DataError, ValueError, OSError) as exc:  # ValueError: e.g. a malformed data file
        return fail(exc, args.debug)
    seconds = time.perf_counter() - start
    if tokenizer.vocab_size < args.vocab_size:
        print(
            f"warning: the tokenizer reached {tokenizer.vocab_size} tokens, fewer than the "
            f"--vocab-size {args.vocab_size} asked: {args.data} has no more pairs occurring "
            f"--min-frequency {args.min_frequency} times to merge. Saved the {tokenizer.vocab_size}-token "
            "tokenizer; train on more text for a larger one",
            file=sys.stderr,
        )
    print(
        f"saved {tokenizer.vocab_size}-token tokenizer (eot id {tokenizer.eot_id}) to {out} "
        f"in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
