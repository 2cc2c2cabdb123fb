"""A key/value cache: run the model over new tokens while reusing the keys and values of old ones.

The cache holds, for every layer, the keys and values of every position seen so far: position p in
slot p. A forward pass with a cache (`model.forward_cached`) takes a chunk of tokens per row
together with the position of its first token, so rows whose prompts have different lengths share a
batch. In every block, each row writes the chunk's keys and values into its own slots
(`write_chunk`), then its queries attend over the whole cache with the causal mask

    M[t, s] = 0 if s <= position(t) else -∞

Slots past a row's position may hold stale values (the padding of a shorter prompt, say): the mask
hides them until a later step overwrites them.

Prefill is a chunk of P tokens at position 0; decoding is a chunk of one token at each row's next
position. The result equals `model.forward` over the whole sequence, to float tolerance.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from microgpt_core.config import GPTConfig

__all__ = ["KVCache", "init_cache", "write_chunk"]


class KVCache(NamedTuple):
    """Preallocated keys and values of every layer, updated functionally (never mutated in place).
    Scanning over the layers hands each block its own slice: the same tuple of (B, Hkv, S, Dh) arrays.

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
