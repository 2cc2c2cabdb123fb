"""Speed by default: the public API in fresh, plain processes, side by side with the peer.

    uv run python bench/public_api.py      # 3 rounds: ours (a fresh process per figure), the peer
    uv run python bench/public_api.py --rounds 1 --repeats 5
    uv run python bench/public_api.py --no-peer

What a user who follows the README's "Reuse the core" section runs, in a Python process that sets
nothing else (no environment variable, no XLA option, no allocator setting; this script sets none
either), at the seed configuration (V 8192, D 256, L 4, H 4, T 256, dropout 0.1), batch 16 x 256:

  train   `microgpt_train.make_train_step(config, make_optimizer(run))`: one AdamW step, float32
          and bfloat16 (`compute_dtype`), tokens/s = 16 * 256 / seconds of one step;
  eval    `jax.jit(lambda p, t: microgpt_core.forward(p, t, config))`: logits of 16 x 256 tokens,
          float32 and bfloat16.

Each figure comes from a process of its own (this script run again with `--one WHAT DTYPE`): the
median of --repeats calls after two untimed ones, with the minor page faults and system seconds per
call (`getrusage`: the fresh pages XLA's buffers cost; `faults` in the JSON). The peer
(`bench/peer_hf.py`: Hugging Face GPT-2 on PyTorch, float32 and bf16 autocast) runs after ours, in
the same minutes, and the two alternate for --rounds rounds: a shared VM's speed drifts from minute
to minute, so each round gives its own ratios, and the figures are the medians over rounds. It
prints one JSON line: our figures, the peer's, the ratios (median over rounds) and each round's,
with the CPU named.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from _peer import run_peer

BATCH = 16
KINDS = (("train", "float32"), ("train", "bfloat16"), ("eval", "float32"), ("eval", "bfloat16"))


def measure(what: str, dtype: str, repeats: int) -> dict[str, float]:
    """One figure, in this process: the public API only."""
    import jax
    import numpy as np
    from _timing import rate, timed

    from microgpt_core import SEED_CONFIG, forward, init_params
    from microgpt_train import RunConfig, init_state, make_optimizer, make_train_step

    config = SEED_CONFIG.replace(dropout=0.1, compute_dtype=dtype)
    T = config.context_length
    rng = np.random.default_rng(0)
    if what == "train":
        run = RunConfig(model=config, batch_size=BATCH, max_steps=1000, warmup_steps=10)
        optimizer = make_optimizer(run)
        state = init_state(jax.random.PRNGKey(0), config, optimizer)
        step = make_train_step(config, optimizer)
        batches = iter(
            [rng.integers(0, config.vocab_size, (BATCH, T + 1), np.int32) for _ in range(repeats + 2)]
        )

        def call():
            nonlocal state
            state, metrics = step(state, next(batches))
            return metrics

    else:
        params = init_params(jax.random.PRNGKey(0), config)
        evaluate = jax.jit(lambda p, t: forward(p, t, config))
        tokens = [rng.integers(0, config.vocab_size, (BATCH, T), np.int32) for _ in range(repeats + 2)]
        batches = iter(tokens)
        call = lambda: evaluate(params, next(batches))  # noqa: E731
    times = timed(call, repeats, warmup=2, sync=jax.block_until_ready)
    return {
        **rate(BATCH * T, times),
        "faults_per_call": times.faults_per_call,
        "sys_s_per_call": times.sys_s_per_call,
    }


def _fresh(what: str, dtype: str, repeats: int) -> dict[str, float]:
    """One figure (`measure`'s dict), measured by this script in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", what, dtype, "--repeats", str(repeats)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = {k.strip(): v for k, v in (line.split(":", 1) for line in f if ":" in line)}
        name, family, model = (info[key].strip() for key in ("model name", "cpu family", "model"))
        return f"{name} (family {family} model {model})"
    except (OSError, KeyError):
        return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed calls per figure; the median is reported"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of ours, then the peer (ratios: medians over rounds)"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face / PyTorch peer")
    parser.add_argument("--one", nargs=2, metavar=("WHAT", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.repeats)))
        return 0
    short = {"float32": "f32", "bfloat16": "bf16"}
    ours: dict[str, list[int]] = {f"{what}_{dtype}_tokens_per_s": [] for what, dtype in KINDS}
    peers: dict[str, list[int]] = {}
    ratios: dict[str, list[float]] = {f"{what}_{dtype}": [] for what, dtype in KINDS}
    faults: dict[str, list[list[float]]] = {f"{what}_{dtype}": [] for what, dtype in KINDS}
    for _ in range(args.rounds):
        figures = {f"{what}_{dtype}": _fresh(what, dtype, args.repeats) for what, dtype in KINDS}
        for key, figure in figures.items():
            ours[f"{key}_tokens_per_s"].append(round(figure["median"]))
            faults[key].append([figure["faults_per_call"], figure["sys_s_per_call"]])
        peer_args = ("--what", "eval,train", "--bf16", "--repeats", str(args.repeats))
        peer = None if args.no_peer else run_peer(*peer_args)
        if peer is None:
            continue
        for key, value in peer.items():
            if key.endswith("_tokens_per_s") and "best" not in key:
                peers.setdefault(key, []).append(round(value))
        for what, dtype in KINDS:
            theirs = peer[f"{what}_{short[dtype]}_tokens_per_s"]
            ratios[f"{what}_{dtype}"].append(round(figures[f"{what}_{dtype}"]["median"] / theirs, 2))
    result: dict = {"bench": "public_api", "cpu": cpu_name(), "batch": BATCH, "rounds": args.rounds}
    result["ours"] = {key: round(statistics.median(values)) for key, values in ours.items()}
    result["faults"] = faults  # per figure, per round: [minor page faults, system seconds] per call
    if peers:
        result["peer"] = {key: round(statistics.median(values)) for key, values in peers.items()}
        result["ratio_vs_peer"] = {key: round(statistics.median(values), 2) for key, values in ratios.items()}
        result["round_ratios"] = ratios
        result["rounds_ours"], result["rounds_peer"] = ours, peers
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
