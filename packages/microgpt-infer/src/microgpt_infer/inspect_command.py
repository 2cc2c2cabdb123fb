"""The `inspect` command: one self-contained HTML page of what a model does with a text.

    inspect "def add(a, b):" --out inspect.html            # attention, logit lens, losses: one file
    echo "Return the absolute value." | inspect --model runs/quickstart

The page is `microgpt_infer.inspection`'s. Bad input prints one `error: ...` line and exits 2, as
every microGPT command does (`microgpt_data.commands`); Ctrl-C exits 130 and writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from microgpt_data.commands import Parser, fail, interrupted, notes_on_stderr
from microgpt_data.signals import Interrupts
from microgpt_infer.cli import MODEL_NAMES, StdinError, read_stdin

__all__ = ["inspect_main"]


def inspect_main(argv: Sequence[str] | None = None) -> int:
    """`inspect TEXT`: writes one self-contained HTML page of what a model does with the text."""
    p = Parser(
        prog="inspect",
        description="Run a model once on a text and write one self-contained HTML page of what it does: "
        "the attention of every layer and head, the logit lens (each layer's top prediction), the "
        "next-token distribution and loss at each position, residual-stream norms and attention entropy.",
        epilog="The page holds its data, script and style and fetches nothing: it opens offline from "
        "file:// and can be mailed or committed; #layer=L&head=H after its address picks a head. The text "
        "must fit the model's context. The model defaults to $MICROGPT_MODEL, else the model "
        "microgpt-infer ships (default). Ctrl-C stops it at once (exit status 130).",
    )
    p.add_argument("text", nargs="?", help="the text to inspect (default: read stdin, UTF-8)")
    p.add_argument("--model", help=f"{MODEL_NAMES} (default: $MICROGPT_MODEL, else default)")
    p.add_argument("--revision", help="Hub branch, tag or commit (Hub repo ids only)")
    p.add_argument("--out", default="inspect.html", help="the HTML file to write (replaced if it exists)")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    # Ctrl-C: "interrupted", exit 130; the page is written whole (atomically) or not at all
    with Interrupts() as interrupts, notes_on_stderr("microgpt_infer"):
        return _inspect(p.parse_args(argv), interrupts)


def _inspect(args: argparse.Namespace, interrupts: Interrupts) -> int:
    try:
        if args.text is not None:
            text = args.text
        elif sys.stdin is None or sys.stdin.isatty():
            raise StdinError("give a text argument or pipe text to stdin (see inspect --help)")
        else:
            text = read_stdin()
        if not text:
            raise StdinError("the text is empty; give at least one character to inspect")
        out = _writable_file(args.out)
        from microgpt_core.files import write_atomic
        from microgpt_infer.inspection import inspect_text, page_data, render_page
        from microgpt_infer.model import default_model_note, find_default_model, load_model

        source = args.model or find_default_model()
        if not args.model:
            print(f"inspect: {default_model_note(source)}", file=sys.stderr, flush=True)
        model = load_model(source, args.revision)
        inspection = inspect_text(model.params, model.config, model.tokenizer, text)
        page = render_page(page_data(inspection, model.config, text=text, model=source)).encode("utf-8")
        with interrupts.critical():
            write_atomic(out, page)
    except KeyboardInterrupt:  # Python's own Ctrl-C (outside the main thread)
        return interrupted()
    except (ValueError, OSError) as err:
        return fail(err, args.debug)
    tokens = len(inspection.tokens)
    print(f"inspect: wrote {out} ({len(page):,} bytes; {tokens} tokens)", file=sys.stderr, flush=True)
    return 0


def _writable_file(name: str) -> str:
    """`name` if a file can be written there (its folder exists and is writable, and it is not a
    folder itself); else a ValueError saying which of those fails."""
    path = os.path.abspath(os.path.expanduser(name))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise ValueError(f"--out {name} is a folder; name the HTML file to write")
    if not os.path.isdir(folder):
        raise ValueError(f"--out {name}: no such folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {name}: cannot write in {folder} (permission denied)")
    return name
