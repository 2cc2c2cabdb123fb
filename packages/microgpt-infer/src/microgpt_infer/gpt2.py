"""GPT-2 checkpoints in Hugging Face's layout, converted to microGPT's parameters and tokenizer.

A folder saved by `transformers` (`GPT2LMHeadModel.save_pretrained`, or downloaded from the Hub):

    config.json         {"model_type": "gpt2", "n_embd", "n_layer", "n_head", "n_positions", ...}
    model.safetensors   "transformer.h.0.attn.c_attn.weight", ... (or without "transformer.")
    tokenizer.json, or vocab.json + merges.txt   (read by folder.py)

GPT-2 is one configuration of our model: learned positions, biases, a final layer norm, tied
embeddings, tanh GELU. Its `Conv1D` layers store weights as (in, out), which is our `x W` layout
already; only the untied `lm_head` (an `nn.Linear`, (out, in)) needs a transpose. Per-layer tensors
`h.{i}.*` are stacked on a leading layer axis. `KEY_TABLE` is the whole mapping.

Variants whose arithmetic differs from ours are refused with `UnsupportedModelError` naming the field
(`scale_attn_by_inverse_layer_idx`, `reorder_and_upcast_attn`, `scale_attn_weights: false`,
cross-attention, activations other than GELU, a `quantization_config`). Keys of config.json that are
neither GPT-2's fields nor transformers' common ones are ignored with a warning naming them
(`hf_fields.warn_unknown_keys`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from microgpt_core import ConfigError, GPTConfig
from microgpt_core.checkpoint import CONFIG_FILE
from microgpt_core.params import Params
from microgpt_infer import hf_keys
from microgpt_infer.errors import ModelFileError, UnsupportedModelError
from microgpt_infer.hf_fields import (
    BOOL,
    COUNT,
    COUNT_OR_NULL,
    ID_OR_NULL,
    NONNEGATIVE,
    OBJECT_OR_NULL,
    POSITIVE,
    PROBABILITY,
    STR,
    STR_OR_NULL,
    STRS_OR_NULL,
    check_fields,
    require_fields,
    warn_unknown_keys,
)

__all__ = [
    "ARCHITECTURE",
    "FIELDS",
    "KEY_TABLE",
    "PREFIX",
    "is_gpt2_config",
    "gpt2_config",
    "gpt2_hf_config",
    "gpt2_state_dict",
    "load_gpt2_params",
]

ARCHITECTURE = "GPT2LMHeadModel"
PREFIX = "transformer."  # GPT2LMHeadModel's names of the base model's tensors start with it

# Our dotted name <-> (Hugging Face name, with {i} for the layer index, less PREFIX; transposed?).
# Read by `hf_keys` both ways: `load_gpt2_params` and `gpt2_state_dict`.
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
_ACTIVATION_OF = {"tanh": "gelu_new", "exact": "gelu"}  # what `gpt2_hf_config` writes for ours


def is_gpt2_config(body: dict[str, Any]) -> bool:
    """Whether a parsed `config.json` is a Hugging Face GPT-2 config."""
    return body.get("model_type") == "gpt2"


# Every field of a GPT-2 config.json that we read or know (transformers' GPT2Config). Other keys are
# ignored, with a warning unless transformers writes them for every model (hf_fields.TRANSFORMERS_KEYS).
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
    "quantization_config": OBJECT_OR_NULL,
}  # fmt: skip


def gpt2_config(body: dict[str, Any], path: Path | str = CONFIG_FILE) -> GPTConfig:
    """Our `GPTConfig` for a Hugging Face GPT-2 `config.json`; refuses variants we cannot run.

    Every known field's JSON value is checked first (`FIELDS`: booleans must be JSON true/false,
    epsilons finite positive numbers, n_inner an integer or null, ...); unknown keys are ignored with
    a warning on the "microgpt_infer" logger (`hf_fields.warn_unknown_keys`).

    Args:
      body: the parsed config.json.
      path: its path, for error messages.
    Raises:
      UnsupportedModelError: a variant with different arithmetic (the message names the field).
      ModelFileError: a missing field, or a field of the wrong JSON type or range (names it).
    """
    require_fields(body, ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"), path, "GPT-2")
    check_fields(body, FIELDS, path)
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
    if body.get("quantization_config") is not None:
        raise UnsupportedModelError(
            f"{path}: quantization_config is set (quantized weights) and is not supported; microGPT "
            "reads float weights (F32, F16, BF16, F64)"
        )
    activation = body.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"{path}: activation_function {activation!r} is not supported; valid: {sorted(_ACTIVATIONS)}"
        )
    warn_unknown_keys(body, FIELDS, path)
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

    By `hf_keys.read_hf_weights` (core's `read_safetensors`, the one safetensors reader), with the
    names of `KEY_TABLE` (a leading "transformer." dropped; the causal-mask buffers and a tied model's
    copy of the embeddings as `lm_head.weight` skipped) and F64/F32/F16/BF16 widened to float32.
    Raises `ModelFileError` naming the file and the key for a missing, truncated or corrupted file, or
    a missing, unexpected, mis-shaped, mistyped or non-finite tensor.
    """
    describe = f"n_layer {config.n_layers}, n_embd {config.d_model}, vocab_size {config.vocab_size}"
    return hf_keys.read_hf_weights(
        path, KEY_TABLE, config, rename=lambda name: _our_name(name, config), describe=describe
    )


def _our_name(name: str, config: GPTConfig) -> str | None:
    """A file's tensor name as `KEY_TABLE` spells it, or None for one that is not a parameter."""
    if name.endswith(_IGNORED_SUFFIXES) or (config.tie_embeddings and name == "lm_head.weight"):
        return None  # the causal mask; the tied copy of wte some savers write
    return name.removeprefix(PREFIX)


# ------------------------------------------------------------------------------------------------
# The way back: our GPT-2-style model in Hugging Face's GPT-2 layout (for export_hf.py).
def gpt2_state_dict(params: Params, config: GPTConfig) -> dict[str, np.ndarray]:
    """{Hugging Face name: float32 array} of `params`, as `GPT2LMHeadModel.save_pretrained` names them.

    `KEY_TABLE` read backwards: base-model tensors under "transformer.", and `lm_head.weight` (V, D)
    only when the head is untied (a tied model's file has none, as save_pretrained writes it).
    `config` must be GPT-2-style (`export_hf.layout_of` says which configs are).
    """
    tensors = hf_keys.to_hf(params, KEY_TABLE, config)
    return {(n if n.startswith("lm_head.") else PREFIX + n): value for n, value in tensors.items()}


def gpt2_hf_config(config: GPTConfig, *, eot_id: int) -> dict[str, Any]:
    """The `config.json` body of transformers' `GPT2Config` for our GPT-2-style `config`.

    The fields `GPT2LMHeadModel.save_pretrained` writes (less `transformers_version`), so that
    `gpt2_config` reads it back to `config` and transformers builds the same model. Dropout: ours on
    the embeddings and residual branches (`embd_pdrop`, `resid_pdrop`), none on attention weights
    (`attn_pdrop` 0). `bos_token_id` and `eos_token_id` are the end-of-text id, as GPT-2's.
    """
    return {
        "activation_function": _ACTIVATION_OF[config.gelu],
        "add_cross_attention": False,
        "architectures": [ARCHITECTURE],
        "attn_pdrop": 0.0,
        "bos_token_id": eot_id,
        "dtype": "float32",
        "torch_dtype": "float32",  # what transformers 4 reads; 5 reads "dtype"
        "embd_pdrop": float(config.dropout),
        "eos_token_id": eot_id,
        "initializer_range": 0.02,
        "layer_norm_epsilon": float(config.norm_eps),
        "model_type": "gpt2",
        "n_embd": config.d_model,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,
        "n_layer": config.n_layers,
        "n_positions": config.context_length,
        "pad_token_id": None,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": float(config.dropout),
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "tie_word_embeddings": config.tie_embeddings,
        "use_cache": True,
        "vocab_size": config.vocab_size,
    }
