"""What a run trains with, built before it starts and fixed from then on: one frozen `Trainer`.

`build_trainer` opens the training data (a bad source or tokenizer name fails here, before any work
is announced), reads the model to fine-tune (`init_from`), resolves the tokenizer, opens the
training loader, reads the validation batches, builds the initial state on the mesh (from the
source's weights when fine-tuning) and compiles the step. It writes nothing: the run folder is
started afterwards (`loop.py`). The state it returns is not part of the `Trainer`: every step
replaces it, so the loop passes it along explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from microgpt_core import count_params
from microgpt_data import DataSourceError, PackedLoader, Tokenizer, load_text_dataset
from microgpt_data.chats import is_chat_data, load_chat_dataset
from microgpt_infer.run_layout import TRAIN_CONFIG_FILE
from microgpt_train.chat_data import ChatEncoder, count_rows, describe
from microgpt_train.config import RunConfig, RunConfigError
from microgpt_train.init_from import load_source
from microgpt_train.metrics import (
    flops_per_token,
    machine,
    peak_flops_per_device,
    text_bytes,
    unigram_entropy,
)
from microgpt_train.optim import learning_rate_schedule, make_optimizer
from microgpt_train.pipeline import make_loader, resolve_tokenizer
from microgpt_train.sharding import (
    batch_sharding,
    global_batch,
    make_mesh,
    param_shardings,
    state_shardings,
    to_host,
)
from microgpt_train.step import init_state, make_eval_step, make_train_step

__all__ = ["Trainer", "build_trainer"]


@dataclass(frozen=True)
class Trainer:
    """One run's fixed parts, from its config to its compiled step.

    Attributes:
      run: the run config; run_dir: its folder.
      main: whether this is process 0, the one that logs and writes the run's files.
      say: logs a line (a no-op off process 0); warn: writes a warning to stderr (likewise).
      tokenizer: the run's tokenizer.
      chat: whether the data is conversations (batches then carry a loss mask: (B, 2, T+1)).
      loader: this process's training rows, (B_local, T+1) int32 per batch ((B_local, 2, T+1) for
        chat); its position is saved.
      mesh: the device mesh the state and batches live on.
      train_step: the compiled `train_step(state, batch) -> (state, metrics)`, state donated.
      eval_step: `eval_step(params, batch) -> (sum of token losses, number of tokens)`.
      val_batches: the `eval_batches` validation batches, global (B, T+1) arrays on the mesh.
      val_bytes: the bytes of text that every process's validation targets stand for.
      baseline: the unigram entropy of the validation targets, in nats.
      schedule: the learning rate after a number of steps.
      flops: model FLOPs per token; peak: the peak FLOP/s of all devices together (for MFU).
      machine: the machine, in words, for the training summary.
    """

    run: RunConfig
    run_dir: Path
    main: bool
    say: Callable[..., None]
    warn: Callable[[str], None]
    tokenizer: Tokenizer
    chat: bool
    loader: PackedLoader
    mesh: Mesh
    train_step: Any
    eval_step: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
    val_batches: list[jax.Array]
    val_bytes: int
    baseline: float
    schedule: Callable[[int], Any]
    flops: float
    peak: float
    machine: str


def build_trainer(
    run: RunConfig, run_dir: Path, *, main: bool, say, warn, stack: contextlib.ExitStack
) -> tuple[Trainer, dict]:
    """The `Trainer` of `run` and the initial train state (params, optimiser state, step, rng).

    `say` logs the run's summary line, a BPE training (for a run with its own tokenizer) and the
    parameter count. The training loader is closed when `stack` closes.
    """
    chat = is_chat_data(run.data, run.text_column)  # rows of messages: a chat fine-tuning
    if chat and not run.init_from:
        raise RunConfigError(
            f"--data {run.data} holds conversations (rows of messages): chat training fine-tunes a model; "
            "pass --init-from MODEL (default, a model folder, a run folder or a Hub id)"
        )
    train_data = load_chat_dataset(run.data, "train") if chat else load_text_dataset(
        run.data, "train", text_column=run.text_column
    )  # fmt: skip
    source = load_source(run, log=warn) if run.init_from else None  # fine-tuning: weights, tokenizer
    tokenizer = source.tokenizer if source is not None else None
    if tokenizer is None and run.tokenizer:
        tokenizer = resolve_tokenizer(run, run_dir, warn=warn)
    say(f"run {run.name}: {run.summary()}; every setting in {run_dir / TRAIN_CONFIG_FILE}")
    if source is not None:
        say(f"fine-tuning {run.init_from} ({source.source}): its weights, tokenizer and architecture")
    if tokenizer is None:  # the run's own BPE, trained (and said) or read from its cache
        tokenizer = resolve_tokenizer(run, run_dir, log=say, warn=warn, data=train_data)
    encoder = ChatEncoder(tokenizer, run.model.context_length) if chat else None
    if encoder is not None:
        say(_chat_rows(run, encoder))
    loader = stack.enter_context(make_loader(run, tokenizer, "train", dataset=train_data, encode=encoder))
    val_local, baseline, val_bytes = _validation(run, tokenizer, encoder)
    mesh = make_mesh()
    state, train_step = _compile(run, mesh, source.params if source else None, masked=chat)
    trainer = Trainer(
        run=run, run_dir=run_dir, main=main, say=say, warn=warn, tokenizer=tokenizer, chat=chat,
        loader=loader, mesh=mesh, train_step=train_step, eval_step=make_eval_step(run.model),
        val_batches=[global_batch(b, mesh) for b in val_local], val_bytes=val_bytes, baseline=baseline,
        schedule=learning_rate_schedule(run), flops=flops_per_token(run.model),
        peak=peak_flops_per_device(run.model, run.peak_flops) * jax.device_count(), machine=machine(),
    )  # fmt: skip
    say(
        f"{count_params(state['params']):,} parameters on {jax.device_count()} device(s) in "
        f"{jax.process_count()} process(es); unigram baseline of the validation tokens: {baseline:.3f} nats"
    )
    return trainer, state


def _chat_rows(run: RunConfig, encoder: ChatEncoder) -> str:
    """What the run trains on of chat data, and what it leaves out (DataSourceError if nothing)."""
    counts = {split: count_rows((row["text"] for row in load_chat_dataset(run.data, split)), encoder)
              for split in ("train", "validation")}  # fmt: skip
    for split, count in counts.items():
        if not count["kept"]:
            raise DataSourceError(
                f"{run.data} ({split} split): no conversation to train on; {describe(count)}"
            )
    left_out = describe(counts["train"] + counts["validation"])
    return (
        f"{run.data}: {counts['train']['kept']} conversations to train on, {counts['validation']['kept']} "
        f"to validate on{'; ' + left_out if left_out else ''}; the loss counts the assistant's tokens only"
    )


def _validation(
    run: RunConfig, tokenizer: Tokenizer, encoder: ChatEncoder | None
) -> tuple[list[np.ndarray], float, int]:
    """This process's validation batches, their targets' unigram entropy, and the bytes of text the
    targets of every process stand for (for bits per byte); with a loss mask, of the masked targets."""
    with make_loader(run, tokenizer, "validation", shuffle=False, encode=encoder) as val_loader:
        val_local = [next(val_loader) for _ in range(run.eval_batches)]
    batches = np.stack(val_local)  # (eval_batches, B_local, T+1), or (..., 2, T+1) with a mask
    # (eval_batches, B_local, T), or the targets the mask counts, flat
    targets = batches[..., 1:] if encoder is None else batches[..., 0, 1:][batches[..., 1, 1:] == 1]
    local = np.asarray([text_bytes(targets, tokenizer)], np.int64)
    return val_local, unigram_entropy(targets), int(to_host(local).sum())


def _compile(run: RunConfig, mesh: Mesh, params: Any = None, *, masked: bool = False) -> tuple[dict, Any]:
    """The initial state (from `params` when fine-tuning, else fresh), laid out on `mesh` (FSDP or
    replicated), and the train step compiled for it (compiled before the run starts, so a run that
    cannot compile leaves no trace)."""
    config = run.model
    optimizer = make_optimizer(run)
    init = lambda k, p: init_state(k, config, optimizer, params=p)  # noqa: E731
    shape = jax.eval_shape(init, jax.random.PRNGKey(run.seed), params)
    shardings = state_shardings(shape, param_shardings(shape["params"], config, mesh, fsdp=run.fsdp), mesh)
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(run.seed), params)
    rows = batch_sharding(mesh)
    step = make_train_step(
        config, optimizer, grad_accum=run.grad_accum, state_sharding=shardings, batch_sharding=rows
    )
    shape = (run.batch_size, *((2,) if masked else ()), config.context_length + 1)  # (B, [2,] T+1)
    batch = jax.ShapeDtypeStruct(shape, np.int32, sharding=rows)
    return state, step.lower(state, batch).compile()
