"""How many copies of the KV cache does the compiled decode loop make per token?

    uv run python bench/decode_copies.py                 # one JSON line
    uv run python bench/decode_copies.py --batch 8

Compiles the engine's generation (`microgpt_infer.engine.generate._generate`, what
`microgpt_infer.engine.generate_tokens` and users' `generate` run) for the seed configuration
(16-token prompt, 256 new tokens) with the options `microgpt_infer.engine.options.compiler_options`
picks, and with each of them left out in turn, then counts, in the body of each `while` loop of the
optimised HLO, the `copy` instructions whose result has the shape of one layer's cache (B, Hkv, S,
Dh), counting the computations the body calls (the branches of `decode.step_windows`' windows).
In the decode loop each such copy is a full pass over that layer's cache on every token: it
should update the caches in place (0). The prefill scan runs once per generation (it materialises
each layer's empty cache).
"""

from __future__ import annotations

import argparse
import json
import os
import re

import jax
import jax.numpy as jnp

from microgpt_core import SEED_CONFIG, init_params
from microgpt_core.sampling import STATIC_ARGNAMES
from microgpt_infer.engine import decode, generate
from microgpt_infer.engine.options import compiler_options

PROMPT, NEW = 16, 256


def cache_copies(params, config, batch: int, options: dict) -> dict[str, int]:
    """Copies of a one-layer cache array in the body of each while loop of the generation compiled
    with `options`: {"decode loop": n, "prefill scan": n} (the loops told apart by their trip count:
    the prefill scan runs once per layer, the decode loop once per new token after the first)."""
    static = (*STATIC_ARGNAMES, "windows")
    program = jax.jit(generate._generate, static_argnames=static, compiler_options=options)
    prompt, lengths = jnp.zeros((batch, PROMPT), jnp.int32), jnp.full((batch,), PROMPT, jnp.int32)
    windows = decode.step_windows(params, config, batch, PROMPT, PROMPT + NEW - 1)  # the engine's choice
    hlo = program.lower(
        params, prompt, lengths, jax.random.key(0), config=config, max_new_tokens=NEW,
        temperature=0.0, top_k=None, top_p=None, min_p=None, presence_penalty=0.0,
        frequency_penalty=0.0, repetition_penalty=1.0, eot_id=None, windows=windows,
    ).compile().as_text()  # fmt: skip
    # The loop carries each layer's cache as the bit patterns of its numbers (`decode.bits`).
    dtype = {"float32": "u32", "bfloat16": "u16"}[config.compute_dtype]
    shape = f"{dtype}[{batch},{config.n_kv_heads},{PROMPT + NEW - 1},{config.head_dim}]"
    loops = {}
    for line in hlo.splitlines():
        if " while(" not in line:
            continue
        body = re.search(r"body=%?([\w.\-]+)", line).group(1)
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
        name = {str(config.n_layers): "prefill scan", str(NEW - 1): "decode loop"}.get(
            trips.group(1) if trips else "", f"loop {body}"
        )
        copies = sum(1 for op in _called(hlo, body) if " copy(" in op and shape in op)
        loops[name] = loops.get(name, 0) + copies
    return loops


def _called(hlo: str, name: str, seen: set[str] | None = None) -> list[str]:
    """The instructions of computation `name` and of those it calls (a conditional's branches, a
    fusion, a call), each computation once."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    start = hlo.index(f"%{name} ")
    lines = hlo[start : hlo.index("\n}\n", start)].splitlines()
    for line in lines:
        for group in re.findall(r"(?:branch_computations|calls|to_apply)=\{?([^}\s]*(?:, [^}\s]*)*)", line):
            for callee in group.split(", "):
                lines += _called(hlo, callee.strip("%{},"), seen)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="rows decoded together")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    config = SEED_CONFIG.replace(context_length=PROMPT + NEW, compute_dtype=args.dtype)
    params = init_params(jax.random.key(0), SEED_CONFIG)
    options = compiler_options(config)
    result: dict = {
        "bench": "decode_copies",
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "batch": args.batch,
    }
    result["cache_copies"] = {"chosen options": cache_copies(params, config, args.batch, options)}
    for left_out in options:
        rest = {k: v for k, v in options.items() if k != left_out}
        result["cache_copies"][f"without {left_out}"] = cache_copies(params, config, args.batch, rest)
    result["options"] = options
    print(json.dumps(result))


if __name__ == "__main__":
    main()
