"""Which memory order of the weights decodes fastest? The evidence for the engine's `decode_weights`.

    uv run python bench/decode_layout.py                 # one JSON line
    uv run python bench/decode_layout.py --rounds 21 --batches 1,8

The seed configuration with random weights, a 16-token prompt and 256 new tokens (greedy), as in
`bench/core.py`. A decode step multiplies B rows by every weight matrix, streaming all 21.6 MB of
them from memory, and XLA's CPU dot streams a matrix faster in one order or the other depending on
its shape. Each layout below is the engine's compiled generation itself (`_generate` of
`microgpt_infer.engine.generate`, what `generate` runs), jitted with the engine's compiler options
and with `microgpt_infer.engine.decode.decode_weights` replaced by one that lays the weights out
that way (same numbers, same tokens: the script checks):

  stored     the parameters as saved: every W (Din, Dout), the tied head read as E (V, D) through a
             transpose XLA folds into the dot (what `decode_weights` does)
  head       the tied head copied once per generation to (D, V)
  head+out   that, and the attention and MLP output projections, (D, D) and (F, D), read from
             copies of their transposes

The library once used `head` at every batch and `head+out` at batch 1; measured again, neither paid
(bench/README.md), so both were dropped.

The timed calls of all layouts are interleaved round by round, so they share the minutes of this
shared machine; `time_vs_stored` is the median over rounds of (layout's time / stored's time) in the
same round, with its quartiles. `library` names the layout the engine's `decode_weights` picks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from _args import batch_sizes
from _timing import timed

from microgpt_core import SEED_CONFIG, init_params
from microgpt_core.sampling import STATIC_ARGNAMES
from microgpt_infer.engine import decode, generate
from microgpt_infer.engine.decode import DecodeWeights, decode_weights
from microgpt_infer.engine.options import compiler_options

PROMPT, NEW = 16, 256


def copied(w: jax.Array) -> jax.Array:
    """w as its own array in memory (the barrier keeps XLA from folding a transpose into the dot)."""
    return jax.lax.optimization_barrier(w)


def stored(params, config) -> DecodeWeights:
    return decode_weights(params, config)  # E (V, D) read through a folded transpose


def head(params, config) -> DecodeWeights:
    layers = decode_weights(params, config).layers
    return DecodeWeights(layers, copied(params["embed"]["tokens"].T))  # (D, V) in memory


def head_and_out(params, config) -> DecodeWeights:
    def out_transposed(layer):  # W (Din, Dout) read from a copy of Wᵀ (Dout, Din)
        return {
            **layer,
            "attn": {**layer["attn"], "w_out": copied(layer["attn"]["w_out"].T).T},
            "mlp": {**layer["mlp"], "w_out": copied(layer["mlp"]["w_out"].T).T},
        }

    layers = tuple(out_transposed(layer) for layer in decode_weights(params, config).layers)
    return DecodeWeights(layers, copied(params["embed"]["tokens"].T))


LAYOUTS = {"stored": stored, "head": head, "head+out": head_and_out}


def program(layout, config):
    """The engine's compiled generation, traced with `decode.decode_weights` replaced by `layout`."""

    def generate_with_layout(*args, **kwargs):
        with mock.patch.object(decode, "decode_weights", layout):
            return generate._generate(*args, **kwargs)

    return jax.jit(
        generate_with_layout, static_argnames=STATIC_ARGNAMES, compiler_options=compiler_options(config)
    )


def library_choice(params, config) -> str:
    """The layout the engine's `decode_weights` picks here: "head" when it copies the head, else "stored"."""
    jaxpr = str(jax.make_jaxpr(lambda p: decode_weights(p, config))(params))
    return "head" if "optimization_barrier" in jaxpr else "stored"


def measure(params, config, batch: int, rounds: int) -> dict:
    prompt = jax.random.randint(jax.random.key(1), (batch, PROMPT), 0, config.vocab_size).astype(jnp.int32)
    lengths = jnp.full((batch,), PROMPT, jnp.int32)
    kwargs = dict(
        config=config, max_new_tokens=NEW, temperature=0.0, top_k=None, top_p=None, min_p=None,
        presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, eot_id=None,
    )  # fmt: skip
    calls = {}
    for name, layout in LAYOUTS.items():
        fn = program(layout, config)
        calls[name] = lambda fn=fn: fn(params, prompt, lengths, jax.random.key(0), **kwargs)
    tokens = {name: np.asarray(jax.block_until_ready(fn()).tokens) for name, fn in calls.items()}
    if any(not np.array_equal(t, tokens["stored"]) for t in tokens.values()):
        raise SystemExit(f"batch {batch}: the layouts generated different tokens")
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name] += timed(fn, sync=jax.block_until_ready)
    result: dict = {"library": library_choice(params, config)}
    for name, ts in times.items():
        ratios = [t / s for t, s in zip(ts, times["stored"], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4) if rounds > 1 else [ratios[0]] * 3
        result[name] = {
            "tokens_per_s": round(batch * NEW / statistics.median(ts), 1),
            "time_vs_stored": [round(q, 3) for q in (quartiles[0], statistics.median(ratios), quartiles[2])],
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timed calls per layout")
    parser.add_argument("--batches", type=batch_sizes, default="1,2,4,8", help="comma-separated batch sizes")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    config = SEED_CONFIG.replace(context_length=PROMPT + NEW)
    params = init_params(jax.random.key(0), SEED_CONFIG)
    result: dict = {
        "bench": "decode_layout",
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
    }
    for batch in args.batches:
        result[f"b{batch}"] = measure(params, config, batch, args.rounds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
