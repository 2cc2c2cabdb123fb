"""What every microGPT command shares: its parser, its help text, its boolean flags, its one-line errors.

`train-tokenizer` (here), `train` and `evaluate` (microgpt-train), `generate` and `push-to-hub`
(microgpt-infer) all build on these, so they behave alike:

- `Parser`: argparse whose usage errors read ``error: ...`` (then ``(see PROG --help)``) and exit 2.
- `HelpFormatter`: ``(default: X)`` after a flag's help only where a default means something: not on
  required arguments, not for ``None`` or a switch that is off, never twice.
- `add_bool_flag`: ``--name`` / ``--no-name`` switches that also take ``--name true|false``.
- `fail(err, debug)`: prints ``error: <one line>`` (a traceback only with ``--debug``), returns 2.
- `notes_on_stderr(logger)`: a library's warnings (which checkpoint stands in for a model, a config
  key ignored) as plain lines on stderr while the command runs.

How a command stops on Ctrl-C is `microgpt_data.signals`'.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from typing import Any

__all__ = [
    "EXIT_INTERRUPTED",
    "HelpFormatter",
    "Parser",
    "add_bool_flag",
    "fail",
    "interrupted",
    "notes_on_stderr",
    "parse_bool",
]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with the house error form and exit status 2, and no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"error: {message}\n(see {self.prog} --help)\n")
        raise SystemExit(2)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help where the default is worth stating."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or action.required
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(action, argparse._StoreTrueAction | argparse._HelpAction | argparse._VersionAction)
            or not action.option_strings  # positionals: their help says what they are
        ):
            return text
        shown = ("true" if default else "false") if isinstance(default, bool) else default
        if isinstance(default, str) and not default:
            shown = "''"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case) as a bool; argparse error otherwise."""
    lowered = str(text).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _SetFalse(argparse.Action):
    """``--no-name``: stores False."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, False)


def add_bool_flag(
    group: argparse._ActionsContainer, name: str, *, dest: str, help: str, default: Any = argparse.SUPPRESS
) -> argparse.Action:
    """Adds ``--NAME [true|false]`` (bare: true) and ``--no-NAME`` for one boolean setting in `dest`."""
    action = group.add_argument(
        f"--{name}", dest=dest, nargs="?", const=True, type=parse_bool, default=default,
        metavar="true|false", help=f"{help} (--no-{name}: off)",
    )  # fmt: skip
    group.add_argument(
        f"--no-{name}",
        dest=dest,
        nargs=0,
        action=_SetFalse,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    return action


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def interrupted() -> int:
    """Prints ``interrupted`` to stderr (no traceback) and returns the exit status 130, for Ctrl-C."""
    print("interrupted", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def fail(err: BaseException, debug: bool = False) -> int:
    """Prints ``error: ...`` (one line per line of the message; a traceback first with `debug`) to
    stderr and returns the exit status 2."""
    if debug:
        traceback.print_exception(err)
    message = str(err) or type(err).__name__
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


class _PlainLines(logging.Handler):
    """Log records as plain lines on whatever `sys.stderr` is when they are emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), file=sys.stderr, flush=True)


@contextlib.contextmanager
def notes_on_stderr(name: str) -> Iterator[None]:
    """The warnings of the logger `name` as plain lines on stderr inside, and not through the root
    logger's handler (absl installs one once orbax is imported, which prefixes ``WARNING:name:``)."""
    logger, handler = logging.getLogger(name), _PlainLines(logging.WARNING)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
