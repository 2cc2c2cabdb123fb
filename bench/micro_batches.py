"""How many tokens per micro-batch should a CPU train step run? The evidence for `CPU_MICRO_TOKENS`.

    uv run python bench/micro_batches.py                       # 512, 1024, 2048 and the whole batch
    uv run python bench/micro_batches.py --budgets 1024,4096 --dtypes float32

`microgpt_train.make_train_step` at the seed configuration (batch 16 x 256, dropout 0.1), in a fresh
process per figure that sets nothing, with `microgpt_train.step.CPU_MICRO_TOKENS[dtype]` set to each
budget (4096 = the whole batch in one piece). For each: tokens/s (median of --repeats steps after two
untimed ones), the minor page faults and system seconds per step (`getrusage`: the fresh pages the
step's buffers cost), and the process's peak resident memory. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def measure(budget: int, dtype: str, repeats: int) -> dict[str, float]:
    import resource

    import jax
    import numpy as np
    from _timing import rate, timed

    import microgpt_train.step as step_module
    from microgpt_core import SEED_CONFIG
    from microgpt_train import RunConfig, init_state, make_optimizer, make_train_step

    step_module.CPU_MICRO_TOKENS = {**step_module.CPU_MICRO_TOKENS, dtype: budget}
    config = SEED_CONFIG.replace(dropout=0.1, compute_dtype=dtype)
    B, T = 16, config.context_length
    run = RunConfig(model=config, batch_size=B, max_steps=1000, warmup_steps=10)
    optimizer = make_optimizer(run)
    state = init_state(jax.random.PRNGKey(0), config, optimizer)
    step = make_train_step(config, optimizer)
    rng = np.random.default_rng(0)
    batches = iter([rng.integers(0, config.vocab_size, (B, T + 1), np.int32) for _ in range(repeats + 2)])

    def call():
        nonlocal state
        state, metrics = step(state, next(batches))
        return metrics

    times = timed(call, repeats, warmup=2, sync=jax.block_until_ready)
    return {
        "tokens_per_s": round(rate(B * T, times)["median"]),
        "faults_per_step": times.faults_per_call,
        "sys_s_per_step": times.sys_s_per_call,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="512,1024,2048,4096", help="tokens per micro-batch to try")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes to measure")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps; the median is reported")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1], args.repeats)))
        return 0
    result: dict = {"bench": "micro_batches", "config": "seed, batch 16 x 256, dropout 0.1"}
    for dtype in args.dtypes.split(","):
        for budget in args.budgets.split(","):
            command = [sys.executable, str(Path(__file__).resolve()), "--one", budget, dtype]
            out = subprocess.run([*command, "--repeats", str(args.repeats)], capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            result[f"{dtype}_{budget}"] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
