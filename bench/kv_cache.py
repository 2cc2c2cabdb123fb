"""KV-cache memory and decode speed against the number of key/value heads (grouped-query attention).

    uv run python bench/kv_cache.py                          # one JSON line per n_kv_heads
    uv run python bench/kv_cache.py --heads 8 --batch 8 --context 1024

A Llama-style model (rotary positions, RMSNorm, SwiGLU, no biases; D 256, L 4, H 8, V 8192, random
weights) with n_kv_heads = H, H/2, ..., 1. For each:
  cache_bytes        the bytes of the `KVCache` that `init_cache` allocates, jitted, for `--batch`
                     rows of `--context` positions (what a generation preallocates): measured
                     as the growth of the bytes of JAX's live arrays when the cache is made, and checked
                     against L x B x Hkv x S x Dh x 2 (keys and values) x the dtype's size;
  ratio_vs_mha       multi-head's cache bytes / this one's (H / Hkv by construction);
  decode_tokens_per_s  greedy `microgpt_infer.engine.generate_tokens` (what users' `generate`
                     runs), 16-token prompt, --new tokens, batch --batch (median of --repeats
                     calls after a compile-and-warm call).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
from _timing import rate, timed

from microgpt_core import GPTConfig, init_cache, init_params
from microgpt_infer.engine import generate_tokens

PROMPT = 16


def live_bytes() -> int:
    return sum(a.nbytes for a in jax.live_arrays())


def measure(config: GPTConfig, batch: int, new: int, repeats: int) -> dict:
    before = live_bytes()
    # Inside jit, as in a generation's prefill (outside it, k and v are one buffer of zeros until written).
    cache = jax.block_until_ready(jax.jit(lambda: init_cache(config, batch, config.context_length))())
    allocated = live_bytes() - before
    expected = 2 * config.n_layers * batch * config.n_kv_heads * config.context_length * config.head_dim
    expected *= jnp.dtype(config.compute_dtype).itemsize
    if allocated != expected or cache.k.nbytes + cache.v.nbytes != expected:
        raise AssertionError(f"cache of {allocated} bytes, expected {expected}")
    del cache
    params = init_params(jax.random.key(0), config)
    prompt = jax.random.randint(jax.random.key(1), (batch, PROMPT), 0, config.vocab_size)
    lengths = jnp.full((batch,), PROMPT)

    def call():
        return generate_tokens(
            params, config, prompt, lengths, rng=jax.random.key(2), max_new_tokens=new, temperature=0.0
        ).tokens

    times = timed(call, repeats, warmup=1, sync=jax.block_until_ready)
    return {"cache_bytes": allocated, "decode_tokens_per_s": rate(batch * new, times)["median"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=8, help="query heads H")
    parser.add_argument("--batch", type=int, default=8, help="rows")
    parser.add_argument("--context", type=int, default=1024, help="positions the cache holds")
    parser.add_argument("--new", type=int, default=128, help="new tokens per decode call")
    parser.add_argument("--repeats", type=int, default=5, help="timed decode calls")
    args = parser.parse_args(argv)
    base = GPTConfig(
        vocab_size=8192, context_length=args.context, d_model=256, n_layers=4, n_heads=args.heads,
        positional="rope", norm="rmsnorm", mlp="swiglu", d_ff=688, bias=False,
    )  # fmt: skip
    kv_heads = [h for h in range(args.heads, 0, -1) if args.heads % h == 0]
    results = {h: measure(base.replace(n_kv_heads=h), args.batch, args.new, args.repeats) for h in kv_heads}
    mha = results[args.heads]["cache_bytes"]
    for h, result in results.items():
        line = {
            "bench": "kv_cache",
            "n_heads": args.heads,
            "n_kv_heads": h,
            "batch": args.batch,
            "context": args.context,
            "cache_mib": round(result["cache_bytes"] / 2**20, 2),
            "ratio_vs_mha": round(mha / result["cache_bytes"], 3),
            "decode_tokens_per_s": result["decode_tokens_per_s"],
            "cpu_count": os.cpu_count(),
            "device": jax.devices()[0].device_kind,
        }
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
