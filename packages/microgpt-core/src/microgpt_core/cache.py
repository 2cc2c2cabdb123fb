"""A key/value cache: run the model over new tokens while reusing the keys and values of old ones.

The cache holds, for every layer, the keys and values of every position seen so far: position p in
slot p. `forward_cached` takes a chunk of tokens per row together with the position of its first
token, so rows whose prompts have different lengths share a batch. In every block, each row writes
the chunk's keys and values into its own slots, then its queries attend over the whole cache with
the causal mask

    M[t, s] = 0 if s <= position(t) else -∞

Slots past a row's position may hold stale values (the padding of a shorter prompt, say): the mask
hides them until a later step overwrites them.

Prefill is a chunk of P tokens at position 0; decoding is a chunk of one token at each row's next
position. The result equals `model.forward` over the whole sequence, to float tolerance.
(`fastpath.py` runs the decode steps of `sampling.generate_tokens` faster on the same numbers.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from microgpt_core.config import GPTConfig
from microgpt_core.layers import (
    attention,
    causal_mask,
    embed,
    merge_heads,
    mlp,
    norm,
    qkv_heads,
    unembed,
)

__all__ = ["KVCache", "forward_cached", "init_cache", "write_chunk"]

Params = dict[str, Any]


class KVCache(NamedTuple):
    """Preallocated keys and values of every layer, updated functionally (never mutated in place).

    Attributes:
      k: (L, B, Hkv, S, Dh) keys (after QK-norm and rotation, when the model has them), in
        `compute_dtype`. Hkv = n_kv_heads, so grouped-query attention shrinks the cache H / Hkv times.
      v: (L, B, Hkv, S, Dh) values, in `compute_dtype`.
    """

    k: jax.Array
    v: jax.Array


def init_cache(config: GPTConfig, batch: int, max_len: int) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` positions (max_len <= context_length)."""
    if not 1 <= max_len <= config.context_length:
        raise ValueError(f"max_len must be in [1, context_length={config.context_length}], got {max_len}")
    shape = (config.n_layers, batch, config.n_kv_heads, max_len, config.head_dim)  # (L, B, Hkv, S, Dh)
    zeros = jnp.zeros(shape, config.compute_dtype)
    return KVCache(k=zeros, v=zeros)


def write_chunk(cache: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
    """One layer's cache with the chunk written: cache[b, :, start[b] + t] = new[b, :, t].

    Slots past the end of the cache are dropped, not clamped.

    Args:
      cache: (B, Hkv, S, Dh) one layer's keys or values.
      new: (B, Hkv, T, Dh) the chunk's.
      start: (B,) int position of each row's first chunk token.
    Returns:
      (B, Hkv, S, Dh), in the cache's dtype.
    """
    B, _, T, _ = new.shape
    rows = jnp.arange(B)[:, None]  # (B, 1)
    slots = start[:, None] + jnp.arange(T)  # (B, T)
    update = new.transpose(0, 2, 1, 3).astype(cache.dtype)  # (B, T, Hkv, Dh): indexed axes first
    return cache.at[rows, :, slots].set(update, mode="drop")  # (B, Hkv, S, Dh)


def forward_cached(
    params: Params, cache: KVCache, tokens: jax.Array, positions: jax.Array, config: GPTConfig
) -> tuple[jax.Array, KVCache]:
    """Logits for a chunk of tokens per row, given the cache of everything before it.

    Each block is `layers.block` (without dropout) whose attention reads the layer's cache:

        h = Norm₁(x);  Q, K, V = qkv_heads(h) at the chunk's positions
        K_cache, V_cache = the layer's cache with K, V written at the chunk's positions
        x = x + Attention(Q, K_cache, V_cache, M) W_out + b_out
        x = x + MLP(Norm₂(x))

    Args:
      params: model parameters.
      cache: `KVCache` holding positions < positions[b] of row b.
      tokens: (B, T) int, the chunk (T = prompt length for prefill, 1 for decoding).
      positions: (B,) int, the position of tokens[b, 0]; tokens[b, i] is at positions[b] + i.
        Callers keep positions[b] + T <= cache length (slots past the end are not written).
      config: the model's configuration.
    Returns:
      logits (B, T, V) float32, and the cache with the chunk's keys and values written.
    """
    T = tokens.shape[1]
    token_positions = positions[:, None] + jnp.arange(T)  # (B, T)
    mask = causal_mask(token_positions, jnp.arange(cache.k.shape[3]))  # (B, 1, T, S)
    x = embed(params["embed"], tokens, token_positions, config=config)  # (B, T, D)

    def block(x, inputs):
        layer, k_cache, v_cache = inputs  # one layer's params; (B, Hkv, S, Dh) each
        h = norm(layer["ln1"], x, config=config)  # (B, T, D)
        q, k, v = qkv_heads(layer["attn"], h, token_positions, config=config)  # (B, H|Hkv, T, Dh)
        k_cache, v_cache = write_chunk(k_cache, k, positions), write_chunk(v_cache, v, positions)
        out = attention(q, k_cache, v_cache, mask, config=config)  # (B, H, T, Dh)
        x = x + merge_heads(layer["attn"], out, config=config)  # (B, T, D)
        h = norm(layer["ln2"], x, config=config)  # (B, T, D)
        return x + mlp(layer["mlp"], h, config=config), (k_cache, v_cache)  # (B, T, D)

    x, (k, v) = jax.lax.scan(block, x, (params["blocks"], cache.k, cache.v))  # (B, T, D), (L, ...)
    if config.final_norm:
        x = norm(params["final_norm"], x, config=config)  # (B, T, D)
    return unembed(params, x, config=config), KVCache(k=k, v=v)  # (B, T, V)
