"""`train`: the command line over `microgpt_train.train`.

    uv run train                                   # the quickstart preset on the built-in corpus
    uv run train --preset seed-5m --max-steps 100  # any field of the run config is a flag
    uv run train --config run.toml --resume        # TOML: run fields at the top, model fields in [model]
    train --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # one per host

The flags are generated from `RunConfig` and `GPTConfig` (their field names, kebab-cased, types and
help texts), so they cannot drift from the config. Precedence: preset < --config file < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from microgpt_core import GPTConfig
from microgpt_train.config import PRESETS, RunConfig, RunConfigError, preset, run_fields

__all__ = ["build_parser", "main", "resolve_config"]

_MODEL_HELP = {
    "vocab_size": "vocabulary size V (also the size of a BPE trained for the run)",
    "context_length": "context T: tokens per training sequence",
    "d_model": "model width D",
    "n_layers": "Transformer blocks L",
    "n_heads": "attention heads H (must divide d-model)",
    "d_ff": "MLP hidden width F (default 4 x d-model)",
    "positional": "positions: learned | sinusoidal",
    "bias": "biases in linear layers and norms",
    "final_norm": "a layer norm before the output head",
    "tie_embeddings": "output head = token embedding transposed",
    "embed_scale": "multiply token embeddings by sqrt(d-model)",
    "norm_eps": "layer-norm epsilon",
    "dropout": "dropout rate in training",
    "gelu": "GELU: tanh | exact",
    "attention": "attention: math | fused",
    "compute_dtype": "matmul input dtype: float32 | bfloat16",
}


def _flag_type(f: dataclasses.Field) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if "bool" in kind:
        return _bool
    if kind.startswith("int"):
        return int
    if kind.startswith("float"):
        return float
    return str


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 with "prog: error: ..."; keep the house form
        sys.stderr.write(f"error: {message}\n(see {self.prog} --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="train",
        description="Train a microGPT model. Every run-config and model field is a flag; "
        "precedence: --preset < --config FILE.toml < flags.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--preset", default="quickstart", help=f"starting config: {', '.join(PRESETS)}")
    parser.add_argument(
        "--config", type=Path, help="TOML file: run fields at the top level, model fields in [model]"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run folder's latest checkpoint")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    dist = parser.add_argument_group("distributed (else JAX's cluster detection; none: one process)")
    dist.add_argument("--coordinator", help="HOST:PORT of process 0's coordinator")
    dist.add_argument("--num-processes", type=int, help="processes in the run")
    dist.add_argument("--process-id", type=int, help="this process's rank")
    dist.add_argument(
        "--heartbeat-timeout", type=int, default=100, help="seconds before a silent peer is dead"
    )
    run = parser.add_argument_group("run (RunConfig)")
    for f in run_fields():
        run.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_flag_type(f),
                         default=argparse.SUPPRESS, help=f.metadata.get("help", ""))  # fmt: skip
    model = parser.add_argument_group("model (GPTConfig)")
    for f in dataclasses.fields(GPTConfig):
        model.add_argument(f"--{f.name.replace('_', '-')}", dest=f"model.{f.name}", type=_flag_type(f),
                           default=argparse.SUPPRESS, help=_MODEL_HELP.get(f.name, ""))  # fmt: skip
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """preset, then the TOML file, then the flags; `RunConfigError` for any bad key or value."""
    config = preset(args.preset)
    if args.config is not None:
        try:
            data = tomllib.loads(args.config.read_text())
        except OSError as err:
            raise RunConfigError(f"cannot read --config {args.config}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise RunConfigError(f"--config {args.config} is not valid TOML: {err}") from None
        try:
            config = config.merge(data)
        except (RunConfigError, TypeError) as err:
            raise RunConfigError(f"in {args.config}: {err}") from None
    flags = {k: v for k, v in vars(args).items() if k in {f.name for f in run_fields()}}
    flags["model"] = {k.removeprefix("model."): v for k, v in vars(args).items() if k.startswith("model.")}
    return config.merge(flags)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except SystemExit:
        raise
    except KeyboardInterrupt as err:  # TrainingInterrupted: the checkpoint is saved
        print(f"\n{err or 'interrupted'}", file=sys.stderr)
        return 130
    except PeerLostError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # jax.distributed's own shutdown would wait for (or abort on) the dead peer
    except Exception as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1


def _run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    from microgpt_train import distributed  # imports JAX: after the cheap checks

    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, heartbeat_timeout_s=args.heartbeat_timeout
    )
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


class PeerLostError(RuntimeError):
    """A collective failed because another process died."""


if __name__ == "__main__":
    sys.exit(main())
