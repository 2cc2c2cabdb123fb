"""How fast can a KV-cached decode loop go on this machine? An upper bound, side by side with the peer.

    uv run python bench/decode_bound.py              # ours, the bound and the peer, interleaved
    uv run python bench/decode_bound.py --no-peer

The seed configuration with random weights, a 16-token prompt and 256 new tokens (greedy), as in
`bench/core.py`. Two programs run in one process and the peer in its side venv (`bench/_peer.py`'s
`PeerServer`), their timed calls interleaved round by round so all three see the same minutes of
this shared machine:

  generate   `microgpt_infer.engine.generate_tokens`, the generation users' `generate` runs: the
             prefill, then the decode loop, where each token attends over the KV cache of every
             earlier position.
  bound      the same loop with every cost of a decode step except the cache: embedding, per layer
             the layer norms, the q/k/v projection, attention over **one** key (the token itself, so
             no cache is written or read), the output projection and the MLP, then the logits
             and the greedy choice. It streams the same 21.6 MB of float32 weights per step, laid
             out by the engine's `decode.decode_weights`, through the same XLA matmuls, jitted with
             the engine's compiler options (`engine.options.compiler_options`). It starts from the
             prompt's last token and has no prefill: a `generate_tokens` call for one new
             token (prefill, empty cache, call overhead) took 4.8 ms at batch 1 and 12 ms at batch 8,
             about 2% of a 256-token call, so `generate / bound` is low by at most that much.
  peer       Hugging Face `transformers` GPT-2 `generate`, greedy, as `bench/peer_hf.py` decode.

No decode loop that attends over a cache can beat `bound` with these matmuls, so `bound / peer` caps
the ratio any attention kernel could reach here; `generate / bound` is the share of the step that
attention over the cache leaves. Each figure is the median (and best) of --rounds calls.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
from _peer import PeerServer
from _timing import rate, timed

from microgpt_core import SEED_CONFIG, init_params
from microgpt_core.layers import attention, embed, layer_norm, linear, merge_heads, mlp, qkv_heads
from microgpt_core.sampling import greedy
from microgpt_infer.engine import generate_tokens
from microgpt_infer.engine.decode import decode_weights
from microgpt_infer.engine.options import compiler_options

PROMPT, NEW = 16, 256


def bound_program(config):
    """A jitted greedy decode of NEW - 1 steps whose attention sees only the current token."""

    def step(params, weights, token, position):
        x = embed(params["embed"], token[:, None], position[:, None], config=config)  # (B, 1, D)
        self_only = jnp.ones((1, 1, 1, 1), bool)  # (B, H, T, S) with S = 1: the token itself
        for layer in weights.layers:
            h = layer_norm(layer["ln1"], x, eps=config.norm_eps)  # (B, 1, D)
            q, k, v = qkv_heads(layer["attn"], h, position[:, None], config=config)  # each (B, H, 1, Dh)
            x = x + merge_heads(layer["attn"], attention(q, k, v, self_only, config=config), config=config)
            x = x + mlp(layer["mlp"], layer_norm(layer["ln2"], x, eps=config.norm_eps), config=config)
        return greedy(linear(x, weights.head, compute_dtype=config.compute_dtype)[:, 0])  # (B,)

    def run(params, first):
        B = first.shape[0]
        weights = decode_weights(params, config)  # once, outside the loop, as the engine does

        def body(i, carry):
            out, token = carry
            token = step(params, weights, token, jnp.full((B,), PROMPT + i, jnp.int32))
            return out.at[:, i + 1].set(token), token

        out = jnp.zeros((B, NEW), jnp.int32).at[:, 0].set(first)
        return jax.lax.fori_loop(0, NEW - 1, body, (out, first))[0]  # (B, NEW)

    return jax.jit(run, compiler_options=compiler_options(config))


def measure(params, config, batch: int, rounds: int, peer: PeerServer | None) -> dict:
    prompt = jax.random.randint(jax.random.key(1), (batch, PROMPT), 0, config.vocab_size)
    lengths = jnp.full((batch,), PROMPT)
    bound = bound_program(config)
    first = prompt[:, -1]

    def seconds(fn):
        return lambda: timed(fn, sync=jax.block_until_ready)[0]

    calls = {  # each makes one call and returns its seconds
        "generate": seconds(
            lambda: (
                generate_tokens(
                    params, config, prompt, lengths, rng=jax.random.key(0), max_new_tokens=NEW, temperature=0
                ).tokens
            )
        ),
        "bound": seconds(lambda: bound(params, first)),
    }
    if peer is not None:  # its call follows ours in every round, timed by the peer itself
        calls["peer"] = lambda: peer.decode_seconds(batch)
    for call in calls.values():  # compile and warm up
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(call())
    return {name: rate(batch * NEW, ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timed calls per program")
    parser.add_argument("--no-peer", action="store_true", help="skip the Hugging Face / PyTorch peer")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    config = SEED_CONFIG.replace(context_length=PROMPT + NEW)
    params = init_params(jax.random.key(0), SEED_CONFIG)
    result: dict = {"bench": "decode_bound", "jax": jax.__version__, "cpus": os.cpu_count()}
    server = None if args.no_peer else PeerServer.start()
    try:
        for batch in (1, 8):
            figures = measure(params, config, batch, args.rounds, server)
            result[f"b{batch}_tokens_per_s"] = figures
            result[f"b{batch}_generate_over_bound"] = round(
                figures["generate"]["median"] / figures["bound"]["median"], 2
            )
            if server is not None:
                result.setdefault("ratio_vs_peer", {}).update(
                    {
                        f"b{batch}_{name}": round(figures[name]["median"] / figures["peer"]["median"], 2)
                        for name in ("generate", "bound")
                    }
                )
    finally:
        if server is not None:
            server.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
