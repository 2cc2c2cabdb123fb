"""Llama checkpoints in Hugging Face's layout, converted to microGPT's parameters (and back).

A folder saved by `transformers` (`LlamaForCausalLM.save_pretrained`, or downloaded from the Hub; SmolLM
and Llama 3 ship this way):

    config.json         {"model_type": "llama", "hidden_size", "num_hidden_layers", "num_attention_heads",
                         "num_key_value_heads", "intermediate_size", "rope_parameters", ...}
    model.safetensors   "model.layers.0.self_attn.q_proj.weight", ..., "lm_head.weight" (untied)
    tokenizer.json      a byte-level BPE with its own split pattern (read by microgpt_data.tokenizer_json)

Llama is one configuration of our model: rotary positions (`positional="rope"`, the "rotate_half"
convention, so q_proj and k_proj need no permutation), RMSNorm, a SwiGLU MLP, no biases, a final norm,
grouped-query attention (`n_kv_heads` = num_key_value_heads), untied embeddings unless
`tie_word_embeddings`. torch's `nn.Linear` stores (out, in) and ours are (in, out) (y = x W), so every
projection is transposed; q_proj (H·Dh, D), k_proj and v_proj (Hkv·Dh, D) become the columns
[Q | K | V] of our fused w_qkv (D, (H + 2·Hkv)·Dh). Per-layer tensors are stacked on a leading layer
axis. `KEY_TABLE` is the whole mapping, read both ways (`hf_keys`).

`rope_theta` is read where transformers 5 writes it (`rope_parameters: {"rope_type", "rope_theta"}`)
and where older versions did (top-level `rope_theta`, `rope_scaling`), with transformers' priority:
`rope_scaling`, else `rope_parameters`, and a `rope_theta` inside it over a top-level one (default
10000). Variants whose arithmetic differs from ours are refused with `UnsupportedModelError` naming
the field: a `rope_type` other than "default" (linear, dynamic, yarn, longrope, llama3 scaling),
`attention_bias: true`, `mlp_bias: true`, `hidden_act` other than SiLU, a `head_dim` other than
hidden_size / num_attention_heads, a `partial_rotary_factor` other than 1 (rotating only part of each
head, which transformers reads at the top level or in the rotary settings), a `quantization_config`.
Inconsistent configs (num_key_value_heads not dividing num_attention_heads) are `ModelFileError`s
naming the field. Keys that are neither Llama's fields nor transformers' common ones are ignored with
a warning naming them (`hf_fields.warn_unknown_keys`).
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
    IDS_OR_NULL,
    NONNEGATIVE,
    OBJECT_OR_NULL,
    POSITIVE,
    PROBABILITY_OR_NULL,
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
    "is_llama_config",
    "llama_config",
    "llama_hf_config",
    "llama_state_dict",
    "load_llama_params",
]

ARCHITECTURE = "LlamaForCausalLM"
_LAYER = "model.layers.{i}."
# Our dotted name <-> (Hugging Face name(s), {i} the layer index; transposed?). Several names are the
# column blocks of one of ours, in order (`_splits` gives their widths). Read by `hf_keys` both ways.
KEY_TABLE: dict[str, tuple[str | tuple[str, ...], bool]] = {
    "embed.tokens": ("model.embed_tokens.weight", False),  # (V, D)
    "blocks.ln1.scale": (_LAYER + "input_layernorm.weight", False),  # (D,) per layer
    "blocks.attn.w_qkv": (
        tuple(_LAYER + f"self_attn.{x}_proj.weight" for x in "qkv"),
        True,
    ),  # (H·Dh, D), (Hkv·Dh, D), (Hkv·Dh, D) -> (D, (H + 2·Hkv)·Dh)
    "blocks.attn.w_out": (_LAYER + "self_attn.o_proj.weight", True),  # (D, H·Dh) -> (H·Dh, D)
    "blocks.ln2.scale": (_LAYER + "post_attention_layernorm.weight", False),
    "blocks.mlp.w_gate": (_LAYER + "mlp.gate_proj.weight", True),  # (F, D) -> (D, F)
    "blocks.mlp.w_in": (_LAYER + "mlp.up_proj.weight", True),  # (F, D) -> (D, F)
    "blocks.mlp.w_out": (_LAYER + "mlp.down_proj.weight", True),  # (D, F) -> (F, D)
    "final_norm.scale": ("model.norm.weight", False),
    "head.w": ("lm_head.weight", True),  # (V, D) -> (D, V); untied checkpoints only
}
# Buffers old checkpoints carry (transformers < 4.31 saved the rotary frequencies) that are not parameters.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
_SILU = ("silu", "swish")  # both are SiLU in transformers' ACT2FN
DEFAULT_ROPE_THETA = 10000.0  # transformers' when a config names none

# Every field of a Llama config.json that we read or know (transformers' LlamaConfig). Other keys are
# ignored, with a warning unless transformers writes them for every model (hf_fields.TRANSFORMERS_KEYS)
# or they are in _IGNORED_KEYS.
FIELDS = {
    "vocab_size": COUNT, "hidden_size": COUNT, "intermediate_size": COUNT, "num_hidden_layers": COUNT,
    "num_attention_heads": COUNT, "num_key_value_heads": COUNT_OR_NULL, "head_dim": COUNT_OR_NULL,
    "max_position_embeddings": COUNT, "pretraining_tp": COUNT_OR_NULL,
    "rms_norm_eps": POSITIVE, "rope_theta": POSITIVE, "initializer_range": NONNEGATIVE,
    "attention_dropout": PROBABILITY_OR_NULL,
    "tie_word_embeddings": BOOL, "attention_bias": BOOL, "mlp_bias": BOOL, "use_cache": BOOL,
    "hidden_act": STR, "model_type": STR, "transformers_version": STR,
    "dtype": STR_OR_NULL, "torch_dtype": STR_OR_NULL, "architectures": STRS_OR_NULL,
    "rope_parameters": OBJECT_OR_NULL, "rope_scaling": OBJECT_OR_NULL,
    "bos_token_id": ID_OR_NULL, "pad_token_id": ID_OR_NULL, "eos_token_id": IDS_OR_NULL,
    "partial_rotary_factor": POSITIVE, "quantization_config": OBJECT_OR_NULL,
}  # fmt: skip
# Keys nanotron writes into the config.json of the Llama models it exports (SmolLM): transformers
# reads neither, and neither do we, without a warning.
_IGNORED_KEYS = ("is_llama_config", "rope_interleaved")
_SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
)


def is_llama_config(body: dict[str, Any]) -> bool:
    """Whether a parsed `config.json` is a Hugging Face Llama config."""
    return body.get("model_type") == "llama"


def llama_config(body: dict[str, Any], path: Path | str = CONFIG_FILE) -> GPTConfig:
    """Our `GPTConfig` for a Hugging Face Llama `config.json`; refuses variants we cannot run.

    Every known field's JSON value is checked first (`FIELDS`), then the rotary settings, biases,
    activation and head shapes (see the module docstring); unknown keys are ignored with a warning on
    the "microgpt_infer" logger (`hf_fields.warn_unknown_keys`).

    Args:
      body: the parsed config.json.
      path: its path, for error messages.
    Raises:
      UnsupportedModelError: a variant with different arithmetic (the message names the field).
      ModelFileError: a missing field, a field of the wrong JSON type or range, or fields that do not
        fit together (names them).
    """
    require_fields(body, _SHAPE_FIELDS, path, "Llama")
    check_fields(body, FIELDS, path)
    if body.get("quantization_config") is not None:
        raise UnsupportedModelError(
            f"{path}: quantization_config is set (quantized weights) and is not supported; microGPT "
            "reads float weights (F32, F16, BF16, F64)"
        )
    theta = _rope_theta(body, path)
    for field, what in (("attention_bias", "q/k/v/o projections"), ("mlp_bias", "MLP projections")):
        if body.get(field, False):
            raise UnsupportedModelError(
                f"{path}: {field}=true (biases on the {what}) is not supported; microGPT's Llama has no "
                f"biases ({field}=false)"
            )
    activation = body.get("hidden_act", "silu")
    if activation not in _SILU:
        raise UnsupportedModelError(
            f"{path}: hidden_act {activation!r} is not supported; microGPT's SwiGLU MLP gates with SiLU "
            f"(valid: {list(_SILU)})"
        )
    d_model, n_heads = body["hidden_size"], body["num_attention_heads"]
    head_dim = body.get("head_dim")
    if head_dim is not None and head_dim * n_heads != d_model:
        raise UnsupportedModelError(
            f"{path}: head_dim {head_dim} is not supported: microGPT's heads are hidden_size / "
            f"num_attention_heads = {d_model} / {n_heads} wide (head_dim {d_model / n_heads:g})"
        )
    if d_model % n_heads:
        raise ModelFileError(
            f"{path}: hidden_size ({d_model}) must be divisible by num_attention_heads ({n_heads})"
        )
    n_kv_heads = body.get("num_key_value_heads") or n_heads
    if n_heads % n_kv_heads:
        raise ModelFileError(
            f"{path}: num_key_value_heads ({n_kv_heads}) must divide num_attention_heads ({n_heads}); "
            "each key/value head serves num_attention_heads / num_key_value_heads query heads"
        )
    warn_unknown_keys(body, FIELDS, path, also=_IGNORED_KEYS)
    try:
        return GPTConfig(
            vocab_size=body["vocab_size"],
            context_length=body["max_position_embeddings"],
            d_model=d_model,
            n_layers=body["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            d_ff=body["intermediate_size"],
            positional="rope",
            rope_theta=theta,
            norm="rmsnorm",
            norm_eps=float(body.get("rms_norm_eps", 1e-6)),
            mlp="swiglu",
            bias=False,
            final_norm=True,
            tie_embeddings=body.get("tie_word_embeddings", False),  # LlamaConfig's default: untied
            embed_scale=False,
            dropout=0.0,
        )
    except ConfigError as e:
        raise ModelFileError(f"{path}: {e}") from None


def _rope_theta(body: dict[str, Any], path: Path | str) -> float:
    """The rotary base, read as transformers reads it; refuses any rope_type but "default", and a
    partial_rotary_factor other than 1."""
    field = "rope_scaling" if body.get("rope_scaling") else "rope_parameters"
    rope = body.get(field) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise UnsupportedModelError(
            f"{path}: {field}.rope_type {json.dumps(rope_type)} is not supported; microGPT's rotary "
            'embeddings are the unscaled kind, rope_type "default"'
        )
    theta = rope.get("rope_theta", body.get("rope_theta", DEFAULT_ROPE_THETA))
    where = f"{field}.rope_theta" if "rope_theta" in rope else "rope_theta"
    check_fields({where: theta}, {where: POSITIVE}, path)
    factor = rope.get("partial_rotary_factor", body.get("partial_rotary_factor", 1.0))
    where = f"{field}.partial_rotary_factor" if "partial_rotary_factor" in rope else "partial_rotary_factor"
    check_fields({where: factor}, {where: POSITIVE}, path)
    if factor != 1:
        raise UnsupportedModelError(
            f"{path}: {where} {json.dumps(factor)} (rotary embeddings on part of each head) is not "
            "supported; microGPT rotates every dimension of a head (partial_rotary_factor 1)"
        )
    return float(theta)


def load_llama_params(path: Path, config: GPTConfig) -> Params:
    """Reads a Hugging Face Llama `model.safetensors` into our nested params for `config`.

    By `hf_keys.read_hf_weights` (core's `read_safetensors`, the one safetensors reader) with the names
    of `KEY_TABLE` (old checkpoints' rotary-frequency buffers and a tied model's `lm_head.weight` copy
    skipped), F64/F32/F16/BF16 widened to float32, q/k/v concatenated into our w_qkv and every
    projection transposed. Raises `ModelFileError` naming the file and the key for a missing,
    truncated or corrupted file, or a missing, unexpected, mis-shaped, mistyped or non-finite tensor.
    """
    describe = (
        f"num_hidden_layers {config.n_layers}, hidden_size {config.d_model}, vocab_size {config.vocab_size}"
    )
    return hf_keys.read_hf_weights(
        path,
        KEY_TABLE,
        config,
        rename=lambda name: _our_name(name, config),
        describe=describe,
        splits=_splits(config),
    )


def _our_name(name: str, config: GPTConfig) -> str | None:
    """A file's tensor name, or None for one that is not a parameter."""
    if name.endswith(_IGNORED_SUFFIXES) or (config.tie_embeddings and name == "lm_head.weight"):
        return None
    return name


def _splits(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The widths of w_qkv's column blocks: queries H·Dh, keys and values Hkv·Dh each."""
    q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    return {"blocks.attn.w_qkv": (q, kv, kv)}


# ------------------------------------------------------------------------------------------------
# The way back: our Llama-style model in Hugging Face's Llama layout (for export_hf.py).
def llama_state_dict(params: Params, config: GPTConfig) -> dict[str, np.ndarray]:
    """{Hugging Face name: float32 array} of `params`, as `LlamaForCausalLM.save_pretrained` names them.

    `KEY_TABLE` read backwards: w_qkv split into q_proj, k_proj and v_proj, every projection
    transposed to (out, in); `lm_head.weight` only when the head is untied (a tied model's file has
    none, as save_pretrained writes it). `config` must be Llama-style (`export_hf.layout_of`).
    """
    return hf_keys.to_hf(params, KEY_TABLE, config, _splits(config))


def llama_hf_config(config: GPTConfig, *, eot_id: int) -> dict[str, Any]:
    """The `config.json` body of transformers' `LlamaConfig` for our Llama-style `config`.

    The fields `LlamaForCausalLM.save_pretrained` writes (less `transformers_version`), so that
    `llama_config` reads it back to `config` and transformers builds the same model; `rope_theta` is
    written both inside `rope_parameters` (transformers 5) and at the top level (transformers 4), and
    `dtype` also as `torch_dtype`. `bos_token_id` and `eos_token_id` are the end-of-text id: our
    tokenizers have one special token that ends (and, in training, separates) documents.
    """
    return {
        "architectures": [ARCHITECTURE],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": eot_id,
        "dtype": "float32",
        "torch_dtype": "float32",  # what transformers 4 reads; 5 reads "dtype"
        "eos_token_id": eot_id,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "hidden_size": config.d_model,
        "initializer_range": 0.02,
        "intermediate_size": config.d_ff,
        "max_position_embeddings": config.context_length,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": config.n_heads,
        "num_hidden_layers": config.n_layers,
        "num_key_value_heads": config.n_kv_heads,
        "pad_token_id": None,
        "pretraining_tp": 1,
        "rms_norm_eps": float(config.norm_eps),
        "rope_parameters": {"rope_theta": float(config.rope_theta), "rope_type": "default"},
        "rope_theta": float(config.rope_theta),  # transformers 4's place for it
        "tie_word_embeddings": config.tie_embeddings,
        "use_cache": True,
        "vocab_size": config.vocab_size,
    }
