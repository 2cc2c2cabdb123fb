"""The decode step laid out for the speed of XLA's CPU backend.

Nothing here changes the model. `decode_step` computes what `microgpt_core.model.forward_cached`
computes for a chunk of tokens (tests/infer/test_engine.py checks both against `model.forward`); it
only arranges the work so that XLA's CPU backend runs it faster:

  * per-layer cache views (`split_cache`): the decode loop carries each layer's keys and values as
    arrays of their own, (B, Hkv, S, Dh), instead of slices of one (L, B, Hkv, S, Dh) array. Each
    block attends over its layer's cache and the chunk's own keys and values, then writes the
    chunk, so XLA updates every layer's arrays in place instead of copying a slice per token;
  * decode weights (`decode_weights`): the stacked blocks are sliced into per-layer dicts once,
    before the loop (slicing inside it copies every layer's weights on every token);
  * blockwise attention (`attend_cache_and_chunk`): the softmax over the cached slots and over the
    chunk is computed in two blocks joined by their running maximum (as in FlashAttention), which
    is what lets the chunk's keys be attended before they are written.

`bench/decode_layout.py`, `bench/decode_copies.py` and `bench/ab.py` measure these choices;
bench/README.md has the figures.
"""

from __future__ import annotations

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
    "split_cache",
]


class LayerCaches(NamedTuple):
    """A `KVCache` as one array per layer: k and v are tuples of L arrays (B, Hkv, S, Dh)."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]


def split_cache(cache: KVCache) -> LayerCaches:
    """The per-layer view of a cache (the same numbers; `jnp.stack` of each tuple gives it back)."""
    return LayerCaches(k=tuple(cache.k), v=tuple(cache.v))


class DecodeWeights(NamedTuple):
    """The weights a decode step reads, taken out of the parameters once, before the loop.

    Attributes:
      layers: one param dict per layer (the stacked blocks, sliced).
      head: W (D, V) of the logits z = x W (for tied embeddings Eᵀ, which XLA reads in place).
    """

    layers: tuple[Params, ...]
    head: jax.Array


def decode_weights(params: Params, config: GPTConfig) -> DecodeWeights:
    """The blocks as per-layer slices and the head as W (D, V); call it inside the jitted generation,
    outside its loop."""
    blocks = params["blocks"]
    layers = tuple(jax.tree.map(lambda a, i=i: a[i], blocks) for i in range(config.n_layers))
    head = params["embed"]["tokens"].T if config.tie_embeddings else params["head"]["w"]  # (D, V)
    return DecodeWeights(layers, head)


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


def decode_step(
    params: Params,
    weights: DecodeWeights,
    cache: LayerCaches,
    tokens: jax.Array,
    positions: jax.Array,
    config: GPTConfig,
) -> tuple[jax.Array, LayerCaches]:
    """`model.forward_cached` on the fast path: logits for a chunk of tokens per row.

    Args:
      params: model parameters (the embeddings and final norm are read from here).
      weights: `decode_weights(params, config)`.
      cache: `split_cache` of a cache holding positions < positions[b] of row b.
      tokens: (B, T) int, the chunk (1 token when decoding).
      positions: (B,) int, the position of tokens[b, 0].
      config: the model's configuration.
    Returns:
      logits (B, T, V) float32, and the cache with the chunk's keys and values written.
    """
    token_positions = positions[:, None] + jnp.arange(tokens.shape[1])  # (B, T)
    x = embed(params["embed"], tokens, token_positions, config=config)  # (B, T, D)
    ks, vs = list(cache.k), list(cache.v)
    for i, layer in enumerate(weights.layers):
        h = norm(layer["ln1"], x, config=config)  # (B, T, D)
        q, k, v = qkv_heads(layer["attn"], h, token_positions, config=config)  # (B, H|Hkv, T, Dh)
        out = attend_cache_and_chunk(q, ks[i], vs[i], k, v, positions, config)  # (B, H, T, Dh)
        ks[i], vs[i] = write_chunk(ks[i], k, positions), write_chunk(vs[i], v, positions)
        x = x + merge_heads(layer["attn"], out, config=config)  # (B, T, D)
        h = norm(layer["ln2"], x, config=config)  # (B, T, D)
        x = x + mlp(layer["mlp"], h, config=config)  # (B, T, D)
    if config.final_norm:
        x = norm(params["final_norm"], x, config=config)  # (B, T, D)
    logits = linear(x, weights.head, compute_dtype=config.compute_dtype)  # (B, T, V)
    return logits, LayerCaches(k=tuple(ks), v=tuple(vs))
