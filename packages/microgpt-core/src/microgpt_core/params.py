"""Parameters: a plain nested dict of arrays, with the L blocks stacked on a leading axis.

Names (joined by "." they are also the safetensors keys):

    embed.tokens            (V, D)
    embed.positions         (T, D)      learned positions only
    blocks.ln1.scale        (L, D)      blocks.ln1.bias (L, D) when bias and layernorm
    blocks.attn.w_qkv       (L, D, Q)   blocks.attn.b_qkv (L, Q) when bias; Q = (H + 2·Hkv)·Dh (3D
                                        for multi-head attention): columns [queries | keys | values]
    blocks.attn.q_norm.scale (L, Dh)    blocks.attn.k_norm.scale (L, Dh)                qk_norm only
    blocks.attn.w_out       (L, D, D)   blocks.attn.b_out (L, D) when bias
    blocks.ln2.scale        (L, D)      blocks.ln2.bias (L, D) when bias and layernorm
    blocks.mlp.w_gate       (L, D, F)   blocks.mlp.b_gate (L, F) when bias   swiglu MLP only
    blocks.mlp.w_in         (L, D, F)   blocks.mlp.b_in (L, F) when bias
    blocks.mlp.w_out        (L, F, D)   blocks.mlp.b_out (L, D) when bias
    final_norm.scale        (D,)        final_norm.bias (D,) when bias, layernorm and final_norm
    head.w                  (D, V)      untied embeddings only
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from microgpt_core.config import GPTConfig

__all__ = ["Params", "init_params", "count_params", "param_shapes", "param_axes", "flatten", "unflatten"]

# The parameters: nested dicts of arrays, {"embed": {"tokens": E (V, D), ...}, "blocks": {...}, ...}
# (`param_shapes` lists every leaf). The one type every module that takes parameters names.
Params = dict[str, Any]

INIT_STD = 0.02  # GPT-2's N(0, 0.02)


def param_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's dotted name and shape for `config`, in a fixed order."""
    V, T, D = config.vocab_size, config.context_length, config.d_model
    L, F, Q, Dh = config.n_layers, config.d_ff, config.qkv_dim, config.head_dim
    norm_bias = config.bias and config.norm == "layernorm"  # RMSNorm has a scale only
    shapes: dict[str, tuple[int, ...]] = {"embed.tokens": (V, D)}
    if config.positional == "learned":
        shapes["embed.positions"] = (T, D)
    for norm in ("ln1", "ln2"):
        shapes[f"blocks.{norm}.scale"] = (L, D)
        if norm_bias:
            shapes[f"blocks.{norm}.bias"] = (L, D)
    shapes["blocks.attn.w_qkv"] = (L, D, Q)
    if config.qk_norm:
        shapes["blocks.attn.q_norm.scale"] = (L, Dh)
        shapes["blocks.attn.k_norm.scale"] = (L, Dh)
    shapes["blocks.attn.w_out"] = (L, D, D)
    if config.mlp == "swiglu":
        shapes["blocks.mlp.w_gate"] = (L, D, F)
    shapes["blocks.mlp.w_in"] = (L, D, F)
    shapes["blocks.mlp.w_out"] = (L, F, D)
    if config.bias:
        shapes["blocks.attn.b_qkv"] = (L, Q)
        shapes["blocks.attn.b_out"] = (L, D)
        if config.mlp == "swiglu":
            shapes["blocks.mlp.b_gate"] = (L, F)
        shapes["blocks.mlp.b_in"] = (L, F)
        shapes["blocks.mlp.b_out"] = (L, D)
    if config.final_norm:
        shapes["final_norm.scale"] = (D,)
        if norm_bias:
            shapes["final_norm.bias"] = (D,)
    if not config.tie_embeddings:
        shapes["head.w"] = (D, V)
    return shapes


# Logical axis names of each parameter (rule 9): train maps them to mesh axes in one table.
_AXES = {
    "embed.tokens": ("vocab", "embed"),
    "embed.positions": ("seq", "embed"),
    "scale": ("layers", "embed"),
    "bias": ("layers", "embed"),
    "blocks.attn.w_qkv": ("layers", "embed", "heads"),
    "blocks.attn.q_norm.scale": ("layers", "head_dim"),
    "blocks.attn.k_norm.scale": ("layers", "head_dim"),
    "blocks.attn.b_qkv": ("layers", "heads"),
    "blocks.attn.w_out": ("layers", "heads", "embed"),
    "blocks.attn.b_out": ("layers", "embed"),
    "blocks.mlp.w_gate": ("layers", "embed", "mlp"),
    "blocks.mlp.b_gate": ("layers", "mlp"),
    "blocks.mlp.w_in": ("layers", "embed", "mlp"),
    "blocks.mlp.b_in": ("layers", "mlp"),
    "blocks.mlp.w_out": ("layers", "mlp", "embed"),
    "blocks.mlp.b_out": ("layers", "embed"),
    "final_norm.scale": ("embed",),
    "final_norm.bias": ("embed",),
    "head.w": ("embed", "vocab"),
}


def param_axes(config: GPTConfig) -> Params:
    """A pytree mirroring `init_params(config)` whose leaves are tuples of logical axis names."""
    flat = {}
    for name in param_shapes(config):
        flat[name] = _AXES.get(name) or _AXES[name.rsplit(".", 1)[1]]
    return unflatten(flat)


@functools.partial(jax.jit, static_argnames=("config",))
def init_params(rng: jax.Array, config: GPTConfig) -> Params:
    """GPT-2 initialisation: weights ~ N(0, 0.02), residual output projections (`attn.w_out`,
    `mlp.w_out`) scaled by 1/sqrt(2L) (Radford et al. 2019), biases 0, norm scales 1.

    Args:
      rng: a PRNG key; it is split once per parameter, so every layer draws its own values.
      config: the model's configuration.
    Returns:
      A nested dict of float32 arrays (see the module docstring for names and shapes).
      Compiled once per config, so initialising a large model is one XLA program.
    """
    shapes = param_shapes(config)
    keys = dict(zip(shapes, jax.random.split(rng, len(shapes)), strict=True))
    residual_std = INIT_STD / math.sqrt(2 * config.n_layers)
    flat = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[1]
        if leaf == "scale":
            flat[name] = jnp.ones(shape, jnp.float32)
        elif leaf.startswith("b"):  # bias, b_qkv, b_out, b_gate, b_in
            flat[name] = jnp.zeros(shape, jnp.float32)
        else:
            std = residual_std if leaf == "w_out" else INIT_STD
            flat[name] = std * jax.random.normal(keys[name], shape, jnp.float32)
    return unflatten(flat)


def count_params(params: Params) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(math.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


def flatten(params: Params, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": leaf}."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def unflatten(flat: dict[str, Any]) -> Params:
    """{"a.b.c": leaf} -> nested dict."""
    params: Params = {}
    for name, value in flat.items():
        node = params
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params
