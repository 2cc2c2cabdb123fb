"""`RunConfig`: everything one training run needs, and the named presets.

A run config is a frozen dataclass of training knobs plus a `GPTConfig` (`model`). The `train` CLI's
flags, the `--config FILE.toml` keys and `train_config.json` are all generated from these two
dataclasses, so each knob is written down once (its help text is the field's `help` metadata).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from microgpt_core import SEED_CONFIG, ConfigError, GPTConfig
from microgpt_core.config import COMPUTE_DTYPES, WeightsDtype, check_fields
from microgpt_infer.run_layout import TRAIN_CONFIG_FILE  # the resolved run config, in the run folder

__all__ = [
    "OPTIMIZERS",
    "PRESETS",
    "RESUMABLE_CHANGES",
    "TRACKERS",
    "TRAIN_CONFIG_FILE",
    "RunConfig",
    "RunConfigError",
    "preset",
    "run_fields",
    "saved_fields",
]


# Fields a resumed run may change: they do not change the weights at any step (cadence, logging),
# except max_steps, which trains a run further (or stops it sooner) on a schedule spanning the new
# number of steps; the loop states that schedule when it changes.
RESUMABLE_CHANGES = frozenset({
    "eval_every", "eval_batches", "sample_every", "sample_tokens", "sample_prompt",
    "checkpoint_every", "keep_checkpoints", "log_every", "peak_flops", "progress", "max_steps",
    "weights_dtype", "tracker", "tracker_project",
})  # fmt: skip
# Experiment trackers `tracker` may name (trackers.py), each an extra of microgpt-train of that name.
TRACKERS = ("tensorboard", "wandb", "trackio")


Optimizer = Literal["adamw", "muon"]
OPTIMIZERS = typing.get_args(Optimizer)
# What a saved run config without a field meant: it was written before the field existed.
_ABSENT_MEANS = {"optimizer": "adamw"}


class RunConfigError(ValueError):
    """A run-config value is out of range or two values cannot go together; the message names them."""


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run. `model` is the network; the other fields drive data, optimiser and logging."""

    model: GPTConfig
    name: str = _f("quickstart", "run name: the run folder is RUNS_DIR/NAME")
    runs_dir: str = _f("runs", "folder that holds run folders")
    data: str = _f(
        "pydocs", "training text: pydocs, a local .txt/.jsonl/.json/.parquet file or folder, or org/name"
    )
    text_column: str = _f("text", "column holding the text in .jsonl/.json/.parquet/Hub data")
    tokenizer: str = _f(
        "",
        "tiktoken:NAME, a tokenizer folder, or a model's: default (the model microgpt-infer ships), a "
        "model folder, a run folder (runs/NAME) or a Hub id (org/name); empty: train a BPE of "
        "vocab-size on the data (cached in the run folder)",
    )
    tokenizer_documents: int = _f(0, "documents to train the BPE on (0: all of the training split)")
    init_from: str = _f(
        "",
        "fine-tune: start from this model's weights, tokenizer and architecture (any model name, as "
        "for --tokenizer); model flags may only repeat its values, but dropout, compute-dtype and "
        "attention; empty: fresh weights",
    )
    batch_size: int = _f(
        16, "global batch: sequences per optimiser step, over all processes and micro-batches"
    )
    grad_accum: int = _f(1, "micro-batches per step (gradient accumulation); must divide batch-size")
    max_steps: int = _f(1000, "optimiser steps; the learning-rate schedule spans exactly these")
    learning_rate: float = _f(1e-3, "peak learning rate")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of the peak (cosine decay)")
    warmup_steps: int = _f(100, "steps of linear warmup from 0")
    weight_decay: float = _f(0.1, "AdamW decoupled weight decay (never on norms, biases or embeddings)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip gradients to this global norm (0: no clipping)")
    optimizer: Optimizer = _f(
        "adamw",
        "optimiser (muon: Muon for the blocks' weight matrices, AdamW at learning-rate for embeddings, "
        "head, norms and biases)",
    )
    muon_learning_rate: float = _f(0.02, "peak learning rate of the Muon matrices (optimizer muon)")
    muon_momentum: float = _f(0.95, "Muon's Nesterov momentum (optimizer muon)")
    seed: int = _f(0, "seed of initialisation, dropout and data shuffling")
    shuffle_buffer: int = _f(256, "documents in the data shuffle buffer (0: no shuffle)")
    fsdp: bool = _f(False, "shard parameters and optimiser state over the data axis (FSDP)")
    eval_every: int = _f(200, "evaluate on the validation split every N steps (0: only at the end)")
    eval_batches: int = _f(8, "validation batches per evaluation")
    sample_every: int = _f(500, "print a sample every N steps (0: only at the end)")
    sample_tokens: int = _f(64, "tokens per sample")
    sample_prompt: str = _f("The", "prompt of the periodic samples")
    checkpoint_every: int = _f(200, "save an orbax checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _f(2, "checkpoints to keep")
    log_every: int = _f(10, "write metrics.jsonl every N steps")
    weights_dtype: WeightsDtype = _f(
        "float32",
        "dtype of the exported model.safetensors: float32, or bfloat16 (half the size; loads as float32)",
    )
    peak_flops: float = _f(0.0, "peak FLOP/s per device for MFU (0: measured on CPU, else a table)")
    progress: bool = _f(True, "show a tqdm progress bar (process 0 only)")
    tracker: str = _f(
        "",
        f"experiment trackers, comma-separated: {', '.join(TRACKERS)} (any subset, offline; each an extra: "
        "pip install 'microgpt-train[NAME]'); empty: none",
    )
    tracker_project: str = _f("microgpt", "project of the wandb and trackio trackers")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.context_length

    @property
    def trackers(self) -> tuple[str, ...]:
        """The trackers `tracker` names, in its order ("" or "none": none)."""
        text = self.tracker.strip()
        return () if text in ("", "none") else tuple(dict.fromkeys(n.strip() for n in text.split(",")))

    def validate(self) -> None:
        """Raises `RunConfigError` naming the first bad field (device counts are checked at start):
        first a value not of its annotated type (`check_fields`), then one out of range."""
        check_fields(self, error=RunConfigError, qualified=False)
        for f in run_fields():
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):  # only number fields hold floats
                raise RunConfigError(f"{f.name} must be finite, got {value!r}")
        for name in ("batch_size", "grad_accum", "max_steps", "eval_batches", "sample_tokens"):
            _at_least(name, getattr(self, name), 1)
        for name in ("checkpoint_every", "keep_checkpoints", "log_every"):
            _at_least(name, getattr(self, name), 1)
        for name in ("warmup_steps", "eval_every", "sample_every", "shuffle_buffer", "tokenizer_documents"):
            _at_least(name, getattr(self, name), 0)
        for name in ("learning_rate", "weight_decay", "grad_clip", "peak_flops", "min_lr_ratio"):
            _at_least(name, getattr(self, name), 0)
        for name in ("learning_rate", "muon_learning_rate"):
            if getattr(self, name) <= 0:
                raise RunConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_lr_ratio > 1:
            raise RunConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("beta1", "beta2", "muon_momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise RunConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise RunConfigError(
                f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})"
            )
        if self.model.compute_dtype not in COMPUTE_DTYPES:
            raise RunConfigError(
                f"compute_dtype must be one of {list(COMPUTE_DTYPES)} for training, got "
                f"{self.model.compute_dtype!r} (float64 is core's, for gradient checks)"
            )
        if self.init_from and self.tokenizer:
            raise RunConfigError(
                f"tokenizer ({self.tokenizer!r}) cannot be given with init_from ({self.init_from!r}): "
                "a fine-tuned model keeps its source's tokenizer"
            )
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise RunConfigError(f"name must be a plain folder name, got {self.name!r}")
        unknown = [name for name in self.trackers if name not in TRACKERS]
        if unknown:
            raise RunConfigError(
                f"tracker {self.tracker!r} names {unknown}: valid trackers are {', '.join(TRACKERS)} (any "
                "subset, comma-separated), or none"
            )
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.tracker_project):
            raise RunConfigError(
                f"tracker_project must be letters, digits, '.', '_' or '-', got {self.tracker_project!r}"
            )
        if self.sample_tokens >= self.model.context_length:
            raise RunConfigError(
                f"sample_tokens ({self.sample_tokens}) must be below context_length "
                f"({self.model.context_length})"
            )

    def summary(self) -> str:
        """One line: the model, the data and the schedule (`to_dict` has every field)."""
        m = self.model
        lr = f"lr {self.learning_rate:g}"
        if self.optimizer == "muon":
            lr = f"Muon lr {self.muon_learning_rate:g} on the block matrices, AdamW {lr} elsewhere"
        schedule = f"{lr}, warmup {self.warmup_steps}, cosine to {self.min_lr_ratio:g}x"
        return (
            f"{m.n_layers} layers x {m.d_model} wide x {m.n_heads} heads, context {m.context_length}, "
            f"vocabulary {m.vocab_size}, {m.compute_dtype}; data {self.data}; {self.max_steps} steps of "
            f"{self.batch_size} x {m.context_length} tokens ({schedule}), seed {self.seed}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the run fields plus ``model`` (a `GPTConfig.to_dict()`)."""
        out = {f.name: getattr(self, f.name) for f in run_fields()}
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of `to_dict`; unknown keys are errors (see `merge` for partial updates). A run field
        missing from `data` takes its default, or what it meant before the field existed (a
        `train_config.json` without ``optimizer`` is an AdamW run)."""
        data = saved_fields(data)
        if "model" not in data:
            raise RunConfigError("a run config needs a 'model' table")
        model = data.pop("model")
        _check_keys(data, {f.name for f in run_fields()}, "run config")
        return cls(model=model if isinstance(model, GPTConfig) else GPTConfig.from_dict(model), **data)

    def merge(self, updates: dict[str, Any]) -> RunConfig:
        """A copy with `updates` applied: run fields at the top level, model fields flat or under
        ``model``. Unknown keys raise `RunConfigError` listing the valid ones."""
        updates = dict(updates)
        model_updates = dict(updates.pop("model", {}) or {})
        run_names = {f.name for f in run_fields()}
        model_names = {f.name for f in dataclasses.fields(GPTConfig)}
        for key in list(updates):
            if key not in run_names and key in model_names:
                model_updates[key] = updates.pop(key)
        _check_keys(updates, run_names, "run config")
        _check_keys(model_updates, model_names, "model")
        try:
            model = self.model.replace(**model_updates) if model_updates else self.model
        except ConfigError as err:
            raise RunConfigError(str(err)) from None
        return dataclasses.replace(self, model=model, **updates)


def run_fields() -> list[dataclasses.Field]:
    """The run-config fields other than ``model``, in declaration order."""
    return [f for f in dataclasses.fields(RunConfig) if f.name != "model"]


def saved_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run config (`train_config.json`) with every run field it lacks filled in: what the
    field meant before it existed (``optimizer``: adamw), else the field's default."""
    absent = {f.name: _ABSENT_MEANS.get(f.name, f.default) for f in run_fields() if f.name not in data}
    return {**absent, **data}


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise RunConfigError(f"{name} must be >= {low}, got {value}")


def _check_keys(data: dict[str, Any], valid: set[str], where: str) -> None:
    unknown = sorted(set(data) - valid)
    if unknown:
        raise RunConfigError(f"unknown {where} key(s) {unknown}; valid keys are {sorted(valid)}")


# --------------------------------------------------------------------------------------------------
# Presets.
SEED_MODEL = SEED_CONFIG.replace(dropout=0.1)  # the original microGPT, trained with dropout 0.1

PRESETS: dict[str, RunConfig] = {
    # Readable samples from the built-in corpus in a few minutes on a 2-core CPU.
    "quickstart": RunConfig(
        name="quickstart",
        # 2 layers in bfloat16 beat 4 in float32 in the same time, and this Llama-style block (rotary
        # positions, RMSNorm, SwiGLU, grouped-query attention, no biases) beats GPT-2's in the same
        # time (measured by bench/architectures.py; figures in bench/README.md). Muon on the blocks'
        # matrices reached a lower validation loss than AdamW in the same time on each of 3 seeds
        # (bench/optimizers.py; figures in bench/README.md).
        model=GPTConfig(
            vocab_size=2048,
            context_length=128,
            d_model=128,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            positional="rope",
            norm="rmsnorm",
            mlp="swiglu",
            bias=False,
            compute_dtype="bfloat16",
        ),  # fmt: skip
        data="pydocs",
        batch_size=16,
        max_steps=800,
        learning_rate=3e-3,
        optimizer="muon",
        warmup_steps=50,
        eval_every=200,
        eval_batches=8,
        sample_every=400,
        sample_tokens=48,
        checkpoint_every=200,
    ),
    # The model microgpt-infer ships (`load_model("default")`, `generate_text(rng, text)`): the
    # quickstart's Llama-style block, 6 x 256 wide with a 256-token context, 4.95M parameters stored
    # in bfloat16 (9.9 MB), trained for 1200 steps (about 6 epochs of pydocs' 0.79M training tokens,
    # about 25 minutes on 2 CPU cores). Every eval reads the whole validation split (11 batches).
    "default": RunConfig(
        name="default",
        model=GPTConfig(
            vocab_size=2048,
            context_length=256,
            d_model=256,
            n_layers=6,
            n_heads=8,
            n_kv_heads=4,
            positional="rope",
            norm="rmsnorm",
            mlp="swiglu",
            bias=False,
            dropout=0.1,
            compute_dtype="bfloat16",
        ),  # fmt: skip
        data="pydocs",
        batch_size=16,
        max_steps=1200,
        learning_rate=2e-3,
        optimizer="muon",  # it beat AdamW in the same time here too (bench/README.md)
        warmup_steps=100,
        eval_every=300,
        eval_batches=11,
        sample_every=600,
        sample_tokens=48,
        sample_prompt="Once upon a time",
        checkpoint_every=600,
        weights_dtype="bfloat16",
    ),
    # The original microGPT (kandarpa02/microGPT): 5.3M parameters on OpenWebText-10k.
    "seed-5m": RunConfig(
        name="seed-5m",
        model=SEED_MODEL,
        data="stas/openwebtext-10k",
        tokenizer_documents=2000,
        batch_size=16,
        max_steps=5000,
        learning_rate=6e-4,
        warmup_steps=200,
        eval_every=500,
        sample_every=1000,
        checkpoint_every=500,
    ),
    # GPT-2 small (124M) with its own tokenizer, for accelerators.
    "gpt2-124m": RunConfig(
        name="gpt2-124m",
        model=GPTConfig(vocab_size=50304, context_length=1024, d_model=768, n_layers=12, n_heads=12),
        data="stas/openwebtext-10k",
        tokenizer="tiktoken:gpt2",
        batch_size=480,
        grad_accum=8,
        max_steps=5000,
        learning_rate=6e-4,
        warmup_steps=700,
        weight_decay=0.1,
        eval_every=250,
        eval_batches=20,
        sample_every=1000,
        checkpoint_every=500,
        peak_flops=0.0,
    ),
}


def preset(name: str) -> RunConfig:
    """The preset called `name`; `RunConfigError` lists the valid names."""
    if name not in PRESETS:
        raise RunConfigError(f"unknown preset {name!r}; valid presets are {sorted(PRESETS)}")
    return PRESETS[name]
