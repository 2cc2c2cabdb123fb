"""The quickstart recipe with a GPT-2 block against Llama-style blocks, at the same wall-clock budget.

    uv run python bench/architectures.py                 # every variant: one JSON line per variant
    uv run python bench/architectures.py --variants gpt2,llama --rounds 9

Variants (all on the quickstart recipe: V 2048, T 128, D 128, L 2, H 4, bfloat16, batch 16, tied
embeddings, its learning-rate schedule; seeds from --seeds):
  gpt2         learned positions, LayerNorm, GELU MLP (F = 4D = 512), biases (the quickstart until
               this comparison)
  llama        rotary positions, RMSNorm, SwiGLU (F = 352: three matrices of 352 hold about as many
               weights as two of 512), grouped-query attention (2 key/value heads), no biases (the
               quickstart since)
  llama-qknorm llama with QK-norm

1. One training step of each variant is timed in interleaved rounds (each round times every variant
   once, in a rotating order), and its cost is the median over rounds of its time / GPT-2's time.
2. Each variant trains with `microgpt_train.train` for the preset's steps / its cost: the same
   wall-clock budget as GPT-2's preset run on this machine. The steps are computed before training,
   and the losses depend only on the steps (seeded), so a busy machine changes no loss.
3. Each run's model is evaluated on the whole pydocs validation split (`evaluate_model`).
Runs go to a temporary folder (or --runs-dir). Prints the CPU with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from _timing import timed

from microgpt_infer.card import SUMMARY_FILE
from microgpt_infer.run_layout import MODEL_DIR
from microgpt_train import PRESETS, evaluate_model, init_state, make_optimizer, make_train_step
from microgpt_train.loop import train
from microgpt_train.metrics import cpu_model

QUICKSTART = PRESETS["quickstart"]
GPT2 = dict(
    positional="learned", norm="layernorm", mlp="gelu", d_ff=512, n_kv_heads=4, bias=True, qk_norm=False
)
LLAMA = dict(
    positional="rope", norm="rmsnorm", mlp="swiglu", d_ff=352, n_kv_heads=2, bias=False, qk_norm=False
)
VARIANTS = {
    "gpt2": GPT2,
    "llama": LLAMA,
    "llama-qknorm": {**LLAMA, "qk_norm": True},
}


def step_timer(run):
    """A callable that runs one training step of `run`'s model on random tokens."""
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


def step_costs(runs: dict, rounds: int) -> dict[str, float]:
    """Median over interleaved rounds of each variant's step time / GPT-2's."""
    timers = {name: step_timer(run) for name, run in runs.items()}
    names = list(timers)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds[name].append(
                float(np.median(timed(timers[name], 3, warmup=1, sync=jax.block_until_ready)))
            )
    base = np.asarray(seconds["gpt2"])
    return {name: float(np.median(np.asarray(s) / base)) for name, s in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {list(VARIANTS)} (gpt2 always)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated training seeds (each variant, each seed)"
    )
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    names = ["gpt2", *[v for v in args.variants.split(",") if v and v != "gpt2"]]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; valid: {list(VARIANTS)}")
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="microgpt-arch-"))
    runs = {
        name: dataclasses.replace(
            QUICKSTART,
            name=name,
            runs_dir=str(runs_dir),
            model=QUICKSTART.model.replace(**VARIANTS[name]),
            progress=False,
        )  # fmt: skip
        for name in names
    }
    costs = step_costs(runs, args.rounds)
    for seed, (name, run) in itertools.product(map(int, args.seeds.split(",")), runs.items()):
        steps = max(1, round(QUICKSTART.max_steps / costs[name]))
        run = dataclasses.replace(
            run,
            name=f"{name}-seed{seed}",
            seed=seed,
            max_steps=steps,
            warmup_steps=min(run.warmup_steps, steps),
        )
        start = time.perf_counter()
        folder = train(run, log=lambda *a, **k: None)
        seconds = time.perf_counter() - start
        result = evaluate_model(folder, "pydocs", batches=100_000, batch_size=16)
        summary = json.loads((folder / MODEL_DIR / SUMMARY_FILE).read_text())
        print(
            json.dumps(
                {
                    "bench": "architectures",
                    "variant": name,
                    "changes": VARIANTS[name],
                    "seed": seed,
                    "step_cost_vs_gpt2": round(costs[name], 3),
                    "steps": steps,
                    "train_seconds": round(summary.get("train_seconds", seconds), 1),
                    "validation_loss": round(result["loss"], 4),
                    "validation_tokens": result["tokens"],
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
