"""`train`: the command line over `microgpt_train.train`.

    uv run train                                   # the quickstart preset on the built-in corpus
    uv run train --preset seed-5m --max-steps 100  # any field of the run config is a flag
    uv run train --config run.toml                 # TOML: run fields at the top, model fields in [model]
    uv run train --resume --name wide              # continue runs/wide from its saved train_config.json
    train --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # one per host

The flags are generated from `RunConfig` and `GPTConfig` (`flags.py`); `--help` shows the values of
the preset in use. This module imports nothing slow before `main` has installed the command's
Ctrl-C handling (`microgpt_data.signals`): the flags, JAX and the loop load inside it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from microgpt_core.files import is_disk_full
from microgpt_data import signals
from microgpt_data.commands import fail, notes_on_stderr

__all__ = ["NOT_STARTED", "PeerLostError", "main"]


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C or SIGTERM before the run starts ends the command at once ("interrupted", 130 or 143),
    # with nothing written; once it has started, the step loop stops with a checkpoint (interrupts.py).
    with signals.Interrupts(message=NOT_STARTED) as interrupts, notes_on_stderr("microgpt_infer"):
        from microgpt_train.flags import build_parser, preset_in

        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(preset_in(argv)).parse_args(argv)
        try:
            return _run(args)
        except SystemExit:
            raise
        except BaseException as err:
            interrupts.message = "interrupted"  # the run may have started: say no more than that
            return _failed(err, args)


def _failed(err: BaseException, args: argparse.Namespace) -> int:
    """The exit status for `err`, after one line on stderr (a traceback with --debug)."""
    if isinstance(err, KeyboardInterrupt):  # TrainingInterrupted, or Python's own Ctrl-C in a thread
        print(f"\n{str(err) or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)
    if isinstance(err, PeerLostError):
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # jax.distributed's own shutdown would wait for (or abort on) the dead peer
    if args.debug or not isinstance(err, Exception):
        raise err
    fail(err)
    if is_disk_full(err):
        return 1  # not bad input: a failure during the run
    return 2 if isinstance(err, ValueError | OSError) else 1


def _run(args: argparse.Namespace) -> int:
    from microgpt_train.flags import named, resolve_config

    config = resolve_config(args)
    from microgpt_train import distributed

    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, heartbeat_timeout_s=args.heartbeat_timeout
    )
    interrupts = signals.active()
    if interrupts is not None:
        interrupts.reinstall()  # jax.distributed's preemption notifier took SIGTERM
    if not named(args):
        from microgpt_train.run_folder import beside_earlier_runs

        config = beside_earlier_runs(config)
    from microgpt_train.loop import train

    try:
        train(config, resume=args.resume)
    except (ValueError, RuntimeError) as err:
        if "gloo" in str(err).lower() or "distributed" in type(err).__module__:
            raise PeerLostError(
                f"a peer process failed or disconnected ({str(err).splitlines()[0]}); "
                "the newest checkpoint is intact: restart all processes with --resume"
            ) from err
        raise
    return 0


NOT_STARTED = "interrupted before the run started: nothing was written"


class PeerLostError(RuntimeError):
    """A collective failed because another process died."""


if __name__ == "__main__":
    sys.exit(main())
