"""GPT-2 checkpoints in Hugging Face's layout, converted to microGPT's parameters and tokenizer.

A folder saved by `transformers` (`GPT2LMHeadModel.save_pretrained`, or downloaded from the Hub):

    config.json         {"model_type": "gpt2", "n_embd", "n_layer", "n_head", "n_positions", ...}
    model.safetensors   "transformer.h.0.attn.c_attn.weight", ... (or without "transformer.")
    vocab.json, merges.txt

GPT-2 is one configuration of our model: learned positions, biases, a final layer norm, tied
embeddings, tanh GELU. Its `Conv1D` layers store weights as (in, out), which is our `x W` layout
already; only the untied `lm_head` (an `nn.Linear`, (out, in)) needs a transpose. Per-layer tensors
`h.{i}.*` are stacked on a leading layer axis. `KEY_TABLE` is the whole mapping.

Variants whose arithmetic differs from ours are refused with `UnsupportedModelError` naming the field
(`scale_attn_by_inverse_layer_idx`, `reorder_and_upcast_attn`, `scale_attn_weights: false`,
cross-attention, activations other than GELU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from microgpt_core import CheckpointError, ConfigError, GPTConfig
from microgpt_core.checkpoint import CONFIG_FILE, read_safetensors
from microgpt_core.params import Params, param_shapes, unflatten
from microgpt_infer.errors import ModelFileError, UnsupportedModelError

__all__ = ["FIELDS", "KEY_TABLE", "is_gpt2_config", "gpt2_config", "load_gpt2_params"]

# Our dotted name <- (Hugging Face name, with {i} for the layer index; transpose?).
KEY_TABLE: dict[str, tuple[str, bool]] = {
    "embed.tokens": ("wte.weight", False),  # (V, D)
    "embed.positions": ("wpe.weight", False),  # (T, D)
    "blocks.ln1.scale": ("h.{i}.ln_1.weight", False),  # (D,) per layer
    "blocks.ln1.bias": ("h.{i}.ln_1.bias", False),
    "blocks.attn.w_qkv": ("h.{i}.attn.c_attn.weight", False),  # Conv1D (D, 3D): [q | k | v]
    "blocks.attn.b_qkv": ("h.{i}.attn.c_attn.bias", False),
    "blocks.attn.w_out": ("h.{i}.attn.c_proj.weight", False),  # Conv1D (D, D)
    "blocks.attn.b_out": ("h.{i}.attn.c_proj.bias", False),
    "blocks.ln2.scale": ("h.{i}.ln_2.weight", False),
    "blocks.ln2.bias": ("h.{i}.ln_2.bias", False),
    "blocks.mlp.w_in": ("h.{i}.mlp.c_fc.weight", False),  # Conv1D (D, F)
    "blocks.mlp.b_in": ("h.{i}.mlp.c_fc.bias", False),
    "blocks.mlp.w_out": ("h.{i}.mlp.c_proj.weight", False),  # Conv1D (F, D)
    "blocks.mlp.b_out": ("h.{i}.mlp.c_proj.bias", False),
    "final_norm.scale": ("ln_f.weight", False),
    "final_norm.bias": ("ln_f.bias", False),
    "head.w": ("lm_head.weight", True),  # nn.Linear (V, D) -> (D, V); untied checkpoints only
}
# Buffers some checkpoints carry (the causal mask) that are not parameters.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")

_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "exact"}
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # the safetensors dtypes read (widened to float32)


def is_gpt2_config(body: dict[str, Any]) -> bool:
    """Whether a parsed `config.json` is a Hugging Face GPT-2 config."""
    return body.get("model_type") == "gpt2"


# What the JSON value of a field must be, and the test of it.
COUNT, COUNT_OR_NULL, ID_OR_NULL = "an integer >= 1", "an integer >= 1 or null", "an integer >= 0 or null"
POSITIVE, NONNEGATIVE, PROBABILITY = "a finite number > 0", "a finite number >= 0", "a number in [0, 1]"
BOOL, STR, STR_OR_NULL, STRS_OR_NULL = (
    "true or false",
    "a string",
    "a string or null",
    "a list of strings or null",
)


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: object) -> bool:
    return (_int(x) or isinstance(x, float)) and math.isfinite(x)


_VALID = {
    COUNT: lambda x: _int(x) and x >= 1,
    COUNT_OR_NULL: lambda x: x is None or (_int(x) and x >= 1),
    ID_OR_NULL: lambda x: x is None or (_int(x) and x >= 0),
    POSITIVE: lambda x: _number(x) and x > 0,
    NONNEGATIVE: lambda x: _number(x) and x >= 0,
    PROBABILITY: lambda x: _number(x) and 0 <= x <= 1,
    BOOL: lambda x: isinstance(x, bool),
    STR: lambda x: isinstance(x, str),
    STR_OR_NULL: lambda x: x is None or isinstance(x, str),
    STRS_OR_NULL: lambda x: x is None or (isinstance(x, list) and all(isinstance(i, str) for i in x)),
}
# Every field of a GPT-2 config.json that we read or know (transformers' GPT2Config). Unknown fields
# are left alone: checkpoints carry many optional ones.
FIELDS = {
    "vocab_size": COUNT, "n_positions": COUNT, "n_embd": COUNT, "n_layer": COUNT, "n_head": COUNT,
    "n_inner": COUNT_OR_NULL, "n_ctx": COUNT,
    "layer_norm_epsilon": POSITIVE, "initializer_range": NONNEGATIVE,
    "attn_pdrop": PROBABILITY, "embd_pdrop": PROBABILITY, "resid_pdrop": PROBABILITY,
    "summary_first_dropout": PROBABILITY,
    "tie_word_embeddings": BOOL, "scale_attn_weights": BOOL, "scale_attn_by_inverse_layer_idx": BOOL,
    "reorder_and_upcast_attn": BOOL, "add_cross_attention": BOOL, "use_cache": BOOL,
    "summary_use_proj": BOOL, "summary_proj_to_labels": BOOL,
    "activation_function": STR, "model_type": STR, "summary_type": STR, "transformers_version": STR,
    "summary_activation": STR_OR_NULL, "dtype": STR_OR_NULL, "torch_dtype": STR_OR_NULL,
    "architectures": STRS_OR_NULL,
    "bos_token_id": ID_OR_NULL, "eos_token_id": ID_OR_NULL, "pad_token_id": ID_OR_NULL,
}  # fmt: skip


def gpt2_config(body: dict[str, Any], path: Path | str = CONFIG_FILE) -> GPTConfig:
    """Our `GPTConfig` for a Hugging Face GPT-2 `config.json`; refuses variants we cannot run.

    Every known field's JSON value is checked first (`FIELDS`: booleans must be JSON true/false,
    epsilons finite positive numbers, n_inner an integer or null, ...).

    Args:
      body: the parsed config.json.
      path: its path, for error messages.
    Raises:
      UnsupportedModelError: a variant with different arithmetic (the message names the field).
      ModelFileError: a missing field, or a field of the wrong JSON type or range (names it).
    """
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        if field not in body:
            raise ModelFileError(f"{path}: field {field!r} is missing; a GPT-2 config.json has {field}")
    for field, valid in FIELDS.items():
        if field in body and not _VALID[valid](body[field]):
            raise ModelFileError(f"{path}: field {field!r} must be {valid}, got {json.dumps(body[field])}")
    refused = {
        "scale_attn_by_inverse_layer_idx": (True, "attention scores scaled by 1/(layer index + 1)"),
        "reorder_and_upcast_attn": (True, "attention reordered and upcast (a different numerics path)"),
        "scale_attn_weights": (False, "attention scores not scaled by 1/sqrt(head_dim)"),
        "add_cross_attention": (True, "cross-attention layers (an encoder-decoder model)"),
    }
    for field, (bad, what) in refused.items():
        if body.get(field, not bad) is bad:
            raise UnsupportedModelError(
                f"{path}: {field}={json.dumps(bad)} ({what}) is not supported; microGPT runs GPT-2 with "
                f"{field}={json.dumps(not bad)}"
            )
    activation = body.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"{path}: activation_function {activation!r} is not supported; valid: {sorted(_ACTIVATIONS)}"
        )
    n_inner = body.get("n_inner")
    try:
        return GPTConfig(
            vocab_size=body["vocab_size"],
            context_length=body["n_positions"],
            d_model=body["n_embd"],
            n_layers=body["n_layer"],
            n_heads=body["n_head"],
            d_ff=n_inner if n_inner is not None else 4 * body["n_embd"],
            positional="learned",
            bias=True,
            final_norm=True,
            tie_embeddings=body.get("tie_word_embeddings", True),
            embed_scale=False,
            norm_eps=float(body.get("layer_norm_epsilon", 1e-5)),
            dropout=0.0,
            gelu=_ACTIVATIONS[activation],
        )
    except ConfigError as e:
        raise ModelFileError(f"{path}: {e}") from None


def load_gpt2_params(path: Path, config: GPTConfig) -> Params:
    """Reads a Hugging Face GPT-2 `model.safetensors` into our nested params for `config`.

    Read by core's `read_safetensors` (the one safetensors reader), with the names of `KEY_TABLE`
    (a leading "transformer." dropped; the causal-mask buffers and a tied model's copy of the
    embeddings as `lm_head.weight` skipped) and F64/F32/F16/BF16 widened to float32. Raises
    `ModelFileError` naming the file and the key for a missing, truncated or corrupted file, or a
    missing, unexpected, mis-shaped, mistyped or non-finite tensor.
    """
    # Every weight takes 2 bytes at least (16 bits): a file smaller than that cannot hold this config,
    # and an absurd n_layer (10**30) would otherwise make us list 12 names per layer before finding out.
    need = 2 * sum(math.prod(shape) for shape in param_shapes(config).values())
    if path.is_file() and path.stat().st_size < need:
        raise ModelFileError(
            f"{path}: {path.stat().st_size} bytes, too small for the model {CONFIG_FILE} describes (n_layer "
            f"{config.n_layers}, n_embd {config.d_model}, vocab_size {config.vocab_size}: at least {need} "
            "bytes in 16 bits)"
        )
    try:
        tensors = read_safetensors(
            path,
            _hf_shapes(config),
            dtypes=_FLOAT_DTYPES,
            rename=lambda name: _our_name(name, config),
            expected_by=CONFIG_FILE,
        )
    except CheckpointError as e:
        raise ModelFileError(str(e)) from None
    flat = {}
    for ours in param_shapes(config):
        hf_name, transpose = KEY_TABLE[ours]
        names = [hf_name.format(i=i) for i in range(config.n_layers)] if "{i}" in hf_name else [hf_name]
        values = [tensors[name].T if transpose else tensors[name] for name in names]
        flat[ours] = jnp.asarray(np.stack(values) if "{i}" in hf_name else values[0])
    return unflatten(flat)


def _hf_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """{Hugging Face name: shape} of every tensor `config` needs, as stored (before any transpose)."""
    shapes = {}
    for ours, shape in param_shapes(config).items():
        hf_name, transpose = KEY_TABLE[ours]
        if "{i}" in hf_name:
            for i in range(config.n_layers):
                shapes[hf_name.format(i=i)] = shape[1:]  # one layer of the stacked tensor
        else:
            shapes[hf_name] = shape[::-1] if transpose else shape
    return shapes


def _our_name(name: str, config: GPTConfig) -> str | None:
    """A file's tensor name as `KEY_TABLE` spells it, or None for one that is not a parameter."""
    if name.endswith(_IGNORED_SUFFIXES) or (config.tie_embeddings and name == "lm_head.weight"):
        return None  # the causal mask; the tied copy of wte some savers write
    return name.removeprefix("transformer.")
