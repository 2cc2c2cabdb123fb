"""A key/value cache: run the model over new tokens while reusing the keys and values of old ones.

The cache holds, for every layer, the keys and values of every position seen so far in slots
0..S-1. `forward_cached` takes a chunk of tokens per row together with the position of its first
token, so rows whose prompts have different lengths share a batch: each row reads and writes its own
slots. A query at position p attends to the cached slots s < p of its row and to the chunk's own
keys at positions <= p; only then are the chunk's keys and values written at their positions
(attending to the old cache plus the new keys avoids reading a slot in the step that writes it).

Prefill is a chunk of S tokens at position 0; decoding is a chunk of one token at each row's next
position. The result equals `model.forward` over the whole sequence to float tolerance.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from microgpt_core.config import GPTConfig
from microgpt_core.layers import (
    causal_mask,
    embed,
    layer_norm,
    matmul,
    merge_heads,
    mlp,
    qkv_heads,
    unembed,
)

__all__ = ["KVCache", "init_cache", "forward_cached", "unstack_blocks"]

Params = dict[str, Any]


class KVCache(NamedTuple):
    """Preallocated keys and values, updated functionally (never mutated in place).

    Attributes:
      k: (L, B, H, S, Dh) keys, in `compute_dtype`.
      v: (L, B, H, S, Dh) values, in `compute_dtype`.
    """

    k: jax.Array
    v: jax.Array


def init_cache(config: GPTConfig, batch: int, max_len: int) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` positions (max_len <= context_length)."""
    if not 1 <= max_len <= config.context_length:
        raise ValueError(f"max_len must be in [1, context_length={config.context_length}], got {max_len}")
    shape = (config.n_layers, batch, config.n_heads, max_len, config.head_dim)  # (L, B, H, S, Dh)
    zeros = jnp.zeros(shape, config.compute_dtype)
    return KVCache(k=zeros, v=zeros)


def unstack_blocks(params: Params) -> list[Params]:
    """Splits the stacked blocks into a list of per-layer param dicts.

    Decoding runs the layers as an unrolled Python loop over these slices: taking them once, outside
    the decode loop, keeps XLA from copying every layer's weights on every token.
    """
    blocks = params["blocks"]
    n_layers = jax.tree_util.tree_leaves(blocks)[0].shape[0]
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], blocks) for i in range(n_layers)]


def _write(cache: jax.Array, layer: int, new: jax.Array, start: jax.Array) -> jax.Array:
    """cache[layer, b, :, start[b] + t] = new[b, :, t] for every row b and chunk index t.

    A scatter (in place under jit); slots past the end of the cache are dropped, not clamped.

    Args:
      cache: (L, B, H, Smax, Dh).
      new: (B, H, T, Dh).
      start: (B,) int.
    """
    B, _, T, _ = new.shape
    rows = jnp.arange(B)[:, None]  # (B, 1)
    slots = start[:, None] + jnp.arange(T)  # (B, T)
    update = new.transpose(0, 2, 1, 3).astype(cache.dtype)  # (B, T, H, Dh), advanced-index dims first
    return cache.at[layer, rows, :, slots, :].set(update, mode="drop")  # (L, B, H, Smax, Dh)


def _cached_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, k_old: jax.Array, v_old: jax.Array, start: jax.Array, config
) -> jax.Array:
    """softmax(Q [K_old; K]ᵀ / √Dh + M) [V_old; V] over the cached slots before `start` and the chunk.

    Args:
      q, k, v: (B, H, T, Dh) the chunk's queries, keys, values (positions start..start+T-1).
      k_old, v_old: (B, H, Smax, Dh) the cache before this chunk.
      start: (B,) position of the chunk's first token in each row.
    Returns:
      (B, H, T, Dh) float32.
    """
    cd, T, Smax = config.compute_dtype, q.shape[2], k_old.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    old_scores = matmul("bhtd,bhsd->bhts", q, k_old, cd) * scale  # (B, H, T, Smax)
    new_scores = matmul("bhtd,bhsd->bhts", q, k, cd) * scale  # (B, H, T, T)
    old_mask = (jnp.arange(Smax) < start[:, None])[:, None, None, :]  # (B, 1, 1, Smax): slots < start
    new_mask = causal_mask(jnp.arange(T), jnp.arange(T))  # (1, T, T): the chunk, causally
    scores = jnp.concatenate(
        [jnp.where(old_mask, old_scores, -jnp.inf), jnp.where(new_mask, new_scores, -jnp.inf)], axis=-1
    )  # (B, H, T, Smax + T)
    weights = jax.nn.softmax(scores, axis=-1)  # (B, H, T, Smax + T)
    out = matmul("bhts,bhsd->bhtd", weights[..., :Smax], v_old, cd)  # (B, H, T, Dh)
    return out + matmul("bhts,bhsd->bhtd", weights[..., Smax:], v, cd)  # (B, H, T, Dh)


def forward_cached(
    params: Params,
    cache: KVCache,
    tokens: jax.Array,
    positions: jax.Array,
    config: GPTConfig,
    *,
    layers: list[Params] | None = None,
) -> tuple[jax.Array, KVCache]:
    """Logits for a chunk of tokens per row, given the cache of everything before it.

    Args:
      params: model parameters.
      cache: `KVCache` holding positions < positions[b] of row b.
      tokens: (B, T) int, the chunk (T = prompt length for prefill, 1 for decoding).
      positions: (B,) int, the position of tokens[b, 0]; tokens[b, i] is at positions[b] + i.
        Callers keep positions[b] + T <= cache length (slots past the end are not written).
      config: the model's configuration.
      layers: `unstack_blocks(params)`, if the caller already has it (the decode loop does).
    Returns:
      logits (B, T, V) float32, and the cache with the chunk's keys and values written.
    """
    T = tokens.shape[1]
    layers = unstack_blocks(params) if layers is None else layers
    token_positions = positions[:, None] + jnp.arange(T)  # (B, T)
    x = embed(params["embed"], tokens, token_positions, config=config)  # (B, T, D)
    cache_k, cache_v = cache
    for i, layer in enumerate(layers):
        h = layer_norm(layer["ln1"], x, eps=config.norm_eps)  # (B, T, D)
        q, k, v = qkv_heads(layer["attn"], h, config=config)  # each (B, H, T, Dh)
        out = _cached_attention(q, k, v, cache_k[i], cache_v[i], positions, config)  # (B, H, T, Dh)
        x = x + merge_heads(layer["attn"], out, config=config)  # (B, T, D)
        h = layer_norm(layer["ln2"], x, eps=config.norm_eps)  # (B, T, D)
        x = x + mlp(layer["mlp"], h, config=config)  # (B, T, D)
        cache_k = _write(cache_k, i, k, positions)  # (L, B, H, Smax, Dh)
        cache_v = _write(cache_v, i, v, positions)  # (L, B, H, Smax, Dh)
    if config.final_norm:
        x = layer_norm(params["final_norm"], x, eps=config.norm_eps)  # (B, T, D)
    logits = unembed(params, x, config=config)  # (B, T, V)
    return logits, KVCache(k=cache_k, v=cache_v)
