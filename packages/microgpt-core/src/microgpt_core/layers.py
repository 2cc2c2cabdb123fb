"""The layers of a GPT, each a short pure function that follows its equation line by line.

Shape letters: B batch, T query length, S key length, D model width, H heads, Hkv key/value heads,
G = H / Hkv query heads per key/value head, Dh head dim (D/H), F MLP width, V vocabulary, L layers.
Parameters are float32; `compute_dtype` is the dtype of matmul inputs (float32 or bfloat16), whose
products are accumulated and returned in float32, in the backward pass too (`precision.matmul`).
Softmax, norm statistics, rotations and logits are always float32.

References: Vaswani et al. 2017, "Attention is all you need"; Radford et al. 2019, "Language models
are unsupervised multitask learners" (GPT-2); Ba et al. 2016, "Layer normalization"; Zhang and
Sennrich 2019, "Root mean square layer normalization"; Hendrycks and Gimpel 2016, "Gaussian error
linear units"; Shazeer 2020, "GLU variants improve Transformer"; Su et al. 2021, "RoFormer: enhanced
Transformer with rotary position embedding"; Ainslie et al. 2023, "GQA: training generalized
multi-query Transformer models from multi-head checkpoints"; Shazeer 2019, "Fast Transformer decoding:
one write-head is all you need"; Henry et al. 2020, "Query-key normalization for Transformers".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from microgpt_core.cache import KVCache, write_chunk
from microgpt_core.config import GPTConfig
from microgpt_core.params import Params
from microgpt_core.precision import accumulation_dtype, matmul  # x w in compute_dtype, float32 result

Look = Callable[[str, jax.Array], jax.Array]
"""A hook point's observer: `look(name, value)` sees the activation `name` where it is made and
returns the value the rest of the pass uses (itself, or a patched or ablated one; `model.trace`)."""

__all__ = [
    "Look",
    "attention",
    "block",
    "causal_mask",
    "causal_self_attention",
    "dropout",
    "embed",
    "gelu",
    "layer_norm",
    "linear",
    "merge_heads",
    "mlp",
    "norm",
    "qkv_heads",
    "rms_norm",
    "rotary",
    "sinusoidal_positions",
    "unembed",
]


def linear(
    x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, compute_dtype: Any = jnp.float32
) -> jax.Array:
    """Affine map y = x W + b.

    Args:
      x: inputs (..., Din).
      w: weight W (Din, Dout).
      b: optional bias (Dout,).
      compute_dtype: dtype of the matmul inputs; the result is float32.
    Returns:
      y: (..., Dout) float32.
    """
    y = matmul("...i,io->...o", x, w, compute_dtype)  # (..., Dout)
    return y if b is None else y + b


def layer_norm(params: Params, x: jax.Array, *, eps: float) -> jax.Array:
    """Layer normalisation over the last axis (Ba et al. 2016):

        y = (x - μ) / sqrt(σ² + ε) · γ + β,   μ = mean(x),  σ² = mean((x - μ)²)

    Args:
      params: {"scale": γ (D,), "bias": β (D,), absent when the model has no biases}.
      x: (..., D).
      eps: ε.
    Returns:
      y: (..., D) float32.
    """
    x = x.astype(accumulation_dtype(x.dtype))
    mean = jnp.mean(x, axis=-1, keepdims=True)  # (..., 1)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)  # (..., 1)
    y = (x - mean) * jax.lax.rsqrt(var + eps) * params["scale"]  # (..., D)
    return y + params["bias"] if "bias" in params else y


def rms_norm(params: Params, x: jax.Array, *, eps: float) -> jax.Array:
    """Root-mean-square normalisation over the last axis (Zhang and Sennrich 2019; Llama):

        y = x / sqrt(mean(x²) + ε) · γ

    Unlike `layer_norm` it neither centres x nor adds a bias.

    Args:
      params: {"scale": γ (D,)}.
      x: (..., D).
      eps: ε.
    Returns:
      y: (..., D) float32.
    """
    x = x.astype(accumulation_dtype(x.dtype))
    mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)  # (..., 1)
    return x * jax.lax.rsqrt(mean_square + eps) * params["scale"]  # (..., D)


def norm(params: Params, x: jax.Array, *, config: GPTConfig) -> jax.Array:
    """The model's normalisation: `layer_norm` or `rms_norm`, as `config.norm` says, with its ε."""
    if config.norm == "rmsnorm":
        return rms_norm(params, x, eps=config.norm_eps)
    return layer_norm(params, x, eps=config.norm_eps)


def gelu(x: jax.Array, *, approximate: bool) -> jax.Array:
    """Gaussian error linear unit (Hendrycks and Gimpel 2016):

    exact:  GELU(x) = x · Φ(x) = x/2 · (1 + erf(x / √2))
    tanh:   GELU(x) ≈ x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))   (GPT-2)
    """
    return jax.nn.gelu(x, approximate=approximate)


def sinusoidal_positions(positions: jax.Array, d_model: int) -> jax.Array:
    """Fixed sinusoidal position encodings (Vaswani et al. 2017, §3.5):

        PE(p, 2i) = sin(p / 10000^(2i/D)),   PE(p, 2i+1) = cos(p / 10000^(2i/D))

    Args:
      positions: integer positions of any shape (...,).
      d_model: D, even.
    Returns:
      (..., D) float32.
    """
    inv_freq = 1.0 / 10000.0 ** (jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)  # (D/2,)
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # (..., D/2)
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # (..., D/2, 2)
    return pe.reshape(*positions.shape, d_model)  # (..., D), sin and cos interleaved


def rotary(x: jax.Array, positions: jax.Array, *, theta: float) -> jax.Array:
    """Rotary position embedding (Su et al. 2021): each pair of dimensions (i, i + Dh/2) of a head is
    rotated by an angle proportional to the position p,

        ω_i = θ^(-2i/Dh),   i = 0 .. Dh/2 - 1
        y_i        = x_i cos(p ω_i) - x_{i+Dh/2} sin(p ω_i)
        y_{i+Dh/2} = x_i sin(p ω_i) + x_{i+Dh/2} cos(p ω_i)

    Rotating a query at position m and a key at position n makes their dot product a function of
    x_q, x_k and m - n only: attention sees relative positions. Position 0 is the identity.
    Dimension i is paired with i + Dh/2 (GPT-NeoX's and Hugging Face's Llama layout); the paper pairs
    2i with 2i + 1, the same rotation up to a fixed permutation of each head's dimensions.

    Args:
      x: (B, H, T, Dh) queries or keys, Dh even.
      positions: (T,) or (B, T) int positions of the T tokens.
      theta: the base θ.
    Returns:
      (B, H, T, Dh) float32.
    """
    half = x.shape[-1] // 2
    omega = theta ** (-2.0 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])  # (Dh/2,)
    angles = positions[..., None].astype(jnp.float32) * omega  # (T, Dh/2) or (B, T, Dh/2)
    cos = jnp.expand_dims(jnp.cos(angles), -3)  # (1, T, Dh/2) or (B, 1, T, Dh/2): over heads
    sin = jnp.expand_dims(jnp.sin(angles), -3)
    x = x.astype(accumulation_dtype(x.dtype))
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, Dh/2) each
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)  # (B, H, T, Dh)


def embed(params: Params, tokens: jax.Array, positions: jax.Array, *, config: GPTConfig) -> jax.Array:
    """Token plus position embedding:

        x_t = E[token_t] · s + P[p_t],   s = √D if `embed_scale` else 1,
        P = a learned table (GPT-2) or `sinusoidal_positions`; with rotary positions there is no P
        (the position enters the attention, see `rotary`).

    Args:
      params: {"tokens": E (V, D), "positions": P (T, D) for learned positions}.
      tokens: (B, T) int.
      positions: (B, T) or (T,) int positions of the tokens.
    Returns:
      x: (B, T, D) float32.
    """
    x = params["tokens"][tokens]  # (B, T, D)
    if config.embed_scale:
        x = x * math.sqrt(config.d_model)
    if config.positional == "learned":
        return x + params["positions"][positions]  # (B, T, D)
    if config.positional == "sinusoidal":
        return x + sinusoidal_positions(positions, config.d_model)  # (B, T, D)
    return x  # rope


def unembed(params: Params, x: jax.Array, *, config: GPTConfig) -> jax.Array:
    """Output logits z = x Eᵀ with tied embeddings, else z = x W_head.

    Args:
      params: the model's params (uses "embed.tokens" or "head.w").
      x: (B, T, D) final hidden states.
    Returns:
      logits: (B, T, V) float32.
    """
    if config.tie_embeddings:
        return matmul("btd,vd->btv", x, params["embed"]["tokens"], config.compute_dtype)  # (B, T, V)
    return matmul("btd,dv->btv", x, params["head"]["w"], config.compute_dtype)  # (B, T, V)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout: y = x · m / (1 - p), m ~ Bernoulli(1 - p); identity when `rng` is None."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)  # same shape as x
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def causal_mask(query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """M[t, s] = True where query t may attend key s, i.e. key_position(s) <= query_position(t).

    Args:
      query_positions: (..., T) int.
      key_positions: (..., S) int.
    Returns:
      (..., 1, T, S) bool, broadcastable over heads.
    """
    return (key_positions[..., None, :] <= query_positions[..., :, None])[..., None, :, :]


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, config: GPTConfig, look: Look | None = None
) -> jax.Array:
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1), per query head h:

        Attention(Q_h, K_g, V_g) = softmax(Q_h K_gᵀ / √Dh + M) V_g,   M[t, s] = 0 if allowed else -∞

    where g = ⌊h / G⌋ is the key/value head that query head h shares with the G - 1 others of its
    group (G = H / Hkv: G = 1 is multi-head attention, Hkv = 1 multi-query). The "math" path computes
    exactly that, softmax in float32; the "fused" path calls `jax.nn.dot_product_attention` (tests
    check that the two agree). An observed pass (`look`) takes the math path, whose softmax weights
    it sees as "attn_pattern".

    Args:
      q: (B, H, T, Dh) queries.
      k: (B, Hkv, S, Dh) keys.
      v: (B, Hkv, S, Dh) values.
      mask: bool, broadcastable to (B, H, T, S); True where attending is allowed.
      look: the hook point's observer, or None.
    Returns:
      (B, H, T, Dh) float32.
    """
    cd = config.compute_dtype
    B, H, T, Dh = q.shape
    if config.attention == "fused" and look is None:
        out = jax.nn.dot_product_attention(
            q.astype(cd).transpose(0, 2, 1, 3),  # (B, T, H, Dh)
            k.astype(cd).transpose(0, 2, 1, 3),  # (B, S, Hkv, Dh)
            v.astype(cd).transpose(0, 2, 1, 3),  # (B, S, Hkv, Dh)
            mask=jnp.broadcast_to(mask, (B, H, T, k.shape[2])),
        )  # (B, T, H, Dh)
        return out.transpose(0, 2, 1, 3).astype(accumulation_dtype(cd))  # (B, H, T, Dh)
    Hkv = k.shape[1]
    q = q.reshape(B, Hkv, H // Hkv, T, Dh)  # (B, Hkv, G, T, Dh): query heads by the key head they share
    scores = matmul("bkgtd,bksd->bkgts", q, k, cd) / math.sqrt(Dh)  # (B, Hkv, G, T, S)
    scores = jnp.where(jnp.expand_dims(mask, -3), scores, -jnp.inf)  # (B, Hkv, G, T, S)
    weights = jax.nn.softmax(scores, axis=-1)  # (B, Hkv, G, T, S)
    if look is not None:
        S = k.shape[2]
        weights = look("attn_pattern", weights.reshape(B, H, T, S)).reshape(weights.shape)
    out = matmul("bkgts,bksd->bkgtd", weights, v, cd)  # (B, Hkv, G, T, Dh)
    return out.reshape(B, H, T, Dh)


def qkv_heads(
    params: Params, x: jax.Array, positions: jax.Array, *, config: GPTConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries, keys and values of every head, ready for `attention`:

        [Q K V] = x W_qkv + b_qkv       Q: H heads, K and V: Hkv heads, each of Dh dimensions
        Q, K ← RMSNorm(Q), RMSNorm(K)   per head, when `qk_norm`
        Q, K ← RoPE(Q, p), RoPE(K, p)   when positional == "rope" (`rotary`)

    Args:
      params: the attention params {"w_qkv" (D, (H + 2Hkv)·Dh), "b_qkv" when bias, "q_norm" and
        "k_norm" {"scale" (Dh,)} when qk_norm, ...}.
      x: (B, T, D).
      positions: (T,) or (B, T) int positions of the tokens (read by rotary positions only).
    Returns:
      q (B, H, T, Dh), k and v (B, Hkv, T, Dh), float32.
    """
    B, T, _ = x.shape
    H, Hkv, Dh = config.n_heads, config.n_kv_heads, config.head_dim
    qkv = linear(x, params["w_qkv"], params.get("b_qkv"), compute_dtype=config.compute_dtype)
    heads = qkv.reshape(B, T, H + 2 * Hkv, Dh).transpose(0, 2, 1, 3)  # (B, H + 2Hkv, T, Dh)
    q, k, v = heads[:, :H], heads[:, H : H + Hkv], heads[:, H + Hkv :]  # (B, H|Hkv|Hkv, T, Dh)
    if config.qk_norm:
        q = rms_norm(params["q_norm"], q, eps=config.norm_eps)  # (B, H, T, Dh)
        k = rms_norm(params["k_norm"], k, eps=config.norm_eps)  # (B, Hkv, T, Dh)
    if config.positional == "rope":
        q = rotary(q, positions, theta=config.rope_theta)  # (B, H, T, Dh)
        k = rotary(k, positions, theta=config.rope_theta)  # (B, Hkv, T, Dh)
    return q, k, v


def merge_heads(params: Params, out: jax.Array, *, config: GPTConfig) -> jax.Array:
    """Concatenates the heads and projects back: y = Concat(head_1..head_H) W_out + b_out.

    Args:
      out: (B, H, T, Dh) per-head attention outputs.
    Returns:
      (B, T, D) float32.
    """
    B, _, T, _ = out.shape
    out = out.transpose(0, 2, 1, 3).reshape(B, T, config.d_model)  # (B, T, D), heads concatenated
    return linear(out, params["w_out"], params.get("b_out"), compute_dtype=config.compute_dtype)  # (B, T, D)


def causal_self_attention(
    params: Params,
    x: jax.Array,
    *,
    config: GPTConfig,
    positions: jax.Array | None = None,
    cache: KVCache | None = None,
    look: Look | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Multi-head causal self-attention, over the chunk itself or over a key/value cache:

        Q, K, V = qkv_heads(x) at the chunk's positions
        K, V ← the layer's cache with the chunk's K, V written at their positions   (with a cache)
        head_h = Attention(Q_h, K_g, V_g, M),   M[t, s] = 0 if position(s) <= position(t) else -∞
        y = Concat(head_1..head_H) W_out + b_out

    Without a cache the keys are the chunk's own, at positions 0..T-1 (training, evaluation). With
    one, slot s of the cache holds position s, so each query attends to every earlier position of
    its row, cached or new (prefill and decoding; see cache.py).

    Args:
      params: {"w_qkv" (D, (H + 2Hkv)·Dh), "w_out" (D, D), "b_qkv" and "b_out" when bias,
        "q_norm" and "k_norm" when qk_norm}.
      x: (B, T, D).
      config: the model's configuration.
      positions: (B, T) int positions of the chunk's tokens; None: 0..T-1 (required with a cache).
      cache: this layer's `KVCache` of (B, Hkv, S, Dh) arrays, or None.
      look: the hook point's observer ("attn_pattern", "attn_z"), or None.
    Returns:
      (B, T, D) float32, and the layer's cache with the chunk written (None without a cache).
    """
    if positions is None:
        positions = jnp.arange(x.shape[1])  # (T,)
    q, k, v = qkv_heads(params, x, positions, config=config)  # (B, H, T, Dh), (B, Hkv, T, Dh) x 2
    if cache is None:
        key_positions = positions  # (T,): the chunk attends to itself
    else:
        start = positions[:, 0]  # (B,) each row's first position
        cache = KVCache(k=write_chunk(cache.k, k, start), v=write_chunk(cache.v, v, start))
        k, v, key_positions = cache.k, cache.v, jnp.arange(cache.k.shape[2])  # (B, Hkv, S, Dh) x 2, (S,)
    mask = causal_mask(positions, key_positions)  # (1, T, T) or (B, 1, T, S)
    out = attention(q, k, v, mask, config=config, look=look)  # (B, H, T, Dh)
    out = look("attn_z", out) if look is not None else out  # (B, H, T, Dh)
    return merge_heads(params, out, config=config), cache  # (B, T, D)


def mlp(params: Params, x: jax.Array, *, config: GPTConfig, look: Look | None = None) -> jax.Array:
    """Position-wise feed-forward network, as `config.mlp` says:

        gelu:    y = GELU(x W_in + b_in) W_out + b_out                           (GPT-2)
        swiglu:  y = (SiLU(x W_gate + b_gate) ⊙ (x W_in + b_in)) W_out + b_out   (Shazeer 2020; Llama)

    with SiLU(z) = z · σ(z).

    Args:
      params: {"w_in" (D, F), "w_out" (F, D), "w_gate" (D, F) for swiglu, and "b_in" (F,),
        "b_out" (D,), "b_gate" (F,) when bias}.
      x: (B, T, D).
      look: the hook point's observer ("mlp_hidden", the input of W_out), or None.
    Returns:
      (B, T, D) float32.
    """
    cd = config.compute_dtype
    h = linear(x, params["w_in"], params.get("b_in"), compute_dtype=cd)  # (B, T, F)
    if config.mlp == "swiglu":
        gate = linear(x, params["w_gate"], params.get("b_gate"), compute_dtype=cd)  # (B, T, F)
        h = jax.nn.silu(gate) * h  # (B, T, F)
    else:
        h = gelu(h, approximate=config.gelu == "tanh")  # (B, T, F)
    h = look("mlp_hidden", h) if look is not None else h  # (B, T, F)
    return linear(h, params["w_out"], params.get("b_out"), compute_dtype=cd)  # (B, T, D)


def block(
    params: Params,
    x: jax.Array,
    *,
    config: GPTConfig,
    positions: jax.Array | None = None,
    cache: KVCache | None = None,
    rng: jax.Array | None = None,
    look: Look | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """One pre-norm Transformer block (GPT-2; Norm is LayerNorm or RMSNorm, see `norm`):

        x = x + Dropout(CausalSelfAttention(Norm₁(x)))
        x = x + Dropout(MLP(Norm₂(x)))

    The one block of the model: training and evaluation call it without a cache, prefill and
    decoding with one (`causal_self_attention`), `model.trace` with a `look` that sees each named
    activation (a hook point: "resid_pre", "attn_pattern", "attn_z", "attn_out", "resid_mid",
    "mlp_hidden", "mlp_out", "resid_post") and may replace it.

    Args:
      params: one layer's params {"ln1", "attn", "ln2", "mlp"} (no leading layer axis).
      x: (B, T, D) residual stream.
      config: the model's configuration.
      positions: (B, T) int positions of the tokens; None: 0..T-1 (required with a cache).
      cache: this layer's `KVCache` (B, Hkv, S, Dh), or None.
      rng: dropout key; None disables dropout (evaluation, decoding).
      look: the hook points' observer, or None.
    Returns:
      (B, T, D) float32, and the layer's cache with the chunk written (None without a cache).
    """
    see = look or _unobserved
    rng_attn, rng_mlp = jax.random.split(rng) if rng is not None else (None, None)
    x = see("resid_pre", x)  # (B, T, D)
    h = norm(params["ln1"], x, config=config)  # (B, T, D)
    h, cache = causal_self_attention(
        params["attn"], h, config=config, positions=positions, cache=cache, look=look
    )
    h = see("attn_out", h)  # (B, T, D)
    x = see("resid_mid", x + dropout(h, config.dropout, rng_attn))  # (B, T, D)
    h = mlp(params["mlp"], norm(params["ln2"], x, config=config), config=config, look=look)  # (B, T, D)
    h = see("mlp_out", h)  # (B, T, D)
    return see("resid_post", x + dropout(h, config.dropout, rng_mlp)), cache  # (B, T, D)


def _unobserved(name: str, value: jax.Array) -> jax.Array:
    return value
