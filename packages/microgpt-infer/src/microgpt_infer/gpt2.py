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
from microgpt_core.checkpoint import read_header
from microgpt_core.params import Params, param_shapes, unflatten
from microgpt_infer.errors import ModelFileError, UnsupportedModelError

__all__ = ["FIELDS", "KEY_TABLE", "is_gpt2_config", "gpt2_config", "load_gpt2_params", "read_safetensors"]

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
_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,
}


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


def gpt2_config(body: dict[str, Any], path: Path | str = "config.json") -> GPTConfig:
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


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a float32 numpy array (F64/F32/F16/BF16 accepted).

    The header is checked by core's `read_header` (length, JSON, dtypes, shapes, offsets that tile
    the data exactly) before any byte of a tensor is read. Raises `ModelFileError` naming the file
    (and the tensor) for a missing, truncated, corrupted or foreign file.
    """
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found (a GPT-2 folder needs model.safetensors)")
    try:
        header = read_header(path)
    except CheckpointError as e:
        raise ModelFileError(str(e)) from None
    data = path.read_bytes()
    body = memoryview(data)[8 + int.from_bytes(data[:8], "little") :]
    tensors = {}
    for name, entry in header.items():
        if entry["dtype"] not in _SAFETENSORS_DTYPES:
            raise ModelFileError(
                f"{path}: tensor {name!r} has dtype {entry['dtype']}; valid: {sorted(_SAFETENSORS_DTYPES)}"
            )
        begin, end = entry["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=_SAFETENSORS_DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"]).astype(np.float32)
    return tensors


def load_gpt2_params(path: Path, config: GPTConfig) -> Params:
    """Reads a Hugging Face GPT-2 `model.safetensors` into our nested params for `config`.

    Raises `ModelFileError` naming the file and the key for a missing, unexpected or mis-shaped tensor.
    """
    raw = read_safetensors(path)
    tensors = {}
    for name, value in raw.items():
        key = name.removeprefix("transformer.")
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        tensors[key] = value
    if config.tie_embeddings:
        tensors.pop("lm_head.weight", None)  # some savers write the tied copy too
    used: set[str] = set()

    def take(hf_name: str, transpose: bool) -> np.ndarray:
        if hf_name not in tensors:
            raise ModelFileError(f"{path}: missing tensor {hf_name!r} (needed for this config.json)")
        used.add(hf_name)
        return tensors[hf_name].T if transpose else tensors[hf_name]

    flat = {}
    for ours, shape in param_shapes(config).items():
        hf_name, transpose = KEY_TABLE[ours]
        if "{i}" in hf_name:
            value = np.stack([take(hf_name.format(i=i), transpose) for i in range(config.n_layers)])
        else:
            value = take(hf_name, transpose)
        if value.shape != shape:
            raise ModelFileError(
                f"{path}: tensor {hf_name!r} has shape {value.shape}; config.json implies {shape}"
            )
        if not np.all(np.isfinite(value)):
            raise ModelFileError(f"{path}: tensor {hf_name!r} contains NaN or infinite values")
        flat[ours] = jnp.asarray(value)
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelFileError(
            f"{path}: unexpected tensor(s) {extra[:5]} that this config.json does not use "
            f"(n_layer={config.n_layers}?)"
        )
    return unflatten(flat)
