"""The microGPT file format: `config.json` + `model.safetensors` in one folder; never pickle.

    config.json         GPTConfig.to_dict() plus "format_version", pretty-printed JSON
    model.safetensors   every parameter under its dotted name (`params.flatten`), float32 (or
                        bfloat16 when saved with dtype="bfloat16", half the size; it loads as
                        float32), metadata {"format": "np"}

`save_pretrained` writes each file under a temporary name in the same folder and renames it into
place, so a crash never leaves a half-written file under a final name. `load_pretrained` reads
config.json through `jsonfile.read_json_object` and the weights through `read_safetensors`, the one
safetensors reader (infer's GPT-2 import uses it too): the `safetensors` library parses the file
(header length, JSON, offsets within the file), then every name, dtype and shape is checked against
the config before any tensor is read. A truncated or corrupted file, or one made for another
config, raises `CheckpointError` naming the file and the key instead of a library's traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from microgpt_core.config import FORMAT_VERSION, ConfigError, GPTConfig, is_integer
from microgpt_core.files import fsync_folder, write_temp
from microgpt_core.jsonfile import read_json_object
from microgpt_core.params import Params, flatten, param_shapes, unflatten

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "STORED_DTYPES",
    "CheckpointError",
    "load_pretrained",
    "read_safetensors",
    "save_pretrained",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# The dtypes parameters may be stored in (`config.WEIGHTS_DTYPES`), with safetensors' name and numpy's.
STORED_DTYPES = {"float32": ("F32", np.dtype(np.float32)), "bfloat16": ("BF16", np.dtype(ml_dtypes.bfloat16))}
_DTYPE_NAMES = {  # safetensors' dtype names, as numpy spells them (for messages)
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}


class CheckpointError(ValueError):
    """A checkpoint folder cannot be read or written; the message names the file and the key."""


# ------------------------------------------------------------------------------------------------
# Saving.
def save_pretrained(
    directory: str | os.PathLike[str], params: Params, config: GPTConfig, *, dtype: str = "float32"
) -> Path:
    """Writes `config.json` and `model.safetensors` for `params` of `config` into `directory`.

    The folder is created if missing. Both files are written under temporary names first and only
    then renamed over the final names, so existing good files survive any failure while writing.

    Args:
      directory: destination folder.
      params: nested dict of arrays matching `param_shapes(config)` (any float dtype).
      config: the model's configuration.
      dtype: how the weights are stored: "float32", or "bfloat16" (rounded to nearest even: half the
        file, 8 bits of mantissa; `load_pretrained` widens them back to float32).
    Returns:
      The folder as a `Path`.
    Raises:
      CheckpointError: `params` does not match `config` (names or shapes), `dtype` is not one of
        `STORED_DTYPES`, or `directory` is a file.
    """
    directory = Path(directory)
    if dtype not in STORED_DTYPES:
        raise CheckpointError(f"cannot save: dtype must be one of {sorted(STORED_DTYPES)}, got {dtype!r}")
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory}: exists and is not a directory")
    tensors = _tensors_to_save(params, config, STORED_DTYPES[dtype][1])
    weights = safetensors.numpy.save(tensors, metadata={"format": "np"})
    body = {"format_version": FORMAT_VERSION, **config.to_dict()}
    text = json.dumps(body, indent=2) + "\n"

    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for data, name in ((weights, WEIGHTS_FILE), (text.encode("utf-8"), CONFIG_FILE)):
            staged.append((write_temp(directory / name, data), directory / name))
        for temp, final in staged:  # both written: now rename, weights first
            os.replace(temp, final)
    finally:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
    fsync_folder(directory)
    return directory


def _tensors_to_save(params: Params, config: GPTConfig, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Flat {name: numpy array of `dtype`}, checked against `param_shapes(config)`."""
    flat = flatten(params)
    expected = param_shapes(config)
    where = "cannot save: params do not match the config"
    _check_names(where, expected, set(flat))
    tensors = {}
    for name, shape in expected.items():
        value = flat[name] if hasattr(flat[name], "dtype") else np.asarray(flat[name])
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise CheckpointError(f"{where}: tensor {name!r} has dtype {value.dtype}; expected float")
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(value.shape)}; expected {shape}"
            )
        host = np.asarray(jax.device_get(value), dtype=np.float32)
        tensors[name] = np.ascontiguousarray(host.astype(dtype))
    return tensors


# ------------------------------------------------------------------------------------------------
# Loading.
def load_pretrained(directory: str | os.PathLike[str]) -> tuple[Params, GPTConfig]:
    """Reads a folder written by `save_pretrained`.

    Args:
      directory: a folder holding `config.json` and `model.safetensors`.
    Returns:
      (params, config): params as a nested dict of float32 `jax.Array`s.
    Raises:
      CheckpointError: a file is missing, unreadable, truncated or corrupted, config.json is not a
        valid config, or a tensor is missing, unexpected, mis-shaped, not float32 or bfloat16, or not
        finite.
    """
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(
            f"{directory}: checkpoint folder not found; expected a folder with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (as written by save_pretrained)"
        )
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory}: not a folder; expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    config = _read_config(directory / CONFIG_FILE)
    arrays = read_safetensors(
        directory / WEIGHTS_FILE,
        param_shapes(config),
        expected_by=f"the config in {CONFIG_FILE}",
        dtypes=[name for name, _ in STORED_DTYPES.values()],
    )
    return unflatten({name: jnp.asarray(value) for name, value in arrays.items()}), config


def _read_config(path: Path) -> GPTConfig:
    """Parses and validates a `config.json` (any known format version)."""
    body = read_json_object(path, error=CheckpointError, holds="a JSON object of GPTConfig fields")
    version = body.get("format_version", FORMAT_VERSION)
    if not is_integer(version):
        raise CheckpointError(f"{path}: format_version must be an integer >= 1, got {json.dumps(version)}")
    try:
        return GPTConfig.upgrade(body)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def read_safetensors(
    path: str | os.PathLike[str],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    dtypes: Collection[str] = ("F32",),
    rename: Callable[[str], str | None] | None = None,
    expected_by: str | None = None,
) -> dict[str, np.ndarray]:
    """The tensors `shapes` names, read from the safetensors file `path` as float32 numpy arrays.

    The `safetensors` library parses the file (the header's length and JSON, every tensor's dtype,
    shape and byte range, which must tile the data exactly). Then, before any tensor is read, its
    names must be exactly those of `shapes` (none missing, none unexpected), and each tensor must
    have its shape there and one of `dtypes`; each tensor read is widened to float32 and must be
    finite.

    Args:
      path: the `.safetensors` file.
      shapes: {name: shape} of every tensor expected, in the order of the result.
      dtypes: the safetensors dtypes accepted ("F32", "F16", "BF16", "F64", ...).
      rename: the name each tensor of the file has in `shapes` (e.g. without a prefix), or None for
        a tensor to skip (a buffer that is not a parameter); default: its own name.
      expected_by: what expects these tensors, for the message about missing or unexpected ones
        (e.g. "the config in config.json").
    Returns:
      {name: float32 array} in the order of `shapes`.
    Raises:
      CheckpointError: one line naming the file (and the tensor) for a missing, unreadable,
        truncated or corrupted file, a missing or unexpected tensor, a wrong shape or dtype, or a
        NaN or infinite value.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    size = path.stat().st_size
    try:
        with safetensors.safe_open(path, framework="numpy") as f:
            stored = {}  # our name -> the tensor's name in the file
            for name in f.keys():  # noqa: SIM118 - a safe_open handle is not a mapping
                ours = rename(name) if rename is not None else name
                if ours is None:
                    continue
                if ours in stored:
                    raise CheckpointError(f"{path}: tensors {stored[ours]!r} and {name!r} both hold {ours!r}")
                stored[ours] = name
            where = f"{path} (for {expected_by})" if expected_by else str(path)
            _check_names(where, shapes, set(stored))
            for ours, shape in shapes.items():
                entry = f.get_slice(stored[ours])
                dtype, got = entry.get_dtype(), tuple(entry.get_shape())
                if dtype not in dtypes:
                    valid = " or ".join(_DTYPE_NAMES.get(d, d) for d in dtypes)
                    dtype = _DTYPE_NAMES.get(dtype, dtype)
                    raise CheckpointError(f"{path}: tensor {ours!r} has dtype {dtype}; expected {valid}")
                if got != tuple(shape):
                    raise CheckpointError(f"{path}: tensor {ours!r} has shape {got}; expected {tuple(shape)}")
            arrays = {}
            for ours in shapes:
                with np.errstate(over="ignore"):  # a float64 beyond float32's range: inf, refused below
                    value = np.asarray(f.get_tensor(stored[ours]), dtype=np.float32)
                if not np.isfinite(value).all():
                    raise CheckpointError(f"{path}: tensor {ours!r} contains NaN or infinite values")
                arrays[ours] = value
    except safetensors.SafetensorError as e:
        reason = _first_line(e).removeprefix("Error while deserializing header: ")
        if "not fully covered" in reason:
            reason += " (cut short, or bytes after the last tensor)"
        raise CheckpointError(
            f"{path}: truncated or corrupted safetensors file ({size} bytes): {reason}"
        ) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read: {e.strerror or e}") from None
    return arrays


def _first_line(e: BaseException) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)


# ------------------------------------------------------------------------------------------------
def _check_names(where: str, expected: Mapping[str, tuple[int, ...]], got: set[str]) -> None:
    """Raises if tensors are missing from `got` or present in it but unknown to the config."""
    missing = [f"{name!r} {tuple(shape)}" for name, shape in expected.items() if name not in got]
    extra = [repr(name) for name in sorted(got - set(expected))]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing, 'tensor')}")
    if extra:
        problems.append(f"unexpected {_some(extra, 'tensor')} that this config does not use")
    if problems:
        raise CheckpointError(f"{where}: {'; '.join(problems)}")


def _some(items: list[str], noun: str, shown: int = 5) -> str:
    """`noun` and `items`: "tensor 'a'", "tensors 'a', 'b'", or the first `shown` and how many more."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{noun}{'s' if len(items) > 1 else ''} {', '.join(items[:shown])}{more}"
