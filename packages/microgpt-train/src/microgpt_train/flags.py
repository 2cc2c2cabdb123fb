"""The `train` command's flags: generated from `RunConfig` and `GPTConfig` (their field names,
kebab-cased, types and help texts), so they cannot drift from the config, and `resolve_config`, which
turns them into the run's config.

Precedence: preset < --config file < flags. With `--resume` the run folder's own
`train_config.json` takes the preset's place: flags that would change the run's trajectory are
refused, naming them; logging, eval and checkpoint cadence may change, and so may `--max-steps`
(to train a finished run further, on a schedule that then spans the new number of steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from microgpt_core import GPTConfig
from microgpt_core.config import (
    ATTENTION_KINDS,
    COMPUTE_DTYPES,
    GELU_KINDS,
    MLP_KINDS,
    NORM_KINDS,
    POSITIONAL_KINDS,
)
from microgpt_core.jsonfile import read_json_object
from microgpt_data.commands import Parser, add_bool_flag
from microgpt_train.config import (
    OPTIMIZERS,
    PRESETS,
    RESUMABLE_CHANGES,
    TRAIN_CONFIG_FILE,
    RunConfig,
    RunConfigError,
    preset,
    run_fields,
)

__all__ = ["DEFAULT_PRESET", "build_parser", "named", "preset_in", "resolve_config"]

DEFAULT_PRESET = "quickstart"
_MODEL_HELP = {
    "vocab_size": "vocabulary size V (also the size of a BPE trained for the run)",
    "context_length": "context T: tokens per training sequence",
    "d_model": "model width D",
    "n_layers": "Transformer blocks L",
    "n_heads": "attention heads H (must divide d-model)",
    "n_kv_heads": "key/value heads (default n-heads; must divide it: grouped-query, 1 = multi-query)",
    "d_ff": "MLP hidden width F (default 4 x d-model; for swiglu 2/3 of that, rounded up to 32)",
    "positional": "positions",
    "rope_theta": "base theta of the rotary frequencies (positional rope)",
    "norm": "normalisation",
    "qk_norm": "RMS-normalise queries and keys per head before the scores",
    "bias": "biases in linear layers and layer norms",
    "final_norm": "a norm before the output head",
    "tie_embeddings": "output head = token embedding transposed",
    "embed_scale": "multiply token embeddings by sqrt(d-model)",
    "norm_eps": "epsilon inside the norm",
    "dropout": "dropout rate in training",
    "mlp": "MLP",
    "gelu": "GELU of the gelu MLP",
    "attention": "attention",
    "compute_dtype": "matmul input dtype",
}


# The model fields that take one of a few words: the flag refuses any other, and its help lists them.
_CHOICES = {
    "positional": POSITIONAL_KINDS,
    "norm": NORM_KINDS,
    "mlp": MLP_KINDS,
    "gelu": GELU_KINDS,
    "attention": ATTENTION_KINDS,
    "compute_dtype": COMPUTE_DTYPES,
}
_RUN_CHOICES = {"optimizer": OPTIMIZERS}


def _kind(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def _flag_type(f: dataclasses.Field) -> Any:
    kind = _kind(f)
    if kind.startswith("int"):
        return int
    if kind.startswith("float"):
        return float
    return str


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if value == "" else str(value)


def _add_field(group, f: dataclasses.Field, dest: str, help: str, value: Any) -> None:
    """One flag for a config field; its help shows the value the preset in use gives it."""
    choices = _CHOICES.get(f.name) if dest.startswith("model.") else _RUN_CHOICES.get(f.name)
    if choices:
        help = f"{help}: {' | '.join(choices)}"
    text = f"{help} (default: {_shown(value)})"
    name = f.name.replace("_", "-")
    if "bool" in _kind(f):
        add_bool_flag(group, name, dest=dest, help=text)
    else:
        group.add_argument(
            f"--{name}", dest=dest, type=_flag_type(f), default=argparse.SUPPRESS, help=text, choices=choices,
            metavar="|".join(choices) if choices else None,
        )  # fmt: skip


def build_parser(preset_name: str = DEFAULT_PRESET) -> argparse.ArgumentParser:
    """The `train` parser; the run and model flags' help shows `preset_name`'s values."""
    shown = PRESETS.get(preset_name, PRESETS[DEFAULT_PRESET])
    parser = Parser(
        prog="train",
        description="Train a microGPT model. Every run-config and model field is a flag; "
        "precedence: --preset < --config FILE.toml < flags. With --resume, the run folder's "
        f"{TRAIN_CONFIG_FILE} takes the preset's place.",
    )
    parser.add_argument(
        "--preset", default=None, help=f"starting config: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})"
    )
    parser.add_argument(
        "--config", type=Path, help="TOML file: run fields at the top level, model fields in [model]"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue RUNS_DIR/NAME from its newest checkpoint and its {TRAIN_CONFIG_FILE}",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    dist = parser.add_argument_group("distributed (else JAX's cluster detection; none: one process)")
    dist.add_argument("--coordinator", help="HOST:PORT of process 0's coordinator")
    dist.add_argument("--num-processes", type=int, help="processes in the run")
    dist.add_argument("--process-id", type=int, help="this process's rank")
    dist.add_argument(
        "--heartbeat-timeout", type=int, default=100, help="seconds before a silent peer is dead"
    )
    run = parser.add_argument_group(f"run (RunConfig; defaults of the {preset_name!r} preset)")
    for f in run_fields():
        _add_field(run, f, f.name, f.metadata.get("help", ""), getattr(shown, f.name))
    model = parser.add_argument_group(f"model (GPTConfig; defaults of the {preset_name!r} preset)")
    for f in dataclasses.fields(GPTConfig):
        _add_field(model, f, f"model.{f.name}", _MODEL_HELP.get(f.name, ""), getattr(shown.model, f.name))
    return parser


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RunConfigError(f"cannot read --config {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise RunConfigError(f"--config {path} is not valid TOML: {err}") from None


def _merge(config: RunConfig, updates: dict[str, Any], where: str | None = None) -> RunConfig:
    try:
        return config.merge(updates)
    except (RunConfigError, TypeError) as err:
        raise RunConfigError(f"in {where}: {err}" if where else str(err)) from None


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    """The run and model values given as flags (absent flags are not in the namespace)."""
    flags = {k: v for k, v in vars(args).items() if k in {f.name for f in run_fields()}}
    flags["model"] = {k.removeprefix("model."): v for k, v in vars(args).items() if k.startswith("model.")}
    return flags


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """preset, then the TOML file, then the flags; with --resume the saved config instead of the
    preset. `RunConfigError` for any bad key or value, or a resume that would change the run."""
    base = preset(args.preset or DEFAULT_PRESET)
    file_values = _toml(args.config) if args.config is not None else {}
    given = _merge(_merge(base, file_values, str(args.config)), _explicit(args))
    if not args.resume:
        return _init_from(given, file_values, args)
    run_dir = Path(given.runs_dir) / given.name
    saved = _saved_config(run_dir)
    # The folder's own config, moved to where it is now (name and folder are not the trajectory),
    # then the TOML file and flags, and the preset only if it was named.
    resumed = dataclasses.replace(saved, name=given.name, runs_dir=given.runs_dir)
    if args.preset is not None:
        resumed = _refuse_changes(resumed, given, f"--preset {args.preset}", run_dir)
    asked = _merge(_merge(resumed, file_values, str(args.config)), _explicit(args))
    return _refuse_changes(resumed, asked, "the flags", run_dir)


def _init_from(run: RunConfig, file_values: dict[str, Any], args: argparse.Namespace) -> RunConfig:
    """With init_from: the source's model, and the model fields the file and flags set checked."""
    if not run.init_from:
        return run
    from microgpt_train.init_from import resolve_init_from

    model_names = {f.name for f in dataclasses.fields(GPTConfig)}
    given = {*file_values.get("model", {}), *(k for k in file_values if k in model_names)}
    return resolve_init_from(run, given | set(_explicit(args)["model"]))


def _saved_config(run_dir: Path) -> RunConfig:
    path = run_dir / TRAIN_CONFIG_FILE
    if not path.is_file():
        if not run_dir.is_dir():
            parent = run_dir.parent
            runs = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
            where = f"{parent} holds {', '.join(runs)}" if runs else f"{parent} holds no run folders"
            raise RunConfigError(
                f"--resume: there is no run folder {run_dir} ({where}); check --name and --runs-dir"
            )
        from microgpt_train.run_folder import listing

        raise RunConfigError(
            f"--resume: {run_dir} has no {TRAIN_CONFIG_FILE} (it holds {listing(run_dir)}); it is not a "
            "run folder that can be resumed: start a new run without --resume"
        )
    saved = read_json_object(path, error=RunConfigError, holds="a run config")
    try:
        return RunConfig.from_dict(saved)
    except (ValueError, TypeError) as err:
        raise RunConfigError(f"--resume: {path} is not a readable run config: {err}") from None


def _refuse_changes(saved: RunConfig, asked: RunConfig, source: str, run_dir: Path) -> RunConfig:
    """`asked` if it differs from `saved` only where a resumed run may change; else RunConfigError."""
    before, after = saved.to_dict(), asked.to_dict()
    changed = [
        f"{key} {before[key]!r} -> {after[key]!r}"
        for key in before
        if key != "model" and key not in RESUMABLE_CHANGES and before[key] != after[key]
    ]
    changed += [
        f"model.{key} {before['model'][key]!r} -> {after['model'][key]!r}"
        for key in before["model"]
        if before["model"][key] != after["model"][key]
    ]
    if changed:
        raise RunConfigError(
            f"--resume: {source} would change the run in {run_dir}: {'; '.join(changed)}. A resumed run "
            f"continues its saved {TRAIN_CONFIG_FILE}; only {', '.join(sorted(RESUMABLE_CHANGES))} may "
            "change. Drop those flags, or start a new run with another --name"
        )
    return asked


def preset_in(argv: list[str]) -> str:
    """The --preset named in `argv` (for --help), without parsing the rest."""
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return DEFAULT_PRESET


def named(args: argparse.Namespace) -> bool:
    """Whether the run's folder was chosen (--name, a name in --config, --resume)."""
    return args.resume or "name" in vars(args) or (args.config is not None and "name" in _toml(args.config))
