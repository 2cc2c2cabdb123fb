"""Comparing run configs at the same wall-clock budget (bench/architectures.py, bench/optimizers.py).

    costs = step_costs(runs, rounds=7, base="adamw")   # each run's step time / the base's, interleaved
    for seed, name in product(seeds, runs):            # A B A B: both see the same minutes
        record = train_and_evaluate(runs[name], steps=round(base_steps / costs[name]), seed=seed)

1. One training step of each run is timed in interleaved rounds (each round times every run once, in
   a rotating order), and its cost is the median over rounds of its time / the base run's time.
2. Each run trains with `microgpt_train.train` for the base's steps / its cost: the base's
   wall-clock budget on this machine. The steps are computed before training and the losses depend
   only on the steps (seeded), so a busy machine changes no loss.
3. Each run's model is evaluated on the whole pydocs validation split (`evaluate_model`).
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import numpy as np
from _timing import timed

from microgpt_infer.card import SUMMARY_FILE
from microgpt_infer.run_layout import MODEL_DIR
from microgpt_train import RunConfig, evaluate_model, init_state, make_optimizer, make_train_step
from microgpt_train.loop import train

__all__ = ["step_costs", "step_timer", "train_and_evaluate"]


def step_timer(run: RunConfig):
    """A callable that runs one training step of `run` (its model and optimiser) on random tokens."""
    config = run.model
    optimizer = make_optimizer(run)
    state = jax.jit(lambda k: init_state(k, config, optimizer))(jax.random.PRNGKey(0))
    step = make_train_step(config, optimizer)
    batch = jax.device_put(
        np.random.default_rng(0).integers(0, config.vocab_size, (run.batch_size, config.context_length + 1))
    ).astype(np.int32)

    def one_step():
        nonlocal state
        state, metrics = step(state, batch)
        return metrics

    jax.block_until_ready(one_step())  # compile
    return one_step


def step_costs(runs: dict[str, RunConfig], rounds: int, base: str) -> dict[str, float]:
    """Median over interleaved rounds of each run's step time / the `base` run's."""
    timers = {name: step_timer(run) for name, run in runs.items()}
    names = list(timers)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds[name].append(
                float(np.median(timed(timers[name], 3, warmup=1, sync=jax.block_until_ready)))
            )
    reference = np.asarray(seconds[base])
    return {name: float(np.median(np.asarray(s) / reference)) for name, s in seconds.items()}


def train_and_evaluate(run: RunConfig, *, steps: int, seed: int) -> dict:
    """Trains `run` (named NAME-seedS) for `steps` steps, its warmup cut to fit, and evaluates it on
    the whole pydocs validation split: {"steps", "train_seconds", "validation_loss", "validation_tokens"}."""
    run = dataclasses.replace(
        run,
        name=f"{run.name}-seed{seed}",
        seed=seed,
        max_steps=steps,
        warmup_steps=min(run.warmup_steps, steps),
    )
    start = time.perf_counter()
    folder = train(run, log=lambda *a, **k: None)
    seconds = time.perf_counter() - start
    result = evaluate_model(folder, "pydocs", batches=100_000, batch_size=16)
    summary = json.loads((folder / MODEL_DIR / SUMMARY_FILE).read_text())
    return {
        "steps": steps,
        "train_seconds": round(summary.get("train_seconds", seconds), 1),
        "validation_loss": round(result["loss"], 4),
        "validation_tokens": result["tokens"],
    }
