"""The quickstart recipe with a GPT-2 block against Llama-style blocks, at the same wall-clock budget.

    uv run python bench/architectures.py                 # every variant: one JSON line per variant
    uv run python bench/architectures.py --variants gpt2,llama --rounds 9

Variants (all on the quickstart recipe: V 2048, T 128, D 128, L 2, H 4, bfloat16, batch 16, tied
embeddings, its learning-rate schedule, but AdamW, as when the figures in bench/README.md were taken;
seeds from --seeds):
  gpt2         learned positions, LayerNorm, GELU MLP (F = 4D = 512), biases (the quickstart until
               this comparison)
  llama        rotary positions, RMSNorm, SwiGLU (F = 352: three matrices of 352 hold about as many
               weights as two of 512), grouped-query attention (2 key/value heads), no biases (the
               quickstart since)
  llama-qknorm llama with QK-norm

Each variant's step cost is timed against GPT-2's in interleaved rounds, then it trains for the
preset's steps / its cost (GPT-2's wall-clock budget) and is evaluated on the whole pydocs
validation split (`_equal_time.py`). Runs go to a temporary folder (or --runs-dir). Prints the CPU
with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

from _equal_time import step_costs, train_and_evaluate

from microgpt_train import PRESETS
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
            optimizer="adamw",
            progress=False,
        )  # fmt: skip
        for name in names
    }
    costs = step_costs(runs, args.rounds, base="gpt2")
    for seed, (name, run) in itertools.product(map(int, args.seeds.split(",")), runs.items()):
        steps = max(1, round(QUICKSTART.max_steps / costs[name]))
        record = train_and_evaluate(run, steps=steps, seed=seed)
        print(
            json.dumps(
                {
                    "bench": "architectures",
                    "variant": name,
                    "changes": VARIANTS[name],
                    "seed": seed,
                    "step_cost_vs_gpt2": round(costs[name], 3),
                    **record,
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
