"""AdamW against Muon (+ AdamW) on a preset's recipe, at the same wall-clock budget.

    uv run python bench/optimizers.py --seeds 0,1,2                    # the quickstart recipe
    uv run python bench/optimizers.py --preset default --seeds 0,1,2
    uv run python bench/optimizers.py --preset default --estimate      # step costs and minutes only

Both runs are the preset as it is but for `optimizer`: adamw (AdamW on every parameter at the
preset's learning rate), and muon (Muon on the blocks' projection matrices at `muon_learning_rate`,
0.02, momentum 0.95; AdamW at the preset's rate on embeddings, head, norms and biases). Each step's
cost is timed against AdamW's in interleaved rounds; then, seed by seed, AdamW trains for the
preset's steps and Muon for the preset's steps / its cost (AdamW's wall-clock budget on this
machine), one after the other (A B A B), and each model is evaluated on the whole pydocs validation
split (`_equal_time.py`). One JSON line per run, with the CPU. `--estimate` prints the step costs
and the minutes the runs would train, and trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import jax
from _equal_time import step_costs, step_timer, train_and_evaluate
from _timing import timed

from microgpt_train import PRESETS
from microgpt_train.config import OPTIMIZERS
from microgpt_train.metrics import cpu_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quickstart", choices=["quickstart", "default"])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (each optimiser)")
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)"
    )
    parser.add_argument("--estimate", action="store_true", help="step costs and minutes only; no training")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    preset = PRESETS[args.preset]
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="microgpt-optim-"))
    runs = {
        name: dataclasses.replace(preset, name=name, runs_dir=str(runs_dir), optimizer=name, progress=False)
        for name in OPTIMIZERS
    }
    costs = step_costs(runs, args.rounds, base="adamw")
    steps = {name: max(1, round(preset.max_steps / costs[name])) for name in runs}
    common = {"bench": "optimizers", "preset": args.preset, "cpu": cpu_model(), "cores": os.cpu_count()}
    if args.estimate:
        adamw_step = statistics.median(
            timed(step_timer(runs["adamw"]), 5, warmup=1, sync=jax.block_until_ready)
        )
        minutes = len(seeds) * len(runs) * preset.max_steps * adamw_step / 60
        estimate = {"adamw_step_s": round(adamw_step, 3), "training_minutes_all_runs": round(minutes, 1)}
        print(json.dumps({**common, "step_costs_vs_adamw": costs, "steps": steps, **estimate}))
        return 0
    for seed, name in itertools.product(seeds, runs):
        record = train_and_evaluate(runs[name], steps=steps[name], seed=seed)
        print(
            json.dumps(
                {
                    **common,
                    "optimizer": name,
                    "seed": seed,
                    "step_cost_vs_adamw": round(costs[name], 3),
                    **record,
                }
            ),  # fmt: skip
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
