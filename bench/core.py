"""microgpt-core benchmark, side by side with the peer (Hugging Face `transformers` GPT-2 on PyTorch).

    uv run python bench/core.py                  # ours, then the peer in its side venv, one JSON line
    uv run python bench/core.py --no-peer        # ours only
    MICROGPT_PEER_PYTHON=/path/to/python uv run python bench/core.py

The seed configuration (the original microGPT: V 8192, D 256, 4 layers, 4 heads, sinusoidal positions,
tied and scaled embeddings, no final norm), random weights, this machine's CPU. Measured:

  decode    KV-cached greedy decoding, 16-token prompt, 256 new tokens, batch 1 and 8: tokens/s =
            batch * 256 / seconds of one `microgpt_infer.engine.generate_tokens` call (what users'
            `generate` runs: the fast decode step with its compiler options; prefill included,
            compiled before).
            16 + 256 positions exceed the seed's 256-token context: both models are built with 272
            positions for this (sinusoidal positions have no table, so our parameters are unchanged).
            The peer's calls are interleaved with ours, one after each (`PeerServer`): the decode
            speed of this shared VM drifts from minute to minute, and a ratio of figures taken
            minutes apart drifts with it. `decode_bN_round_ratios` gives each round's ratio.
  eval      `forward` over batch 16 x 256, float32 and bfloat16 compute, the model alone: the plain
            `jax.jit(lambda p, t: forward(p, t, config))`, with no compiler options, the layers as
            their scan, the whole batch in one call (`evaluate`'s eval step splits it into
            micro-batches on CPU; this is not that step): tokens/s.
  cold50    a fresh process: `load_pretrained` of a saved model, then a 50-token greedy generation
            with the engine's `generate_tokens`, compilation included: seconds of that first call
            (`cold50_first_call_s`) and from the process start, imports included
            (`cold50_process_s`).

Each figure is the median of --repeats timed calls after a warmup (`*_best` is the fastest call, for
a machine shared with other work). The peer runs `bench/peer_hf.py` in the side venv of
DEVELOPERS.md in the same invocation, so ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
from _peer import PeerServer, interleave, run_peer
from _timing import rate, timed

from microgpt_core import SEED_CONFIG as SEED
from microgpt_core import GPTConfig, forward, init_params, save_pretrained
from microgpt_infer.engine import generate_tokens

PROMPT, NEW = 16, 256


def bench_decode(params, config: GPTConfig, batch: int, repeats: int, peer: PeerServer | None) -> dict:
    """Ours, and the peer's call right after each of ours when `peer` is given."""
    prompt = jax.random.randint(jax.random.key(1), (batch, PROMPT), 0, config.vocab_size)
    lengths = jnp.full((batch,), PROMPT)
    run = lambda: (
        generate_tokens(
            params, config, prompt, lengths, rng=jax.random.key(0), max_new_tokens=NEW, temperature=0
        ).tokens
    )
    ours, theirs = interleave(lambda: timed(run, sync=jax.block_until_ready)[0], peer, batch, repeats)
    result = {"ours": rate(batch * NEW, ours)}
    if peer is not None:
        result["peer"] = rate(batch * NEW, theirs)
        result["round_ratios"] = [round(p / o, 2) for o, p in zip(ours, theirs, strict=True)]
    return result


def bench_eval(params, config: GPTConfig, repeats: int) -> dict[str, float]:
    tokens = jax.random.randint(jax.random.key(2), (16, 256), 0, config.vocab_size)
    fn = jax.jit(lambda p, t: forward(p, t, config))
    return rate(16 * 256, timed(lambda: fn(params, tokens), repeats, warmup=2, sync=jax.block_until_ready))


COLD = """
import time, sys
start = time.perf_counter()
import jax, jax.numpy as jnp
from microgpt_core import load_pretrained
from microgpt_infer.engine import generate_tokens
params, config = load_pretrained(sys.argv[1])
first = time.perf_counter()
out = generate_tokens(params, config, jnp.zeros((1, 16), jnp.int32), jnp.array([16]),
                      rng=jax.random.key(0), max_new_tokens=50, temperature=0)
out.tokens.block_until_ready()
end = time.perf_counter()
print(end - first, end - start)
"""


def bench_cold(params, config: GPTConfig, runs: int = 3) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(tmp, params, config)
        first, total = [], []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", COLD, tmp], capture_output=True, text=True, check=True
            )
            a, b = map(float, out.stdout.split())
            first.append(a)
            total.append(b)
    return {
        "first_call_s": round(statistics.median(first), 3),
        "process_s": round(statistics.median(total), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per figure (median reported)")
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face / PyTorch peer")
    args = parser.parse_args(argv)

    decode_config = SEED.replace(context_length=PROMPT + NEW)
    params = init_params(jax.random.key(0), SEED)
    result: dict = {"bench": "core", "config": SEED.to_dict(), "jax": jax.__version__, "cpus": os.cpu_count()}
    server = None if args.no_peer else PeerServer.start()
    try:
        decode = {batch: bench_decode(params, decode_config, batch, args.repeats, server) for batch in (1, 8)}
    finally:
        if server is not None:
            server.close()
    for batch, figures in decode.items():
        result[f"decode_b{batch}_tokens_per_s"] = figures["ours"]
    result["eval_f32_tokens_per_s"] = bench_eval(params, SEED, args.repeats)
    result["eval_bf16_tokens_per_s"] = bench_eval(
        params, SEED.replace(compute_dtype="bfloat16"), args.repeats
    )
    result["cold50"] = bench_cold(params, decode_config)

    peer_args = ("--what", "first50,eval", "--bf16", "--repeats", str(args.repeats))
    peer = None if args.no_peer else run_peer(*peer_args)
    if peer is not None:
        for batch, figures in decode.items():  # interleaved with ours, above
            peer[f"decode_b{batch}_tokens_per_s"] = figures["peer"]["median"]
            peer[f"decode_b{batch}_best_tokens_per_s"] = figures["peer"]["best"]
            result[f"decode_b{batch}_round_ratios"] = figures["round_ratios"]
        result["peer"] = peer
        ours = lambda key: result[key]["median"]
        result["ratio_vs_peer"] = {
            "decode_b1": round(ours("decode_b1_tokens_per_s") / peer["decode_b1_tokens_per_s"], 2),
            "decode_b8": round(ours("decode_b8_tokens_per_s") / peer["decode_b8_tokens_per_s"], 2),
            "eval_f32": round(ours("eval_f32_tokens_per_s") / peer["eval_f32_tokens_per_s"], 2),
            "eval_bf16_vs_peer_f32": round(ours("eval_bf16_tokens_per_s") / peer["eval_f32_tokens_per_s"], 2),
            "eval_bf16_vs_peer_bf16": round(
                ours("eval_bf16_tokens_per_s") / peer["eval_bf16_tokens_per_s"], 2
            ),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
