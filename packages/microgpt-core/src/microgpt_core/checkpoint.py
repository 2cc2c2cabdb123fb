"""The microGPT file format: `config.json` + `model.safetensors` in one folder; never pickle.

    config.json         GPTConfig.to_dict() plus "format_version", pretty-printed JSON
    model.safetensors   every parameter under its dotted name (`params.flatten`), float32,
                        metadata {"format": "np"}

`save_pretrained` writes each file under a temporary name in the same folder and renames it into
place, so a crash never leaves a half-written file under a final name. `load_pretrained` checks the
file against its config before reading any tensor: every name, dtype and shape, and the safetensors
header itself (length, JSON, offsets within the file), so a truncated or corrupted file, or one made
for another config, raises `CheckpointError` naming the file and the key instead of a library's
internal message.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from microgpt_core.config import FORMAT_VERSION, ConfigError, GPTConfig
from microgpt_core.files import fsync_folder, write_temp
from microgpt_core.params import Params, flatten, param_shapes, unflatten

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "load_pretrained",
    "parse_json",
    "read_header",
    "save_pretrained",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

_DTYPE = "F32"  # safetensors' name for float32, the only dtype parameters are stored in
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header's size
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_DTYPE_NAMES = {
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
def save_pretrained(directory: str | os.PathLike[str], params: Params, config: GPTConfig) -> Path:
    """Writes `config.json` and `model.safetensors` for `params` of `config` into `directory`.

    The folder is created if missing. Both files are written under temporary names first and only
    then renamed over the final names, so existing good files survive any failure while writing.

    Args:
      directory: destination folder.
      params: nested dict of arrays matching `param_shapes(config)` (any float dtype; stored float32).
      config: the model's configuration.
    Returns:
      The folder as a `Path`.
    Raises:
      CheckpointError: `params` does not match `config` (names or shapes), or `directory` is a file.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory}: exists and is not a directory")
    tensors = _tensors_to_save(params, config)
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


def _tensors_to_save(params: Params, config: GPTConfig) -> dict[str, np.ndarray]:
    """Flat {name: float32 numpy array}, checked against `param_shapes(config)`."""
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
        tensors[name] = np.ascontiguousarray(np.asarray(jax.device_get(value), dtype=np.float32))
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
        valid config, or a tensor is missing, unexpected, mis-shaped or not float32.
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
    arrays = _read_weights(directory / WEIGHTS_FILE, config)
    return unflatten({name: jnp.asarray(value) for name, value in arrays.items()}), config


def parse_json(data: bytes, where: str) -> Any:
    """The JSON value of `data` (UTF-8), or `CheckpointError` starting with `where` for anything that
    is not valid JSON text: bad UTF-8, a syntax error, a key given twice, nesting deeper than the
    interpreter's recursion limit, an integer of more than 4,300 digits (Python's conversion limit).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{where}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from None
    except _DuplicateKey as e:
        raise CheckpointError(f"{where}: key {e.args[0]!r} appears more than once") from None
    except RecursionError:
        raise CheckpointError(f"{where}: not valid JSON here: nested too deeply to read") from None
    except ValueError as e:  # an integer too long to convert
        raise CheckpointError(f"{where}: not valid JSON here: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)


def _read_config(path: Path) -> GPTConfig:
    """Parses and validates a `config.json` (any known format version)."""
    body = parse_json(_read_bytes(path), str(path))
    if not isinstance(body, dict):
        raise CheckpointError(
            f"{path}: must hold a JSON object of GPTConfig fields, got a JSON {type(body).__name__}"
        )
    version = body.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version must be an integer >= 1, got {json.dumps(version)}")
    try:
        return GPTConfig.upgrade(body)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_weights(path: Path, config: GPTConfig) -> dict[str, np.ndarray]:
    """Validates `model.safetensors` against `config`, then reads it: {dotted name: float32 array}."""
    header = read_header(path)
    expected = param_shapes(config)
    where = f"{path} (for the config in {CONFIG_FILE})"
    _check_names(where, expected, set(header))
    for name, shape in expected.items():
        dtype, got = header[name]["dtype"], tuple(header[name]["shape"])
        if dtype != _DTYPE:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {_DTYPE_NAMES.get(dtype, dtype)}; expected float32"
            )
        if got != shape:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {got}; expected {shape}")
    try:
        arrays = safetensors.numpy.load_file(path)
    except Exception as e:  # the header was checked above: this is a damaged file or a library bug
        raise CheckpointError(
            f"{path}: corrupted safetensors file; the reader failed with {type(e).__name__}: {e}"
        ) from None
    for name, value in arrays.items():
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: tensor {name!r} contains NaN or infinite values")
    return arrays


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The safetensors JSON header, checked against the file's size: {name: {dtype, shape, ...}}.

    Layout: 8 bytes little-endian header length N, N bytes of JSON, then the tensors' bytes; each
    tensor's `data_offsets` [begin, end) are relative to the data section, which they tile exactly.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (a checkpoint needs {WEIGHTS_FILE})")
    size = path.stat().st_size
    bad = f"{path}: truncated or corrupted safetensors file"
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{bad}: {size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(prefix, "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{bad}: header length {n} does not fit in the file's {size} bytes")
        raw = f.read(n)
    header = parse_json(raw, f"{bad}: its {n}-byte header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad}: its header is not a JSON object")
    header.pop("__metadata__", None)
    spans = []
    for name, entry in header.items():
        what = f"{bad}: header entry for tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise CheckpointError(f"{what} lacks dtype, shape or data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_BYTES:
            raise CheckpointError(f"{what} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise CheckpointError(f"{what} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(map(_is_count, offsets))
            or offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[dtype]
        ):
            raise CheckpointError(
                f"{what} has data_offsets {offsets!r} that do not match its shape {shape} and dtype {dtype}"
            )
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise CheckpointError(
                f"{bad}: tensor {name!r} starts at byte {begin} of the data, expected {end} (overlap or gap)"
            )
        end = stop
    if 8 + n + end != size:
        last = f" (tensor {max(spans)[2]!r} is cut off)" if spans and 8 + n + end > size else ""
        raise CheckpointError(
            f"{bad}: the header describes {8 + n + end} bytes but the file has {size}{last}"
        )
    return header


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found (a checkpoint needs {path.name})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read: {e.strerror}") from None


# ------------------------------------------------------------------------------------------------
def _check_names(where: str, expected: dict[str, tuple[int, ...]], got: set[str]) -> None:
    """Raises if tensors are missing from `got` or present in it but unknown to the config."""
    missing = [f"{name!r} {shape}" for name, shape in expected.items() if name not in got]
    extra = sorted(got - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensor(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected tensor(s) {extra} that this config does not use")
    if problems:
        raise CheckpointError(f"{where}: {'; '.join(problems)}")


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out
