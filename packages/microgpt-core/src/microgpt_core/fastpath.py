"""The fast path: the decode steps of `sampling.generate_tokens` laid out for speed, and XLA options.

Nothing here changes the model. `decode_step` computes what `cache.forward_cached` computes for a
chunk of tokens (tests/core/test_fastpath.py checks both against `model.forward`); it only arranges
the work so that XLA's CPU backend runs it faster:

  * per-layer cache views (`split_cache`): the decode loop carries each layer's keys and values as
    arrays of their own, (B, Hkv, S, Dh), instead of slices of one (L, B, H, S, Dh) array. Each block
    attends over its layer's cache and the chunk's own keys and values, then writes the chunk, so
    XLA updates every layer's arrays in place instead of copying a slice of the cache per token;
  * decode weights (`decode_weights`): the stacked blocks are sliced into per-layer dicts once,
    before the loop (slicing inside it copies every layer's weights on every token);
  * blockwise attention (`attend_cache_and_chunk`): the softmax over the cached slots and over the
    chunk is computed in two blocks joined by their running maximum (as in FlashAttention), which
    is what lets the chunk's keys be attended before they are written;
  * XLA options (`compiler_options`), chosen by the backend and the CPU's features;
  * the layer loop of training and evaluation unrolled (`layer_unroll`, for `model.forward`'s
    `unroll`), and the host's allocator told to keep freed memory (`keep_host_memory`).

`bench/decode_layout.py`, `bench/decode_copies.py` and `bench/ab.py` measure these choices (and the
memory orders of the weights that were tried and dropped); bench/README.md has the figures.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from microgpt_core.cache import KVCache, write_chunk
from microgpt_core.config import GPTConfig
from microgpt_core.layers import embed, linear, matmul, merge_heads, mlp, norm, qkv_heads

__all__ = [
    "DecodeWeights",
    "LayerCaches",
    "attend_cache_and_chunk",
    "compiler_options",
    "decode_step",
    "decode_weights",
    "keep_host_memory",
    "layer_unroll",
    "split_cache",
]

Params = dict[str, Any]


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
    """`cache.forward_cached` on the fast path: logits for a chunk of tokens per row.

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


def compiler_options(config: GPTConfig, *, decode: bool = False) -> dict[str, Any]:
    """XLA options for this model on the current backend: for `jax.jit(..., compiler_options=...)`
    around `forward` or a train step, or with `decode=True` around a generation loop (as
    `sampling.generate_tokens` does). Other backends than CPU get none. On CPU:

      * decoding in float32 turns off XLA's YNNPACK dot fusions, whose matrix-vector products ran
        slower than XLA's own (training and evaluation keep them: with `keep_host_memory` their
        float32 train step is 1.1-1.4x faster with them, and bfloat16 needs them everywhere);
      * decoding turns on region-based copy insertion, without which XLA copies every layer's cache
        on every decode step instead of updating it in place;
      * decoding on a CPU with AVX-512 lets XLA's generated code use 512-bit vectors (default 256).

    bench/README.md has the measurements behind each.
    """
    if jax.default_backend() != "cpu":
        return {}
    options: dict[str, Any] = {}
    if decode and config.compute_dtype == "float32":
        options["xla_cpu_experimental_ynn_fusion_type"] = ""
    if decode:
        options["xla_cpu_copy_insertion_use_region_analysis"] = True
        if _cpu_has_avx512():
            options["xla_cpu_prefer_vector_width"] = 512
    return options


@functools.cache
def _cpu_has_avx512() -> bool:
    """Whether this machine's CPU has AVX-512 (read from /proc/cpuinfo; False where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


# Compiling a bfloat16 seed-size train step unrolled: 4.9 s at 4 layers (loop 5.3 s), 6.9 s at 12 (4.5),
# 11.2 s at 24 (3.8), AMD EPYC (Zen 5).
_UNROLL_MAX_LAYERS = 12


def layer_unroll(config: GPTConfig) -> int | bool:
    """`unroll` for `model.forward` in training and evaluation: on CPU, the blocks one after another
    (True) up to 12 layers, else the loop (1); other backends keep the loop.

    A rolled loop stores what the backward pass needs of every block into stacked buffers that XLA
    first fills with zeros, then slices, converts and transposes again in the backward loop.
    Unrolled, each block's residuals are buffers of their own, and XLA fuses those conversions and
    transposes into the operations that make them.
    """
    if jax.default_backend() != "cpu" or config.n_layers > _UNROLL_MAX_LAYERS:
        return 1
    return True


_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
KEEP_HOST_MEMORY_ENV = "MICROGPT_KEEP_HOST_MEMORY"


def keep_host_memory() -> bool:
    """Tell glibc's malloc to keep the memory it frees, for the next training step to reuse; True if
    it was told. Call it before JAX's first computation (the `train` and `evaluate` commands do):
    JAX's CPU threads take their malloc arena when they start.

    XLA's CPU backend allocates an executable's buffers (the logits alone are 128 MB at the seed
    configuration) on every call. glibc serves blocks this large with fresh `mmap`s and unmaps them
    when freed, so every call faults every page in again: about 260,000 page faults (0.4 s of
    system time) per seed-size training step. One arena (`M_ARENA_MAX` 1), no `mmap` for large
    blocks (`M_MMAP_MAX` 0) and no trimming (`M_TRIM_THRESHOLD`) make the second step reuse the
    first step's pages. The costs: the process keeps what it freed until it exits, so it holds
    2-4x the resident memory (bench/README.md), and its threads share one arena's lock, which
    slows a batch-8 decode loop by about 30%: so training and evaluation processes call this, and
    `generate` does not.

    Does nothing (False) where the C library is not glibc, once JAX's backends exist (too late to
    help), or with the environment variable MICROGPT_KEEP_HOST_MEMORY=0 (1, the default, is on; any
    other value is a ValueError).
    """
    setting = os.environ.get(KEEP_HOST_MEMORY_ENV, "1")
    if setting not in ("0", "1"):
        raise ValueError(f"{KEEP_HOST_MEMORY_ENV} must be 0 or 1, got {setting!r}")
    if setting == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or _backends_initialized():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    return all([mallopt(param, value) == 1 for param, value in settings])


def _backends_initialized() -> bool:
    from jax._src import xla_bridge  # no public API says whether the backends exist yet

    initialized = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(initialized()) if initialized is not None else False
