"""A key/value cache: run the model over new tokens while reusing the keys and values of old ones.

The cache holds, for every layer, the keys and values of every position seen so far: position p
in slot p. `forward_cached` takes a chunk of tokens per row together with the position of its first
token, so rows whose prompts have different lengths share a batch: each row writes the chunk's keys
and values into its own slots, then its queries attend over the cache with the causal mask
M[t, s] = 0 if s <= position(t) else -∞. Slots past a row's position may hold stale values (the
padding of a shorter prompt, say): the mask hides them until a later step overwrites them.
(Writing before reading keeps one copy of the cache: XLA updates it in place.)

Prefill is a chunk of S tokens at position 0; decoding is a chunk of one token at each row's next
position. The result equals `model.forward` over the whole sequence to float tolerance.
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
    layer_norm,
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


def _cached_block(layer: Params, x, cache: KVCache, i, positions, mask, config: GPTConfig):
    """Block i over a chunk: writes the chunk's keys and values into layer i of the cache first,
    then attends over that layer's cache (see `layers.block` for the equations).

    Args:
      layer: one layer's params; x: (B, T, D); cache: (L, B, H, Smax, Dh) keys and values;
      i: the layer index (a Python int when unrolled, a traced int under `lax.scan`);
      positions: (B,) position of each row's first chunk token; mask: (B, 1, T, Smax).
    Returns:
      x (B, T, D) and the updated cache.
    """
    h = layer_norm(layer["ln1"], x, eps=config.norm_eps)  # (B, T, D)
    q, k, v = qkv_heads(layer["attn"], h, config=config)  # each (B, H, T, Dh)
    cache = KVCache(k=_write(cache.k, i, k, positions), v=_write(cache.v, i, v, positions))
    out = attention(q, cache.k[i], cache.v[i], mask, config=config)  # (B, H, T, Dh)
    x = x + merge_heads(layer["attn"], out, config=config)  # (B, T, D)
    h = layer_norm(layer["ln2"], x, eps=config.norm_eps)  # (B, T, D)
    return x + mlp(layer["mlp"], h, config=config), cache  # (B, T, D)


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
      layers: `unstack_blocks(params)`, to run the layers unrolled over these slices (the decode
        loop does, so weights are not copied per token); by default the stacked blocks run under
        one `lax.scan` (less to compile: prefill runs once).
    Returns:
      logits (B, T, V) float32, and the cache with the chunk's keys and values written.
    """
    T = tokens.shape[1]
    token_positions = positions[:, None] + jnp.arange(T)  # (B, T)
    x = embed(params["embed"], tokens, token_positions, config=config)  # (B, T, D)
    slots = jnp.arange(cache.k.shape[3])  # (Smax,)
    mask = causal_mask(token_positions, slots)  # (B, 1, T, Smax): slot <= query position
    if layers is None:

        def step(carry, inputs):
            layer, i = inputs
            return _cached_block(layer, *carry, i, positions, mask, config), None

        (x, cache), _ = jax.lax.scan(step, (x, cache), (params["blocks"], jnp.arange(config.n_layers)))
    else:
        for i, layer in enumerate(layers):
            x, cache = _cached_block(layer, x, cache, i, positions, mask, config)
    if config.final_norm:
        x = layer_norm(params["final_norm"], x, eps=config.norm_eps)  # (B, T, D)
    return unembed(params, x, config=config), cache  # (B, T, V)
