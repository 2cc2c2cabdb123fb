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

The cache comes in two forms holding the same numbers. Stacked (`init_cache`): one (L, B, H, S, Dh)
array each for keys and values, which prefill runs over under one `lax.scan`. Per layer
(`split_cache`): tuples of L arrays (B, H, S, Dh), which the decode loop carries. In that form a
block first attends over its layer's cache and the chunk's own keys and values, then writes the
chunk into the cache, so XLA can update each layer's arrays in place and copies no slice of the
cache per token (slicing layer i out of the stacked array copies it on every step).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from microgpt_core.config import GPTConfig
from microgpt_core.layers import (
    Transposed,
    attention,
    causal_mask,
    embed,
    layer_norm,
    linear,
    matmul,
    merge_heads,
    mlp,
    qkv_heads,
    unembed,
)

__all__ = [
    "DecodeWeights",
    "KVCache",
    "decode_weights",
    "forward_cached",
    "init_cache",
    "split_cache",
    "stack_cache",
    "unstack_blocks",
]

Params = dict[str, Any]


class KVCache(NamedTuple):
    """Preallocated keys and values, updated functionally (never mutated in place).

    Attributes:
      k: keys in `compute_dtype`: stacked, one (L, B, H, S, Dh) array; or per layer, a tuple of L
        arrays (B, H, S, Dh) (see `split_cache`).
      v: values, in the same form as k.
    """

    k: jax.Array | tuple[jax.Array, ...]
    v: jax.Array | tuple[jax.Array, ...]


def init_cache(config: GPTConfig, batch: int, max_len: int) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` positions (max_len <= context_length)."""
    if not 1 <= max_len <= config.context_length:
        raise ValueError(f"max_len must be in [1, context_length={config.context_length}], got {max_len}")
    shape = (config.n_layers, batch, config.n_heads, max_len, config.head_dim)  # (L, B, H, S, Dh)
    zeros = jnp.zeros(shape, config.compute_dtype)
    return KVCache(k=zeros, v=zeros)


def split_cache(cache: KVCache) -> KVCache:
    """The per-layer form of a stacked cache: k and v become tuples of L arrays (B, H, S, Dh)."""
    if isinstance(cache.k, tuple):
        return cache
    return KVCache(k=tuple(cache.k), v=tuple(cache.v))


def stack_cache(cache: KVCache) -> KVCache:
    """The stacked form of a per-layer cache: k and v become (L, B, H, S, Dh) arrays."""
    if not isinstance(cache.k, tuple):
        return cache
    return KVCache(k=jnp.stack(cache.k), v=jnp.stack(cache.v))


def unstack_blocks(params: Params) -> list[Params]:
    """Splits the stacked blocks into a list of per-layer param dicts.

    Decoding runs the layers as an unrolled Python loop over these slices: taking them once, outside
    the decode loop, keeps XLA from copying every layer's weights on every token.
    """
    blocks = params["blocks"]
    n_layers = jax.tree_util.tree_leaves(blocks)[0].shape[0]
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], blocks) for i in range(n_layers)]


class DecodeWeights(NamedTuple):
    """The weights a decode loop reads on every step, taken out of the parameters once, before it.

    Attributes:
      layers: one param dict per layer (`unstack_blocks`); a matrix may be a `layers.Transposed`.
      head: the output matrix W (D, V) of the logits z = x W, or `Transposed` holding Wᵀ (V, D).
    """

    layers: tuple[Params, ...]
    head: jax.Array | Transposed


def decode_weights(params: Params, config: GPTConfig, batch: int) -> DecodeWeights:
    """The blocks as per-layer slices, and each matrix in the memory order that decoding `batch` rows
    reads fastest on this backend. Same numbers, same maps: only where the values lie in memory.

    A decode step multiplies a few rows by every weight matrix, so it streams all of them from
    memory (21.6 MB for the seed model, more than this machine's cache keeps). XLA's CPU dot streams
    a matrix faster in one order or the other depending on its shape; measured with
    bench/decode_layout.py on the seed model, on CPU:
      - the head as (D, V) beats a tied embedding E (V, D) at every batch size, so E is copied
        transposed, once per generation;
      - at batch 1, the attention and MLP output projections (D, D) and (F, D) read faster held
        transposed (`Transposed`); at batch 2 and more they read slower that way, so they stay.
    Other backends get the parameters as they are (a tied head as `Transposed(E)`, no copy).

    Args:
      params: model parameters.
      config: the model's configuration.
      batch: rows decoded together.
    Returns:
      `DecodeWeights`; call it inside the jitted generation, outside its loop.
    """
    tied = params["embed"]["tokens"] if config.tie_embeddings else None  # (V, D)
    if jax.default_backend() != "cpu":
        head = Transposed(tied) if tied is not None else params["head"]["w"]
        return DecodeWeights(tuple(unstack_blocks(params)), head)

    def copy_transposed(w: jax.Array) -> jax.Array:
        # The barrier keeps XLA from folding the transpose back into the dot: the copy is made here.
        return jax.lax.optimization_barrier(jnp.swapaxes(w, -1, -2))

    blocks = params["blocks"]
    if batch == 1:  # the output projections, (L, D, D) and (L, F, D), held as (L, D, D) and (L, D, F)
        blocks = {
            **blocks,
            "attn": {**blocks["attn"], "w_out": Transposed(copy_transposed(blocks["attn"]["w_out"]))},
            "mlp": {**blocks["mlp"], "w_out": Transposed(copy_transposed(blocks["mlp"]["w_out"]))},
        }
    head = copy_transposed(tied) if tied is not None else params["head"]["w"]  # (D, V)
    return DecodeWeights(tuple(unstack_blocks({"blocks": blocks})), head)


def _write(cache: jax.Array, new: jax.Array, start: jax.Array, layer: Any = None) -> jax.Array:
    """cache[layer, b, :, start[b] + t] = new[b, :, t] for every row b and chunk index t.

    A scatter (in place under jit); slots past the end of the cache are dropped, not clamped.

    Args:
      cache: (L, B, H, Smax, Dh) stacked, or one layer's (B, H, Smax, Dh) with layer None.
      new: (B, H, T, Dh).
      start: (B,) int.
      layer: the layer index into a stacked cache (an int, or traced under `lax.scan`).
    """
    B, _, T, _ = new.shape
    rows = jnp.arange(B)[:, None]  # (B, 1)
    slots = start[:, None] + jnp.arange(T)  # (B, T)
    update = new.transpose(0, 2, 1, 3).astype(cache.dtype)  # (B, T, H, Dh), advanced-index dims first
    index = (rows, slice(None), slots, slice(None)) if layer is None else (layer, rows, slice(None), slots)
    return cache.at[index].set(update, mode="drop")  # same shape as cache


def _attend_cache_and_chunk(q, k_cache, v_cache, k, v, start, config: GPTConfig):
    """Attention over the cached slots before each row's chunk and over the chunk itself, computed
    as one softmax over both without concatenating them (the blockwise softmax of FlashAttention):

        s₁ = Q K_cacheᵀ / √Dh + M₁    M₁[t, s] = 0 if s < start else -∞    (earlier positions)
        s₂ = Q K_chunkᵀ / √Dh + M₂    M₂[t, u] = 0 if u <= t else -∞       (causal in the chunk)
        m = max(max_s s₁, max_u s₂)
        out = (exp(s₁ - m) V_cache + exp(s₂ - m) V_chunk) / (Σ_s exp(s₁ - m) + Σ_u exp(s₂ - m))

    which is `layers.attention` over [K_cache; K_chunk] with the causal mask; M₂ always keeps the
    diagonal, so no row is empty. Always the math path, whatever `config.attention`.

    Args:
      q, k, v: (B, H, T, Dh) the chunk's queries, keys and values.
      k_cache, v_cache: (B, H, Smax, Dh) one layer's cache; slots >= start[b] are ignored.
      start: (B,) position of each row's first chunk token.
    Returns:
      (B, H, T, Dh) float32.
    """
    cd = config.compute_dtype
    T, scale = q.shape[2], 1 / math.sqrt(q.shape[-1])
    earlier = jnp.arange(k_cache.shape[2]) < start[:, None, None, None]  # (B, 1, 1, Smax)
    in_chunk = jnp.tril(jnp.ones((T, T), bool))  # (T, T)
    s1 = jnp.where(earlier, matmul("bhtd,bhsd->bhts", q, k_cache, cd) * scale, -jnp.inf)  # (B, H, T, Smax)
    s2 = jnp.where(in_chunk, matmul("bhtd,bhud->bhtu", q, k, cd) * scale, -jnp.inf)  # (B, H, T, T)
    m = jnp.maximum(s1.max(-1, keepdims=True), s2.max(-1, keepdims=True))  # (B, H, T, 1)
    e1, e2 = jnp.exp(s1 - m), jnp.exp(s2 - m)  # (B, H, T, Smax), (B, H, T, T)
    numerator = matmul("bhts,bhsd->bhtd", e1, v_cache, cd) + matmul("bhtu,bhud->bhtd", e2, v, cd)
    return numerator / (e1.sum(-1, keepdims=True) + e2.sum(-1, keepdims=True))  # (B, H, T, Dh)


def _cached_block(layer: Params, x, cache: KVCache, i, positions, mask, config: GPTConfig):
    """Block i over a chunk (see `layers.block` for the equations). A stacked cache: write the
    chunk's keys and values into layer i, then attend over that layer's cache. A per-layer cache:
    attend over layer i's cache and the chunk (`_attend_cache_and_chunk`), then write.

    Args:
      layer: one layer's params; x: (B, T, D); cache: a stacked or per-layer `KVCache`;
      i: the layer index (a Python int when unrolled, a traced int under `lax.scan`);
      positions: (B,) position of each row's first chunk token;
      mask: (B, 1, T, Smax) the causal mask over the slots (a stacked cache only).
    Returns:
      x (B, T, D) and the updated cache.
    """
    h = layer_norm(layer["ln1"], x, eps=config.norm_eps)  # (B, T, D)
    q, k, v = qkv_heads(layer["attn"], h, config=config)  # each (B, H, T, Dh)
    if isinstance(cache.k, tuple):  # per layer: attend, then write layer i in place
        out = _attend_cache_and_chunk(q, cache.k[i], cache.v[i], k, v, positions, config)  # (B, H, T, Dh)
        ks, vs = list(cache.k), list(cache.v)
        ks[i], vs[i] = _write(ks[i], k, positions), _write(vs[i], v, positions)
        cache = KVCache(k=tuple(ks), v=tuple(vs))
    else:  # stacked: write layer i, then attend over it
        cache = KVCache(k=_write(cache.k, k, positions, i), v=_write(cache.v, v, positions, i))
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
    weights: DecodeWeights | None = None,
) -> tuple[jax.Array, KVCache]:
    """Logits for a chunk of tokens per row, given the cache of everything before it.

    Args:
      params: model parameters.
      cache: `KVCache` holding positions < positions[b] of row b, stacked or per layer; the
        result's cache has the same form.
      tokens: (B, T) int, the chunk (T = prompt length for prefill, 1 for decoding).
      positions: (B,) int, the position of tokens[b, 0]; tokens[b, i] is at positions[b] + i.
        Callers keep positions[b] + T <= cache length (slots past the end are not written).
      config: the model's configuration.
      weights: `decode_weights(params, config, batch)`, to run the layers unrolled over its slices
        and take the logits from its head (the decode loop takes them once, outside the loop, so
        weights are not copied per token). By default a stacked cache runs the stacked blocks under
        one `lax.scan` (less to compile: prefill runs once) and a per-layer cache runs the layers
        unrolled.
    Returns:
      logits (B, T, V) float32, and the cache with the chunk's keys and values written.
    """
    T = tokens.shape[1]
    token_positions = positions[:, None] + jnp.arange(T)  # (B, T)
    x = embed(params["embed"], tokens, token_positions, config=config)  # (B, T, D)
    layers = weights.layers if weights is not None else None
    if isinstance(cache.k, tuple):  # per layer: each block builds its own masks
        mask = None
        layers = unstack_blocks(params) if layers is None else layers
    else:
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
    if weights is not None:
        return linear(x, weights.head, compute_dtype=config.compute_dtype), cache  # (B, T, V)
    return unembed(params, x, config=config), cache  # (B, T, V)
