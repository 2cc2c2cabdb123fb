"""A key table between our parameters and a Hugging Face `model.safetensors`, read in both directions.

A table maps each of our dotted names to the Hugging Face tensor(s) that hold it and whether they
are transposed:

    "blocks.attn.w_out": ("model.layers.{i}.self_attn.o_proj.weight", True)
    "blocks.attn.w_qkv": (("...q_proj.weight", "...k_proj.weight", "...v_proj.weight"), True)

`{i}` is the layer index: our (L, ...) tensor is the Hugging Face layer tensors stacked on a leading
axis. `True` transposes each tensor (torch's `nn.Linear` stores (out, in), ours are (in, out): y = x W).
Several names are concatenated along our last axis (each transposed first), in the order given;
`splits` gives the width of each part for the way back. `from_hf` reads a file into our params by the
table, `to_hf` writes our params back by the same table, so the two are inverse by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core import CheckpointError, GPTConfig
from microgpt_core.checkpoint import CONFIG_FILE, read_safetensors
from microgpt_core.params import Params, flatten, param_shapes, unflatten
from microgpt_infer.errors import ModelFileError

__all__ = ["FLOAT_DTYPES", "KeyTable", "Splits", "from_hf", "hf_shapes", "read_hf_weights", "to_hf"]

# Our dotted name -> (the Hugging Face name, or names concatenated along our last axis; transposed?).
KeyTable = Mapping[str, tuple[str | tuple[str, ...], bool]]
# Our dotted name -> the width of each Hugging Face part along our last axis (names with several parts).
Splits = Mapping[str, tuple[int, ...]]
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # the safetensors dtypes read (widened to float32)


def _names(entry: str | tuple[str, ...]) -> tuple[str, ...]:
    return (entry,) if isinstance(entry, str) else entry


def _layers(name: str, config: GPTConfig) -> list[int | None]:
    """The layer indices of a table name: every layer for a per-layer name, else one None."""
    return list(range(config.n_layers)) if "{i}" in name else [None]


def hf_shapes(table: KeyTable, config: GPTConfig, splits: Splits | None = None) -> dict[str, tuple[int, ...]]:
    """{Hugging Face name: shape} of every tensor `config` needs, as stored (before any transpose)."""
    shapes = {}
    for ours, shape in param_shapes(config).items():
        entry, transpose = table[ours]
        names = _names(entry)
        for i in _layers(names[0], config):
            one = shape[1:] if i is not None else shape  # one layer of a stacked tensor
            widths = (splits or {}).get(ours, (one[-1],))
            assert len(widths) == len(names) and sum(widths) == one[-1], (ours, widths, one)
            for name, width in zip(names, widths, strict=True):
                part = (*one[:-1], width)
                shapes[name.format(i=i)] = part[::-1] if transpose else part
    return shapes


def from_hf(tensors: Mapping[str, np.ndarray], table: KeyTable, config: GPTConfig) -> Params:
    """Our nested params for `config` from {Hugging Face name: array} (every name of `hf_shapes`)."""
    flat = {}
    for ours in param_shapes(config):
        entry, transpose = table[ours]
        names = _names(entry)
        layers = []
        for i in _layers(names[0], config):
            parts = [tensors[name.format(i=i)] for name in names]
            parts = [p.T if transpose else p for p in parts]
            layers.append(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1))
        flat[ours] = jnp.asarray(np.stack(layers) if "{i}" in names[0] else layers[0])
    return unflatten(flat)


def to_hf(
    params: Params, table: KeyTable, config: GPTConfig, splits: Splits | None = None
) -> dict[str, np.ndarray]:
    """{Hugging Face name: contiguous float32 array} of `params` by the same table (`from_hf`'s inverse)."""
    flat = flatten(params)
    out = {}
    for ours in param_shapes(config):
        entry, transpose = table[ours]
        names = _names(entry)
        value = np.asarray(jax.device_get(flat[ours]), dtype=np.float32)
        for i in _layers(names[0], config):
            one = value[i] if i is not None else value
            widths = (splits or {}).get(ours, (one.shape[-1],))
            parts = np.split(one, np.cumsum(widths)[:-1], axis=-1)
            for name, part in zip(names, parts, strict=True):
                out[name.format(i=i)] = np.ascontiguousarray(part.T if transpose else part)
    return out


def read_hf_weights(
    path: Path,
    table: KeyTable,
    config: GPTConfig,
    *,
    rename: Callable[[str], str | None],
    describe: str,
    splits: Splits | None = None,
) -> Params:
    """Reads a Hugging Face `model.safetensors` into our params for `config`, by `table`.

    Read by core's `read_safetensors` (the one safetensors reader), with `rename` (a file's tensor name
    as the table spells it, or None for one to skip) and F64/F32/F16/BF16 widened to float32.

    Args:
      path: the safetensors file.
      describe: the config's size in its own field names, for the message about a file too small.
    Raises:
      ModelFileError: naming the file and the key, for a missing, truncated or corrupted file, or a
        missing, unexpected, mis-shaped, mistyped or non-finite tensor.
    """
    # Every weight takes 2 bytes at least (16 bits): a file smaller than that cannot hold this config,
    # and an absurd layer count (10**30) would otherwise make us list names per layer before finding out.
    need = 2 * sum(math.prod(shape) for shape in param_shapes(config).values())
    if path.is_file() and path.stat().st_size < need:
        raise ModelFileError(
            f"{path}: {path.stat().st_size} bytes, too small for the model {CONFIG_FILE} describes "
            f"({describe}: at least {need} bytes in 16 bits)"
        )
    try:
        shapes = hf_shapes(table, config, splits)
        tensors = read_safetensors(path, shapes, dtypes=FLOAT_DTYPES, rename=rename, expected_by=CONFIG_FILE)
    except CheckpointError as e:
        raise ModelFileError(str(e)) from None
    return from_hf(tensors, table, config)
