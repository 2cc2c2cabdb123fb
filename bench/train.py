"""microgpt-train benchmark: training tokens/s at the seed configuration, side by side with the peer
(Hugging Face `transformers` GPT-2 on PyTorch, `bench/peer_hf.py --what train --bf16`).

    uv run python bench/train.py                  # ours f32 and bf16, then the peer, one JSON line
    uv run python bench/train.py --no-peer        # ours only
    nice -n -5 uv run python bench/train.py       # on a busy machine
    uv run python bench/train.py --batch 64       # e.g. on an accelerator

The seed configuration (V 8192, D 256, L 4, H 4, T 256, sinusoidal positions, tied and scaled
embeddings, no final norm, dropout 0.1 like the peer), batch 16 x 256, one AdamW step of
`microgpt_train.make_train_step` (warmup + cosine schedule, clipping, donated state): tokens/s = 16 *
256 / seconds of one step (median of --repeats after a compile-and-warm call; `best` is the fastest).
MFU = tokens/s x (6 N + 12 L T D) / peak, with the peak of `microgpt_train.metrics` (on a CPU: the
fastest of 5 timed 1024 x 1024 matmuls the way the model multiplies, inputs in the compute dtype and
float32 accumulation, in this process; printed as `peak_f32_gflops` and `peak_bf16_gflops`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np
from _peer import run_peer
from _timing import rate, stopwatch, timed

from microgpt_train import RunConfig, init_state, make_optimizer, make_train_step
from microgpt_train.config import SEED_MODEL
from microgpt_train.metrics import flops_per_token, peak_flops_per_device


def bench_train(dtype: str, batch: int, repeats: int) -> dict[str, float]:
    config = SEED_MODEL.replace(compute_dtype=dtype)
    run = RunConfig(model=config, batch_size=batch, max_steps=1000, warmup_steps=10)
    optimizer = make_optimizer(run)
    state = jax.jit(lambda k: init_state(k, config, optimizer))(jax.random.PRNGKey(0))
    step = make_train_step(config, optimizer)
    rng = np.random.default_rng(0)
    batches = [
        jax.device_put(rng.integers(0, config.vocab_size, (batch, config.context_length + 1), np.int32))
        for _ in range(repeats + 2)
    ]
    rest = iter(batches)

    def one_step():
        nonlocal state
        state, metrics = step(state, next(rest))
        return metrics

    with stopwatch() as compile_watch:  # the first call compiles
        jax.block_until_ready(one_step())
    times = timed(one_step, repeats, warmup=1, sync=jax.block_until_ready)
    tokens_per_s = rate(batch * config.context_length, times)  # {"median", "best"}
    peak = peak_flops_per_device(config) * jax.device_count()
    return {
        f"train_{dtype_key(dtype)}_tokens_per_s": tokens_per_s["median"],
        f"train_{dtype_key(dtype)}_best_tokens_per_s": tokens_per_s["best"],
        f"train_{dtype_key(dtype)}_mfu": round(tokens_per_s["median"] * flops_per_token(config) / peak, 4),
        f"train_{dtype_key(dtype)}_compile_s": round(compile_watch.seconds, 2),
        f"peak_{dtype_key(dtype)}_gflops": round(peak / 1e9, 1),
    }


def dtype_key(dtype: str) -> str:
    return {"float32": "f32", "bfloat16": "bf16"}[dtype]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (of 256 tokens)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps; the median is reported")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes to measure")
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face / PyTorch peer")
    args = parser.parse_args(argv)
    result: dict = {
        "bench": "train",
        "config": "seed (V 8192, D 256, L 4, H 4, T 256), AdamW, dropout 0.1",
        "batch": args.batch,
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "flops_per_token": flops_per_token(SEED_MODEL),
    }
    for dtype in args.dtypes.split(","):
        result.update(bench_train(dtype, args.batch, args.repeats))
    peer = (
        None
        if args.no_peer
        else run_peer("--what", "train", "--bf16", "--batch", str(args.batch), "--repeats", str(args.repeats))
    )
    if peer is not None:
        result["peer"] = {k: v for k, v in peer.items() if k.startswith("train") or k in ("torch", "threads")}
        ours = lambda key: result.get(key, float("nan"))  # noqa: E731
        result["ratio_vs_peer"] = {
            "train_f32": round(ours("train_f32_tokens_per_s") / peer["train_f32_tokens_per_s"], 2),
            "train_bf16": round(ours("train_bf16_tokens_per_s") / peer["train_bf16_tokens_per_s"], 2),
            "train_bf16_vs_peer_f32": round(
                ours("train_bf16_tokens_per_s") / peer["train_f32_tokens_per_s"], 2
            ),
            "train_f32_best": round(
                ours("train_f32_best_tokens_per_s") / peer["train_f32_best_tokens_per_s"], 2
            ),
            "train_bf16_best": round(
                ours("train_bf16_best_tokens_per_s") / peer["train_bf16_best_tokens_per_s"], 2
            ),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
