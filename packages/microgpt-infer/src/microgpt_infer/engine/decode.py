"""The decode step laid out for the speed of XLA's CPU backend.

Nothing here changes the model. `decode_step` computes what `microgpt_core.model.forward_cached`
computes for a chunk of tokens (tests/infer/test_engine.py checks both against `model.forward`); it
only arranges the work so that XLA's CPU backend runs it faster:

  * per-layer cache views (`split_cache`): the decode loop carries each layer's keys and values as
    arrays of their own, (B, Hkv, S, Dh), instead of slices of one (L, B, Hkv, S, Dh) array. Each
    block attends over its layer's cache and the chunk's own keys and values, then writes the
    chunk, so XLA updates every layer's arrays in place instead of copying a slice per token;
  * decode weights (`decode_weights`): the stacked blocks are sliced into per-layer dicts once,
    before the loop (slicing inside it copies every layer's weights on every token), and the
    matrices cast to the compute dtype once (`cast_matrices`; every matmul casts them anyway, and
    in bfloat16 converting all weights on every step cost more than the step's arithmetic);
  * blockwise attention (`attend_cache_and_chunk`): the softmax over the cached slots and over the
    chunk is computed in two blocks joined by their running maximum (as in FlashAttention), which
    is what lets the chunk's keys be attended before they are written;
  * the cache as bits (`LayerCaches` holds the numbers' bit patterns, uint16 for bfloat16): XLA's
    CPU backend scatters into a bfloat16 array by converting the whole array to float32 and back,
    on every layer of every step; an integer scatter writes only the chunk, and the step reads its
    keys and values back as numbers (`numbers`) where it attends;
  * a window and a width (`decode_step(..., window=W)` with fewer token rows than cache rows): the
    slot engine steps the first rows of its caches over their first W positions, as many as its
    busy requests need (slots.py);
  * growing windows (`decode_step(..., windows=(W₁, W₂, W₃))`, chosen by `step_windows`): inside
    one compiled loop, each step attends over the smallest of a few windows that holds every row's
    earlier positions, so early steps do not read the cache's empty end. It pays where the cache a
    step reads is large beside the weights (several rows, long generations).

`bench/decode_layout.py`, `bench/decode_copies.py` and `bench/ab.py` measure these choices;
bench/README.md has the figures.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from microgpt_core.cache import KVCache, write_chunk
from microgpt_core.config import GPTConfig
from microgpt_core.layers import embed, linear, merge_heads, mlp, norm, qkv_heads
from microgpt_core.params import Params
from microgpt_core.precision import matmul

__all__ = [
    "DecodeWeights",
    "LayerCaches",
    "attend_cache_and_chunk",
    "decode_step",
    "decode_weights",
    "bits",
    "cast_matrices",
    "join_cache",
    "numbers",
    "split_cache",
    "step_windows",
]


class LayerCaches(NamedTuple):
    """A `KVCache` as one array per layer, in bits: k and v are tuples of L arrays (B, Hkv, S, Dh)
    holding the bit patterns of the numbers (`bits`; `numbers` reads them back)."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]


def bits(a: jax.Array) -> jax.Array:
    """The bit patterns of a float array: an unsigned integer array of the same width and shape."""
    return jax.lax.bitcast_convert_type(a, jnp.dtype(f"uint{8 * a.dtype.itemsize}"))


def numbers(a: jax.Array, dtype) -> jax.Array:
    """The `dtype` numbers whose bit patterns `a` holds (the inverse of `bits`)."""
    return jax.lax.bitcast_convert_type(a, dtype)


def split_cache(cache: KVCache) -> LayerCaches:
    """The per-layer view of a cache, in bits (`join_cache` gives the cache back)."""
    return LayerCaches(k=tuple(bits(a) for a in cache.k), v=tuple(bits(a) for a in cache.v))


def join_cache(caches: LayerCaches, dtype) -> KVCache:
    """The `KVCache` of `dtype` numbers that `split_cache` split."""
    stack = lambda arrays: jnp.stack([numbers(a, dtype) for a in arrays])  # noqa: E731
    return KVCache(k=stack(caches.k), v=stack(caches.v))  # (L, B, Hkv, S, Dh) each


class DecodeWeights(NamedTuple):
    """The weights a decode step reads, taken out of the parameters once, before the loop.

    Attributes:
      layers: one param dict per layer (the stacked blocks, sliced).
      head: W (D, V) of the logits z = x W (for tied embeddings Eᵀ, which XLA reads in place).
    """

    layers: tuple[Params, ...]
    head: jax.Array


def cast_matrices(params: Params, config: GPTConfig) -> Params:
    """The parameters with the matrices every matmul reads (the blocks' `w_*`, an untied head's `w`)
    already in the compute dtype, which `precision.matmul` casts them to on every call: the
    reference path computes the same numbers from them, without converting each weight each time.
    The embeddings stay float32 (a token's embedding is read, not multiplied)."""
    cd = config.compute_dtype
    cast = lambda path, a: a.astype(cd) if path[-1].key.startswith("w") else a  # noqa: E731
    params = dict(params, blocks=jax.tree_util.tree_map_with_path(cast, params["blocks"]))
    if "head" in params:
        params["head"] = {"w": params["head"]["w"].astype(cd)}
    return params


def decode_weights(params: Params, config: GPTConfig) -> DecodeWeights:
    """The blocks as per-layer slices and the head as W (D, V), the matrices in the compute dtype
    (`cast_matrices`); call it inside the jitted generation, outside its loop."""
    blocks = cast_matrices(params, config)["blocks"]
    layers = tuple(jax.tree.map(lambda a, i=i: a[i], blocks) for i in range(config.n_layers))
    head = params["embed"]["tokens"].T if config.tie_embeddings else params["head"]["w"]  # (D, V)
    return DecodeWeights(layers, head.astype(config.compute_dtype))


def attend_cache_and_chunk(q, k_cache, v_cache, k, v, start, config: GPTConfig) -> jax.Array:
    """`layers.attention` over the cached slots before each row's chunk and the chunk itself, as one
    softmax over both computed in two blocks, without concatenating them:

        s₁ = Q K_cacheᵀ / √Dh + M₁    M₁[t, s] = 0 if s < start else -∞    (earlier positions)
        s₂ = Q K_chunkᵀ / √Dh + M₂    M₂[t, u] = 0 if u <= t else -∞       (causal in the chunk)
        m = max(max_s s₁, max_u s₂)
        out = (exp(s₁ - m) V_cache + exp(s₂ - m) V_chunk) / (Σ_s exp(s₁ - m) + Σ_u exp(s₂ - m))

    with the G = H / Hkv query heads that share a key/value head stacked along the query axis, (B,
    Hkv, G·T, Dh), so that every product is a 4-D batched matmul (for multi-head attention, G = 1,
    exactly the layout of one head per key head). M₂ always keeps the diagonal, so no row is empty.

    Args:
      q: (B, H, T, Dh) the chunk's queries.
      k_cache, v_cache: (B, Hkv, S, Dh) one layer's cache; slots >= start[b] are ignored.
      k, v: (B, Hkv, T, Dh) the chunk's keys and values.
      start: (B,) position of each row's first chunk token.
    Returns:
      (B, H, T, Dh) float32.
    """
    cd = config.compute_dtype
    B, H, T, Dh = q.shape
    Hkv, scale = k.shape[1], 1 / math.sqrt(Dh)
    G = H // Hkv
    q = q.reshape(B, Hkv, G * T, Dh)  # (B, Hkv, G·T, Dh): a group's heads one after another
    earlier = jnp.arange(k_cache.shape[2]) < start[:, None, None, None]  # (B, 1, 1, S)
    in_chunk = jnp.tile(jnp.tril(jnp.ones((T, T), bool)), (G, 1))  # (G·T, T)
    s1 = jnp.where(earlier, matmul("bktd,bksd->bkts", q, k_cache, cd) * scale, -jnp.inf)  # (B, Hkv, G·T, S)
    s2 = jnp.where(in_chunk, matmul("bktd,bkud->bktu", q, k, cd) * scale, -jnp.inf)  # (B, Hkv, G·T, T)
    m = jnp.maximum(s1.max(-1, keepdims=True), s2.max(-1, keepdims=True))  # (B, Hkv, G·T, 1)
    e1, e2 = jnp.exp(s1 - m), jnp.exp(s2 - m)  # (B, Hkv, G·T, S), (B, Hkv, G·T, T)
    numerator = matmul("bkts,bksd->bktd", e1, v_cache, cd) + matmul("bktu,bkud->bktd", e2, v, cd)
    out = numerator / (e1.sum(-1, keepdims=True) + e2.sum(-1, keepdims=True))  # (B, Hkv, G·T, Dh)
    return out.reshape(B, H, T, Dh)


def step_windows(
    params: Params, config: GPTConfig, rows: int, prompt: int, slots: int
) -> tuple[int, ...] | None:
    """The windows short of the whole cache for a loop decoding `rows` rows from a `prompt`-wide
    prompt into a cache of about `slots` positions, or None where they would not pay.

    They split the decoded positions in four, P + ⌈(S - P)·k/4⌉ for k = 1..3 (then the whole cache),
    so a step reads on average P + 5(S - P)/8 of the S cached positions instead of all of them. They
    are worth three more compiled branches of attention when the reads they save, 3(S - P)/(8S) of
    the cache, come to at least 1/16 of the weights a step reads (about all the parameters, in the
    compute dtype): from batch 2 of the seed model decoding 256 tokens (at batch 1 they saved at most
    5% of the time, and compiled a second longer).
    """
    decoded = slots - prompt
    itemsize = jnp.dtype(config.compute_dtype).itemsize
    cache_bytes = 2 * config.n_layers * rows * config.n_kv_heads * config.head_dim * slots * itemsize
    weight_bytes = sum(a.size for a in jax.tree.leaves(params)) * itemsize
    if decoded < 8 or cache_bytes * 3 * decoded / (8 * slots) < weight_bytes / 16:
        return None
    return tuple(sorted({prompt + -(-decoded * k // 4) for k in (1, 2, 3)}))


def decode_step(
    params: Params,
    weights: DecodeWeights,
    cache: LayerCaches,
    tokens: jax.Array,
    positions: jax.Array,
    config: GPTConfig,
    *,
    window: int | None = None,
    windows: tuple[int, ...] | None = None,
) -> tuple[jax.Array, LayerCaches]:
    """`model.forward_cached` on the fast path: logits for a chunk of tokens per row.

    Args:
      params: model parameters (the embeddings and final norm are read from here).
      weights: `decode_weights(params, config)`.
      cache: `split_cache` of a cache of B' >= B rows holding positions < positions[b] of row b;
        rows b >= B are neither read nor written.
      tokens: (B, T) int, the chunk (1 token when decoding).
      positions: (B,) int, the position of tokens[b, 0].
      config: the model's configuration.
      window: attend over the cache's first `window` positions only (static; default all S), which
        must hold every row's earlier positions: positions[b] <= window.
      windows: or attend over the first of these windows (static, increasing; `step_windows`)
        that holds every row's earlier positions, else over the whole cache, chosen on the device
        at each step.
    Returns:
      logits (B, T, V) float32, and the cache with the chunk's keys and values written.
    """
    if window is not None and windows is not None:
        raise ValueError("decode_step takes a window or windows, not both")
    token_positions = positions[:, None] + jnp.arange(tokens.shape[1])  # (B, T)
    x = embed(params["embed"], tokens, token_positions, config=config)  # (B, T, D)
    B, cd = tokens.shape[0], config.compute_dtype

    def attend(k_cache, v_cache, q, k, v, W=window):
        k_seen, v_seen = numbers(k_cache[:B, :, :W], cd), numbers(v_cache[:B, :, :W], cd)  # (B, Hkv, W, Dh)
        return attend_cache_and_chunk(q, k_seen, v_seen, k, v, positions, config)  # (B, H, T, Dh)

    if windows:  # the smallest window W >= every position (or the whole cache), for every layer
        short = [W for W in windows if W < cache.k[0].shape[2]]
        smallest = jnp.searchsorted(jnp.asarray(short, jnp.int32), positions.max())
        branches = [functools.partial(attend, W=W) for W in [*short, None]]
        attend = lambda *arrays: jax.lax.switch(smallest, branches, *arrays)  # noqa: E731
    ks, vs = list(cache.k), list(cache.v)
    for i, layer in enumerate(weights.layers):
        h = norm(layer["ln1"], x, config=config)  # (B, T, D)
        q, k, v = qkv_heads(layer["attn"], h, token_positions, config=config)  # (B, H|Hkv, T, Dh)
        out = attend(ks[i], vs[i], q, k, v)  # (B, H, T, Dh)
        k, v = bits(k.astype(cd)), bits(v.astype(cd))  # (B, Hkv, T, Dh) as the cache stores them
        ks[i], vs[i] = write_chunk(ks[i], k, positions), write_chunk(vs[i], v, positions)
        x = x + merge_heads(layer["attn"], out, config=config)  # (B, T, D)
        h = norm(layer["ln2"], x, config=config)  # (B, T, D)
        x = x + mlp(layer["mlp"], h, config=config)  # (B, T, D)
    if config.final_norm:
        x = norm(params["final_norm"], x, config=config)  # (B, T, D)
    logits = linear(x, weights.head, compute_dtype=config.compute_dtype)  # (B, T, V)
    return logits, LayerCaches(k=tuple(ks), v=tuple(vs))
