"""Tiny run configs for the train tests: a 2-layer, 32-wide model on pydocs with a 256-token BPE."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from microgpt_core import GPTConfig
from microgpt_train import RunConfig

TINY_MODEL = GPTConfig(vocab_size=320, context_length=32, d_model=32, n_layers=2, n_heads=2, dropout=0.1)


def tiny_run(runs_dir: Path | str, name: str = "tiny", **changes) -> RunConfig:
    """A run that trains in seconds: 8 x 32 tokens per step, evals of 2 batches, no progress bar."""
    fields = dict(
        name=name, runs_dir=str(runs_dir), model=TINY_MODEL, batch_size=8, max_steps=6, warmup_steps=2,
        eval_every=3, eval_batches=2, sample_every=6, sample_tokens=8, checkpoint_every=3, log_every=1,
        shuffle_buffer=16, progress=False, learning_rate=3e-3,
    )  # fmt: skip
    fields.update(changes)
    return RunConfig(**fields)


def tiny_flags(runs_dir: Path | str, name: str, **changes) -> list[str]:
    """The same tiny run as `train` CLI flags."""
    run = tiny_run(runs_dir, name, **changes)
    flags = []
    for key, value in run.to_dict().items():
        if key == "model":
            continue
        flags += [f"--{key.replace('_', '-')}", str(value)]
    for key in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "dropout"):
        flags += [f"--{key.replace('_', '-')}", str(getattr(run.model, key))]
    return flags


# One JAX compilation cache for every `train` subprocess of the session: the same tiny programs are
# compiled once, not once per process (results are the same executables, so bit for bit the same).
_JAX_CACHE = tempfile.mkdtemp(prefix="microgpt-test-jax-cache-")
atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)

# The trackers' homes, for this process and its `train` subprocesses: tests never write the user's
# trackio store or W&B's caches. trackio reads TRACKIO_DIR once, when it is first imported.
_TRACKER_HOME = tempfile.mkdtemp(prefix="microgpt-test-trackers-")
atexit.register(shutil.rmtree, _TRACKER_HOME, ignore_errors=True)
for _variable in ("TRACKIO_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
    os.environ[_variable] = os.path.join(_TRACKER_HOME, _variable.lower())
TRACKED = "tensorboard,wandb,trackio"  # what the session's tiny run tracks (tests/train/test_trackers.py)
TRACKER_PROJECT = "microgpt-tests"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a `train` subprocess: offline, with the session's compilation cache."""
    return {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "JAX_COMPILATION_CACHE_DIR": _JAX_CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **extra,
    }  # fmt: skip


def run_cli(args: list[str], *, timeout: float = 120, env: dict | None = None, **kwargs):
    """`python -m microgpt_train.cli ARGS` in a subprocess, with a timeout so nothing hangs."""
    full_env = subprocess_env(**(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "microgpt_train.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run_output(tmp_path_factory, tiny_tokenizer_dir) -> tuple[Path, str]:
    """A finished 6-step run (checkpoints at 3 and 6), tracked by every tracker, and what it printed;
    do not modify (copy it)."""
    from microgpt_train import train

    runs = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    run = tiny_run(
        runs,
        tokenizer=str(tiny_tokenizer_dir),
        grad_accum=2,
        tracker=TRACKED,
        tracker_project=TRACKER_PROJECT,
    )
    run_dir = train(run, log=lines.append)
    return run_dir, "\n".join(lines)


@pytest.fixture(scope="session")
def tiny_run_dir(tiny_run_output) -> Path:
    return tiny_run_output[0]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A 320-token BPE on pydocs, trained once and shared (as `tokenizer=...`)."""
    from microgpt_data import pydocs_texts, train_bpe

    path = tmp_path_factory.mktemp("tokenizer")
    train_bpe(pydocs_texts("train")[:200], TINY_MODEL.vocab_size).save(path)
    return path
