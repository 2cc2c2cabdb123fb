"""How many copies of the KV cache does the compiled decode loop make per token?

    uv run python bench/decode_copies.py                 # one JSON line
    uv run python bench/decode_copies.py --batch 8

Compiles `generate_tokens`'s generation for the seed configuration (16-token prompt, 256 new tokens)
with the options `fastpath.compiler_options(config, decode=True)` picks, and with each of them left
out in turn, then counts, in the body of the decode `while` loop of the optimised HLO, the `copy`
instructions whose result has the shape of one layer's cache (B, H, S, Dh). Each such copy is a
full pass over that layer's cache on every token; the loop should update the caches in place (0).
"""

from __future__ import annotations

import argparse
import json
import os
import re

import jax
import jax.numpy as jnp

from microgpt_core import SEED_CONFIG, init_params, sampling
from microgpt_core.fastpath import compiler_options

PROMPT, NEW = 16, 256
STATIC = ("config", "max_new_tokens", "temperature", "top_k", "top_p", "eot_id")


def cache_copies(params, config, batch: int, options: dict) -> int:
    """Copies of a one-layer cache array in the decode loop's body, compiled with `options`."""
    program = jax.jit(sampling._generate, static_argnames=STATIC, compiler_options=options)
    prompt, lengths = jnp.zeros((batch, PROMPT), jnp.int32), jnp.full((batch,), PROMPT, jnp.int32)
    hlo = program.lower(
        params, prompt, lengths, jax.random.key(0), config=config, max_new_tokens=NEW,
        temperature=0.0, top_k=None, top_p=None, eot_id=None,
    ).compile().as_text()  # fmt: skip
    dtype = {"float32": "f32", "bfloat16": "bf16"}[config.compute_dtype]
    shape = f"{dtype}[{batch},{config.n_heads},{PROMPT + NEW - 1},{config.head_dim}]"
    copies = 0
    for body in re.findall(r"body=%?([\w.\-]+)", hlo):
        start = hlo.index(f"%{body} ")
        computation = hlo[start : hlo.index("\n}\n", start)]
        copies += sum(1 for line in computation.splitlines() if " copy(" in line and shape in line)
    return copies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="rows decoded together")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    config = SEED_CONFIG.replace(context_length=PROMPT + NEW, compute_dtype=args.dtype)
    params = init_params(jax.random.key(0), SEED_CONFIG)
    options = compiler_options(config, decode=True)
    result: dict = {
        "bench": "decode_copies",
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "batch": args.batch,
    }
    result["copies_per_token"] = {"chosen options": cache_copies(params, config, args.batch, options)}
    for left_out in options:
        rest = {k: v for k, v in options.items() if k != left_out}
        result["copies_per_token"][f"without {left_out}"] = cache_copies(params, config, args.batch, rest)
    result["options"] = options
    print(json.dumps(result))


if __name__ == "__main__":
    main()
