"""The GPT forward pass and its loss.

    x⁰ = Embed(tokens, positions)                      (B, T, D)
    xˡ = Block_l(xˡ⁻¹)  for l = 1..L  (one `lax.scan` over the stacked blocks)
    logits = Unembed(Norm_f(xᴸ))                       (B, T, V)

`forward` runs it over whole sequences (training, evaluation); `forward_cached` over a chunk of
tokens per row that continues what a `KVCache` holds (prefill and decoding). Both run the same
`layers.block`, with or without the cache.

GPT-2 -> Llama-style, as configuration (GPT-2, Radford et al. 2019, is the default; Llama 3 sets
every line below, SmolLM all but the last):
  * positions: a learned table added to the embeddings -> rotary embeddings (`positional="rope"`,
    Su et al. 2021), which rotate queries and keys by their position, base `rope_theta`;
  * norm: LayerNorm -> RMSNorm (`norm="rmsnorm"`, Zhang and Sennrich 2019): no centring, no bias;
  * MLP: GELU(x W_in) W_out -> SwiGLU (`mlp="swiglu"`, Shazeer 2020): (SiLU(x W_gate) ⊙ x W_in) W_out;
  * attention: H key/value heads -> fewer (`n_kv_heads`, grouped-query attention, Ainslie et al.
    2023; 1 is multi-query, Shazeer 2019), so the KV cache shrinks by H / n_kv_heads;
  * biases: in every linear layer and norm -> none (`bias=False`);
  * head: tied to the token embeddings -> its own matrix (`tie_embeddings=False`; SmolLM ties).
Further options: QK-norm (`qk_norm=True`: queries and keys RMS-normalised per head, as in OLMo 2 and
Qwen3); sinusoidal positions (Vaswani et al. 2017) and token embeddings scaled by √D (`embed_scale`);
no final norm; any MLP width `d_ff` (GPT-2: 4D) and exact GELU; dropout on the embeddings and each
residual branch (not on attention weights); bfloat16 matmul inputs (`compute_dtype`) with float32
accumulation and statistics.
Differences from the original microGPT (kandarpa02/microGPT, 5.4M parameters):
  * blocks are stacked on a leading axis and run by `lax.scan`, so compile time does not grow with
    depth, and each layer is initialised from its own key (the original reused `key=0`);
  * GPT-2 initialisation (N(0, 0.02), residual projections scaled by 1/√(2L));
  * decoding uses a KV cache and a loop compiled once (`cache.py`, `sampling.py`) instead of
    recompiling the whole model for every new token.
The original's own configuration is `GPTConfig(vocab_size=8192, context_length=256, d_model=256,
n_layers=4, n_heads=4, positional="sinusoidal", tie_embeddings=True, embed_scale=True,
final_norm=False)`: 5,256,192 parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from microgpt_core.cache import KVCache
from microgpt_core.config import GPTConfig
from microgpt_core.layers import block, dropout, embed, norm, unembed
from microgpt_core.params import Params

__all__ = ["cross_entropy", "forward", "forward_cached", "hidden_states"]


def hidden_states(
    params: Params,
    tokens: jax.Array,
    config: GPTConfig,
    *,
    rng: jax.Array | None = None,
    train: bool = False,
    unroll: int | bool = 1,
) -> jax.Array:
    """The residual stream after the last block (and the final norm, if any).

    Args:
      params: model parameters (`init_params`).
      tokens: (B, T) int token ids, T <= context_length.
      config: the model's configuration.
      rng: dropout key, used only when `train` is true.
      train: apply dropout (needs `rng`).
      unroll: blocks per iteration of the scan (`lax.scan`'s `unroll`; True: all of them, no loop).
        The same numbers, compiled differently (the train step unrolls them for speed on CPU).
    Returns:
      (B, T, D) float32.
    """
    T = tokens.shape[1]
    if T > config.context_length:
        raise ValueError(f"sequence length {T} exceeds context_length {config.context_length}")
    rng = rng if train and config.dropout > 0 else None
    rng_embed, rng_blocks = jax.random.split(rng) if rng is not None else (None, None)
    x = embed(params["embed"], tokens, jnp.arange(T), config=config)  # (B, T, D)
    x = dropout(x, config.dropout, rng_embed)  # (B, T, D)
    layer_rngs = jax.random.split(rng_blocks, config.n_layers) if rng_blocks is not None else None
    x, _ = _blocks(params, x, config, rngs=layer_rngs, unroll=unroll)  # (B, T, D)
    return _final_norm(params, x, config)  # (B, T, D)


def _blocks(
    params: Params,
    x: jax.Array,
    config: GPTConfig,
    *,
    positions: jax.Array | None = None,
    cache: KVCache | None = None,
    rngs: jax.Array | None = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, KVCache | None]:
    """x through the L blocks: one `lax.scan` over the stacked layer params (and each layer's cache
    slice and dropout key, when given)."""

    def layer(x, inputs):
        layer_params, layer_cache, layer_rng = inputs
        return block(layer_params, x, config=config, positions=positions, cache=layer_cache, rng=layer_rng)

    return jax.lax.scan(layer, x, (params["blocks"], cache, rngs), unroll=unroll)  # (B, T, D), cache


def _final_norm(params: Params, x: jax.Array, config: GPTConfig) -> jax.Array:
    return norm(params["final_norm"], x, config=config) if config.final_norm else x  # (B, T, D)


def forward(
    params: Params,
    tokens: jax.Array,
    config: GPTConfig,
    *,
    rng: jax.Array | None = None,
    train: bool = False,
    unroll: int | bool = 1,
) -> jax.Array:
    """Next-token logits for every position.

    Args:
      params: model parameters (`init_params`).
      tokens: (B, T) int token ids, T <= context_length.
      config: the model's configuration.
      rng: dropout key, used only when `train` is true.
      train: apply dropout (needs `rng`).
      unroll: as in `hidden_states`.
    Returns:
      logits: (B, T, V) float32; logits[b, t] scores the token at position t + 1.
    """
    x = hidden_states(params, tokens, config, rng=rng, train=train, unroll=unroll)  # (B, T, D)
    return unembed(params, x, config=config)  # (B, T, V)


def forward_cached(
    params: Params, cache: KVCache, tokens: jax.Array, positions: jax.Array, config: GPTConfig
) -> tuple[jax.Array, KVCache]:
    """Logits for a chunk of tokens per row, given the cache of everything before it (cache.py).

    The same blocks as `forward`, without dropout; each attends over its layer's cache, into which
    it first writes the chunk's keys and values.

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
    token_positions = positions[:, None] + jnp.arange(tokens.shape[1])  # (B, T)
    x = embed(params["embed"], tokens, token_positions, config=config)  # (B, T, D)
    x, cache = _blocks(params, x, config, positions=token_positions, cache=cache)  # (B, T, D)
    return unembed(params, _final_norm(params, x, config), config=config), cache  # (B, T, V)


def cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean negative log-likelihood of the targets, in float32:

        ℓ = -(1/Σm) Σ_{b,t} m_{b,t} · log softmax(z_{b,t})[y_{b,t}]

    Args:
      logits: (B, T, V) scores z.
      targets: (B, T) int ids y.
      mask: optional (B, T) weights m (bool or 0/1); all ones when None.
    Returns:
      a float32 scalar.
    """
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    log_z = jax.nn.logsumexp(logits, axis=-1)  # (B, T)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # (B, T)
    nll = log_z - target_logit  # (B, T)
    if mask is None:
        return jnp.mean(nll)
    mask = mask.astype(logits.dtype)  # (B, T)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
