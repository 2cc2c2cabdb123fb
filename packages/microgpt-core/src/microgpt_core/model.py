"""The GPT forward pass and its loss.

    x⁰ = Embed(tokens, positions)                      (B, T, D)
    xˡ = Block_l(xˡ⁻¹)  for l = 1..L  (one `lax.scan` over the stacked blocks)
    logits = Unembed(Norm_f(xᴸ))                       (B, T, V)

`forward` runs it over whole sequences (training, evaluation); `forward_cached` over a chunk of
tokens per row that continues what a `KVCache` holds (prefill and decoding); `trace` is `forward`
observed: it also returns every intermediate activation, and can zero heads or patch activations on
the way (interpretability; `logit_lens` reads each layer's residual stream as logits). All run the
same `layers.block`, with or without a cache or an observer.

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

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from microgpt_core.cache import KVCache
from microgpt_core.config import GPTConfig
from microgpt_core.layers import Look, block, dropout, embed, norm, unembed
from microgpt_core.params import Params

__all__ = [
    "ACTIVATIONS",
    "activation_shapes",
    "cross_entropy",
    "forward",
    "forward_cached",
    "hidden_states",
    "logit_lens",
    "trace",
]

ACTIVATIONS = (
    "embed",
    "resid_pre",
    "attn_pattern",
    "attn_z",
    "attn_out",
    "resid_mid",
    "mlp_hidden",
    "mlp_out",
    "resid_post",
    "final",
)
"""The activations `trace` returns, in the order the pass makes them (`activation_shapes`)."""


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
    x, _, _ = _blocks(params, x, config, rngs=layer_rngs, unroll=unroll)  # (B, T, D)
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
    observe: Callable[[jax.Array, dict[str, jax.Array]], Look] | None = None,
) -> tuple[jax.Array, KVCache | None, dict[str, jax.Array]]:
    """x through the L blocks: one `lax.scan` over the stacked layer params (and each layer's cache
    slice and dropout key, when given). `observe(layer, seen)` makes the layer's `Look`, which
    records what it sees in `seen`; the scan stacks those over layers."""

    def layer(x, inputs):
        layer_params, layer_cache, layer_rng, index = inputs
        seen: dict[str, jax.Array] = {}
        look = observe(index, seen) if observe is not None else None
        x, layer_cache = block(
            layer_params, x, config=config, positions=positions, cache=layer_cache, rng=layer_rng, look=look
        )
        return x, (layer_cache, seen)

    layers = (params["blocks"], cache, rngs, jnp.arange(config.n_layers))
    x, (cache, seen) = jax.lax.scan(layer, x, layers, unroll=unroll)  # (B, T, D), cache, (L, ...) each
    return x, cache, seen


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
    x, cache, _ = _blocks(params, x, config, positions=token_positions, cache=cache)  # (B, T, D)
    return unembed(params, _final_norm(params, x, config), config=config), cache  # (B, T, V)


def activation_shapes(config: GPTConfig, batch: int, length: int) -> dict[str, tuple[int, ...]]:
    """The shape of each activation `trace` returns, for `batch` rows of `length` tokens (B, T):
    per-layer ones lead with L; `patch` takes one layer's, without it."""
    B, T, L, D = batch, length, config.n_layers, config.d_model
    H, Dh, F = config.n_heads, config.head_dim, config.d_ff
    shapes = {"embed": (B, T, D), "attn_pattern": (L, B, H, T, T), "attn_z": (L, B, H, T, Dh)}
    shapes |= {name: (L, B, T, D) for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")}
    shapes |= {"mlp_hidden": (L, B, T, F), "final": (B, T, D)}
    return {name: shapes[name] for name in ACTIVATIONS}


def trace(
    params: Params,
    tokens: jax.Array,
    config: GPTConfig,
    *,
    ablate: Sequence[tuple[int, int]] | jax.Array = (),
    patch: Mapping[str, tuple[int | None, jax.Array]] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`forward` (without dropout) that also returns its intermediate activations, and can change
    them on the way: zero-ablate heads, or patch an activation (Meng et al. 2022, "Locating and
    editing factual associations in GPT").

        activations[name][l] = the value the hook point `name` of block l saw (`layers.block`)
        ablate (l, h):        attn_z[l][:, h] ← 0, before the output projection
        patch name: (l, a):   activation name at layer l ← a; the rest of the pass runs on a

    Names and shapes are `ACTIVATIONS` and `activation_shapes`; "embed" (the first block's input)
    and "final" (after the final norm) are whole-model ones, patched with layer None. A "fused"
    attention model is traced on the math path, which gives the same numbers.

    Args:
      params: model parameters.
      tokens: (B, T) int token ids, T <= context_length.
      config: the model's configuration.
      ablate: (layer, head) pairs whose attention output is zeroed, or an (N, 2) int array.
      patch: activation name -> (layer, array of that layer's shape), e.g.
        {"resid_post": (3, other["resid_post"][3])}.
    Returns:
      logits (B, T, V) float32, and the activations, a dict of float32 arrays.
    """
    B, T = tokens.shape
    if T > config.context_length:
        raise ValueError(f"sequence length {T} exceeds context_length {config.context_length}")
    patch = _checked_patch(patch, activation_shapes(config, B, T), config.n_layers)
    head_mask = _head_mask(ablate, config)  # (L, H): 0 where a head is ablated

    def observe(layer: jax.Array, seen: dict[str, jax.Array]) -> Look:
        def look(name: str, value: jax.Array) -> jax.Array:
            if name == "attn_z" and head_mask is not None:
                value = value * head_mask[layer][:, None, None]  # (B, H, T, Dh)
            if name in patch:
                at, new = patch[name]
                value = jnp.where(layer == at, new, value)
            seen[name] = value
            return value

        return look

    x = embed(params["embed"], tokens, jnp.arange(T), config=config)  # (B, T, D)
    embedded = x = patch["embed"][1] if "embed" in patch else x
    x, _, seen = _blocks(params, x, config, observe=observe)  # (B, T, D), {name: (L, ...)}
    x = _final_norm(params, x, config)  # (B, T, D)
    x = patch["final"][1] if "final" in patch else x
    activations = {"embed": embedded, **seen, "final": x}
    return unembed(params, x, config=config), {name: activations[name] for name in ACTIVATIONS}


def logit_lens(params: Params, activations: Mapping[str, jax.Array], config: GPTConfig) -> jax.Array:
    """Each layer's residual stream read as the model's prediction (nostalgebraist 2020, "interpreting
    GPT: the logit lens"): the final norm and the unembedding applied to every block's output,

        lens[l] = Unembed(Norm_f(resid_post[l]))

    The last layer's is the logits.

    Args:
      params: model parameters.
      activations: `trace`'s, of which "resid_post" (L, B, T, D) is read.
      config: the model's configuration.
    Returns:
      (L, B, T, V) float32 logits.
    """
    resid = activations["resid_post"]  # (L, B, T, D)
    return jax.vmap(lambda x: unembed(params, _final_norm(params, x, config), config=config))(resid)


def _head_mask(ablate: Sequence[tuple[int, int]] | jax.Array, config: GPTConfig) -> jax.Array | None:
    """(L, H) float32: 0 at each ablated (layer, head), 1 elsewhere; None when nothing is ablated.
    Python ints are checked here; traced ones (under `jax.jit`) cannot be."""
    if len(ablate) == 0:
        return None
    pairs = jnp.asarray(ablate, dtype=jnp.int32).reshape(-1, 2)  # (N, 2)
    for layer, head in () if isinstance(ablate, jax.Array) else ablate:
        if isinstance(layer, int) and not 0 <= layer < config.n_layers:
            raise ValueError(f"ablate: layer {layer} is outside 0..{config.n_layers - 1}")
        if isinstance(head, int) and not 0 <= head < config.n_heads:
            raise ValueError(f"ablate: head {head} is outside 0..{config.n_heads - 1}")
    return jnp.ones((config.n_layers, config.n_heads)).at[pairs[:, 0], pairs[:, 1]].set(0.0)


def _checked_patch(
    patch: Mapping[str, tuple[int | None, jax.Array]] | None,
    shapes: dict[str, tuple[int, ...]],
    n_layers: int,
) -> dict[str, tuple[int | None, jax.Array]]:
    """The patch with float32 arrays, or a ValueError naming the bad name, layer or shape."""
    checked = {}
    for name, entry in (patch or {}).items():
        if name not in shapes:
            raise ValueError(f"patch: unknown activation {name!r}; one of {', '.join(ACTIVATIONS)}")
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise ValueError(f"patch[{name!r}] must be a (layer, array) pair")
        layer, value = entry
        whole = name in ("embed", "final")
        shape = shapes[name] if whole else shapes[name][1:]
        if whole and layer is not None:
            raise ValueError(f"patch[{name!r}]: {name} belongs to no layer; give None, not {layer!r}")
        if not whole and (layer is None or (isinstance(layer, int) and not 0 <= layer < n_layers)):
            raise ValueError(f"patch[{name!r}]: layer {layer!r} is outside 0..{n_layers - 1}")
        if tuple(jnp.shape(value)) != shape:
            raise ValueError(f"patch[{name!r}]: shape {tuple(jnp.shape(value))}, expected {shape}")
        checked[name] = (layer, jnp.asarray(value, dtype=jnp.float32))
    return checked


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
