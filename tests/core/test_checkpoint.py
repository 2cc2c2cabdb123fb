"""`save_pretrained`/`load_pretrained`: bit-exact round trips, atomic writes, and a clear
`CheckpointError` naming the file and the key for every kind of bad folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors.numpy
from safetensors import safe_open

from microgpt_core import CheckpointError, GPTConfig, load_pretrained, save_pretrained
from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_safetensors
from microgpt_core.config import FORMAT_VERSION
from microgpt_core.params import flatten, param_shapes, unflatten

VARIANTS = {
    "learned-bias-tied-norm": {},
    "sinusoidal": {"positional": "sinusoidal"},
    "no-bias": {"bias": False},
    "untied": {"tie_embeddings": False},
    "no-final-norm": {"final_norm": False},
    "seed-like": {
        "positional": "sinusoidal",
        "final_norm": False,
        "embed_scale": True,
        "dropout": 0.1,
        "gelu": "exact",
        "d_ff": 48,
    },
}


def random_params(config: GPTConfig, seed: int = 0):
    """Every leaf random (not the init's zeros and ones), so a bit-exact comparison means something."""
    shapes = param_shapes(config)
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return unflatten(
        {name: jax.random.normal(k, shape) for (name, shape), k in zip(shapes.items(), keys, strict=True)}
    )


@pytest.fixture
def saved(tmp_path, tiny_config, tiny_params) -> Path:
    """A good checkpoint folder of the tiny config."""
    return save_pretrained(tmp_path / "model", tiny_params, tiny_config)


def load_error(directory: Path) -> str:
    """The message of the CheckpointError that loading `directory` raises; checks it is clean."""
    with pytest.raises(CheckpointError) as info:
        load_pretrained(directory)
    message = str(info.value)
    assert "Traceback" not in message
    assert info.value.__cause__ is None  # never chained to a json/safetensors exception as its reason
    return message


def rewrite_tensors(directory: Path, change) -> None:
    """Loads the weights file as numpy arrays, lets `change(dict)` edit it, saves it back."""
    path = directory / WEIGHTS_FILE
    tensors = dict(safetensors.numpy.load_file(path))
    change(tensors)
    safetensors.numpy.save_file(tensors, path, metadata={"format": "np"})


def rewrite_config(directory: Path, change) -> None:
    path = directory / CONFIG_FILE
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


# ------------------------------------------------------------------------------------------------
# Round trip.
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_is_bit_exact(tmp_path, tiny_config, variant):
    config = tiny_config.replace(**VARIANTS[variant])
    params = random_params(config)
    save_pretrained(tmp_path, params, config)
    loaded, loaded_config = load_pretrained(tmp_path)
    assert loaded_config == config
    original, restored = flatten(params), flatten(loaded)
    assert set(restored) == set(original)
    for name, value in original.items():
        assert isinstance(restored[name], jax.Array), name
        assert restored[name].dtype == np.float32, name
        assert np.array_equal(np.asarray(restored[name]), np.asarray(value)), name


def test_round_trip_of_init_params(saved, tiny_config, tiny_params):
    loaded, config = load_pretrained(saved)
    assert config == tiny_config
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(tiny_params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), loaded, tiny_params)


def test_files_have_the_documented_layout(saved, tiny_config):
    assert sorted(os.listdir(saved)) == [CONFIG_FILE, WEIGHTS_FILE]
    text = (saved / CONFIG_FILE).read_text()
    assert text.startswith("{\n  ")  # pretty-printed
    assert json.loads(text) == {"format_version": FORMAT_VERSION, **tiny_config.to_dict()}
    with safe_open(saved / WEIGHTS_FILE, framework="numpy") as f:
        assert f.metadata() == {"format": "np"}
        assert set(f.keys()) == set(param_shapes(tiny_config))
        assert all(f.get_tensor(k).dtype == np.float32 for k in f.keys())  # noqa: SIM118


def test_save_creates_missing_folders_and_casts_to_float32(tmp_path, tiny_config, tiny_params):
    half = jax.tree_util.tree_map(lambda x: x.astype(jax.numpy.bfloat16), tiny_params)
    target = save_pretrained(tmp_path / "a" / "b", half, tiny_config)
    assert target == tmp_path / "a" / "b"
    loaded, _ = load_pretrained(str(target))  # str paths work too
    for name, value in flatten(loaded).items():
        assert value.dtype == np.float32, name


def test_bfloat16_storage_halves_the_file_and_loads_as_the_rounded_float32(tmp_path, tiny_config):
    params = random_params(tiny_config)
    full = save_pretrained(tmp_path / "f32", params, tiny_config)
    half = save_pretrained(tmp_path / "bf16", params, tiny_config, dtype="bfloat16")
    with safe_open(half / WEIGHTS_FILE, framework="numpy") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    # The tensor bytes: the file less its 8-byte header length and JSON header.
    data = lambda d: len(raw := (d / WEIGHTS_FILE).read_bytes()) - 8 - int.from_bytes(raw[:8], "little")  # noqa: E731
    assert data(half) * 2 == data(full)
    loaded, config = load_pretrained(half)
    assert config == tiny_config
    for name, value in flatten(loaded).items():
        assert value.dtype == np.float32, name
        rounded = np.asarray(flatten(params)[name]).astype(jax.numpy.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(value, rounded, err_msg=name)
    with pytest.raises(
        CheckpointError, match=r"dtype must be one of \['bfloat16', 'float32'\], got 'float16'"
    ):
        save_pretrained(tmp_path / "f16", params, tiny_config, dtype="float16")
    assert not (tmp_path / "f16").exists()


def test_save_overwrites_an_existing_checkpoint(saved, tiny_config):
    new = random_params(tiny_config, seed=3)
    save_pretrained(saved, new, tiny_config)
    loaded, _ = load_pretrained(saved)
    np.testing.assert_array_equal(loaded["embed"]["tokens"], new["embed"]["tokens"])
    assert sorted(os.listdir(saved)) == [CONFIG_FILE, WEIGHTS_FILE]


def test_save_rejects_params_that_do_not_match_the_config(tmp_path, tiny_config, tiny_params):
    flat = flatten(tiny_params)
    del flat["blocks.attn.w_qkv"]
    with pytest.raises(CheckpointError, match="blocks.attn.w_qkv"):
        save_pretrained(tmp_path, unflatten(flat), tiny_config)
    flat = flatten(tiny_params)
    flat["embed.tokens"] = flat["embed.tokens"][:5]
    with pytest.raises(CheckpointError, match=r"embed\.tokens.*\(5, 32\).*\(97, 32\)"):
        save_pretrained(tmp_path, unflatten(flat), tiny_config)
    assert not (tmp_path / CONFIG_FILE).exists() and not (tmp_path / WEIGHTS_FILE).exists()


# ------------------------------------------------------------------------------------------------
# Atomic writes.
@pytest.mark.parametrize("fail_at", [1, 2], ids=["writing-weights", "writing-config"])
def test_a_failed_save_leaves_the_old_files_and_no_temporary(saved, tiny_config, monkeypatch, fail_at):
    before = {name: (saved / name).read_bytes() for name in (CONFIG_FILE, WEIGHTS_FILE)}
    calls = []
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == fail_at:  # the bytes are in the temporary file, not yet renamed
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    other = tiny_config.replace(bias=False)
    with pytest.raises(OSError, match="No space left"):
        save_pretrained(saved, random_params(other, seed=1), other)
    monkeypatch.undo()
    assert sorted(os.listdir(saved)) == [CONFIG_FILE, WEIGHTS_FILE]  # no temporary file left
    for name, data in before.items():
        assert (saved / name).read_bytes() == data, name
    load_pretrained(saved)


def test_a_failed_serialisation_writes_nothing(tmp_path, tiny_config, tiny_params, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("serialiser broke")

    monkeypatch.setattr(safetensors.numpy, "save", broken)
    with pytest.raises(RuntimeError):
        save_pretrained(tmp_path / "m", tiny_params, tiny_config)
    assert not (tmp_path / "m").exists() or os.listdir(tmp_path / "m") == []


# ------------------------------------------------------------------------------------------------
# Missing files.
def test_missing_folder(tmp_path):
    message = load_error(tmp_path / "nowhere")
    assert "nowhere" in message and CONFIG_FILE in message and WEIGHTS_FILE in message


def test_a_file_given_as_the_folder(saved):
    assert str(saved / CONFIG_FILE) in load_error(saved / CONFIG_FILE)


@pytest.mark.parametrize("name", [CONFIG_FILE, WEIGHTS_FILE])
def test_missing_file(saved, name):
    (saved / name).unlink()
    message = load_error(saved)
    assert str(saved / name) in message and "not found" in message


# ------------------------------------------------------------------------------------------------
# Bad config.json.
def test_config_that_is_not_json(saved):
    (saved / CONFIG_FILE).write_text('{\n  "vocab_size": 97,\n  "d_model": ,\n}')
    message = load_error(saved)
    assert str(saved / CONFIG_FILE) in message
    assert "not valid JSON" in message and "line 3" in message and "column" in message


def test_config_that_is_not_utf8(saved):
    (saved / CONFIG_FILE).write_bytes(b'{"vocab_size": \xff}')
    assert "UTF-8" in load_error(saved)


def test_config_with_an_unknown_key(saved):
    rewrite_config(saved, lambda body: body.update(n_experts=8))
    message = load_error(saved)
    assert str(saved / CONFIG_FILE) in message and "n_experts" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("d_model", 0), ("n_heads", 5), ("positional", "rotary"), ("dropout", 1.5), ("vocab_size", "97")],
)
def test_config_with_a_bad_value(saved, key, value):
    rewrite_config(saved, lambda body: body.update({key: value}))
    message = load_error(saved)
    assert message.startswith(str(saved / CONFIG_FILE)) and key in message


def test_config_missing_a_required_field(saved):
    rewrite_config(saved, lambda body: body.pop("n_layers"))
    assert "n_layers" in load_error(saved)


def test_config_with_a_duplicated_key(saved):
    (saved / CONFIG_FILE).write_text('{"vocab_size": 97, "vocab_size": 98}')
    message = load_error(saved)
    assert str(saved / CONFIG_FILE) in message and "vocab_size" in message


def test_config_that_is_not_an_object(saved):
    (saved / CONFIG_FILE).write_text("[1, 2]")
    assert "JSON object" in load_error(saved)


def test_config_from_a_newer_format_is_refused(saved):
    rewrite_config(saved, lambda body: body.update(format_version=FORMAT_VERSION + 1))
    message = load_error(saved)
    assert str(saved / CONFIG_FILE) in message and "format_version" in message
    assert "newer" in message and "upgrade microgpt-core" in message


def test_config_without_format_version_still_loads(saved, tiny_config):
    rewrite_config(saved, lambda body: body.pop("format_version"))
    assert load_pretrained(saved)[1] == tiny_config


# ------------------------------------------------------------------------------------------------
# Tensors that do not match the config.
def test_missing_tensor(saved):
    rewrite_tensors(saved, lambda t: t.pop("blocks.mlp.w_in"))
    message = load_error(saved)
    assert str(saved / WEIGHTS_FILE) in message and "missing" in message and "blocks.mlp.w_in" in message


def test_extra_tensor(saved):
    rewrite_tensors(saved, lambda t: t.update({"head.w": np.zeros((32, 97), np.float32)}))
    message = load_error(saved)
    assert str(saved / WEIGHTS_FILE) in message and "unexpected" in message and "head.w" in message


def test_weights_of_another_config(saved, tiny_config):
    rewrite_config(saved, lambda body: body.update(tie_embeddings=False))
    message = load_error(saved)
    assert "head.w" in message and "missing" in message


def test_misshaped_tensor(saved):
    rewrite_tensors(saved, lambda t: t.update({"blocks.attn.w_out": np.zeros((2, 32, 16), np.float32)}))
    message = load_error(saved)
    assert str(saved / WEIGHTS_FILE) in message and "blocks.attn.w_out" in message
    assert "(2, 32, 16)" in message and "(2, 32, 32)" in message


@pytest.mark.parametrize(
    ("dtype", "name"), [(np.float16, "float16"), (np.float64, "float64"), (np.int32, "int32")]
)
def test_mistyped_tensor(saved, dtype, name):
    rewrite_tensors(saved, lambda t: t.update({"embed.tokens": t["embed.tokens"].astype(dtype)}))
    message = load_error(saved)
    assert str(saved / WEIGHTS_FILE) in message and "embed.tokens" in message
    assert name in message and "expected float32" in message


def test_non_finite_tensor(saved):
    def poison(tensors):
        tensors["blocks.ln1.scale"] = tensors["blocks.ln1.scale"].copy()
        tensors["blocks.ln1.scale"][0, 0] = np.nan

    rewrite_tensors(saved, poison)
    assert "blocks.ln1.scale" in load_error(saved)


# ------------------------------------------------------------------------------------------------
# Truncated or corrupted safetensors files.
def header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


@pytest.mark.parametrize("keep", ["empty", "4-bytes", "half-header", "half-data", "all-but-one-byte"])
def test_truncated_weights(saved, keep):
    path = saved / WEIGHTS_FILE
    data, n = path.read_bytes(), header_length(path)
    cut = {
        "empty": 0,
        "4-bytes": 4,
        "half-header": 8 + n // 2,
        "half-data": (8 + n + len(data)) // 2,
        "all-but-one-byte": len(data) - 1,
    }[keep]
    path.write_bytes(data[:cut])
    message = load_error(saved)
    assert str(path) in message and "truncated or corrupted" in message and f"({cut} bytes)" in message
    if keep in ("half-data", "all-but-one-byte"):  # the header reads, but the data is short
        assert "not fully covered (cut short" in message


def test_weights_with_trailing_bytes(saved):
    path = saved / WEIGHTS_FILE
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    message = load_error(saved)
    assert "truncated or corrupted" in message and "bytes after the last tensor" in message


def test_weights_with_a_garbage_header(saved):
    path = saved / WEIGHTS_FILE
    data, n = path.read_bytes(), header_length(path)
    path.write_bytes(data[:8] + b"\x93" * n + data[8 + n :])
    message = load_error(saved)
    assert str(path) in message and "invalid UTF-8 in header" in message


def test_weights_with_an_absurd_header_length(saved):
    path = saved / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes((2**62).to_bytes(8, "little") + data[8:])
    assert "header too large" in load_error(saved)


def corrupt_header(path: Path, change) -> None:
    """Edits the JSON header in place, padding with spaces to keep the original length."""
    data, n = path.read_bytes(), header_length(path)
    header = json.loads(data[8 : 8 + n])
    change(header)
    raw = json.dumps(header, separators=(",", ":")).encode()
    assert len(raw) <= n
    path.write_bytes(data[:8] + raw.ljust(n) + data[8 + n :])


@pytest.mark.parametrize(
    "damage",
    ["offsets-overlap", "offsets-too-short", "bad-shape", "no-dtype", "unknown-dtype", "not-an-object"],
)
def test_weights_with_a_corrupted_header_entry(saved, damage):
    key = "blocks.attn.w_qkv"

    def change(header):
        entry = header[key]
        if damage == "offsets-overlap":
            begin, end = entry["data_offsets"]
            entry["data_offsets"] = [begin - 4, end - 4]
        elif damage == "offsets-too-short":
            entry["data_offsets"][1] -= 4
        elif damage == "bad-shape":
            entry["shape"] = [2, -32, 96]
        elif damage == "no-dtype":
            del entry["dtype"]
        elif damage == "unknown-dtype":
            entry["dtype"] = "F33"
        else:
            header[key] = [1, 2]

    path = saved / WEIGHTS_FILE
    corrupt_header(path, change)
    message = load_error(saved)
    assert str(path) in message and "truncated or corrupted" in message
    # The library names the tensor for an overlap, the line and column for a header it cannot parse.
    assert ("offset" if damage.startswith("offsets") else "invalid JSON in header") in message


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# ------------------------------------------------------------------------------------------------
# Damaged files as a class (tests/infer/damage.py): CheckpointError naming the file, or a load.
@pytest.mark.parametrize("name", [CONFIG_FILE, WEIGHTS_FILE])
def test_every_damaged_variant_is_a_checkpoint_error(saved, name):
    from tests.infer.damage import check_class

    assert check_class(saved, load_pretrained, (CheckpointError,), [name], config=CONFIG_FILE) == []


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"d_model": ' + b"9" * 5000 + b"}", "4300"),
        (b'{"format_version": true, "vocab_size": 97}', "format_version must be an integer >= 1, got true"),
    ],
    ids=["deep", "huge-int", "bool-version"],
)
def test_config_json_beyond_what_json_reads(saved, contents, message):
    (saved / CONFIG_FILE).write_bytes(contents)
    assert message in load_error(saved)


def test_weights_with_a_deeply_nested_header(saved):
    path = saved / WEIGHTS_FILE
    header = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    message = load_error(saved)
    assert str(path) in message and "truncated or corrupted" in message
    assert "invalid JSON in header" in message


# ------------------------------------------------------------------------------------------------
# read_safetensors: the one safetensors reader (load_pretrained's, and infer's GPT-2 import's).
def write_tensors(path: Path, tensors: dict) -> Path:
    safetensors.numpy.save_file(tensors, path)
    return path


def test_read_safetensors_widens_accepted_dtypes_and_keeps_the_order(tmp_path):
    import ml_dtypes

    path = write_tensors(
        tmp_path / "w.safetensors",
        {
            "b": np.arange(3, dtype=np.float16),
            "a": np.ones((2, 2), ml_dtypes.bfloat16),
            "c": np.full(1, 0.5, np.float64),
        },
    )
    shapes = {"c": (1,), "a": (2, 2), "b": (3,)}
    arrays = read_safetensors(path, shapes, dtypes=("F16", "BF16", "F64"))
    assert list(arrays) == ["c", "a", "b"]
    assert all(value.dtype == np.float32 for value in arrays.values())
    np.testing.assert_array_equal(arrays["b"], [0, 1, 2])
    with pytest.raises(CheckpointError, match=r"tensor 'c' has dtype float64; expected float32$"):
        read_safetensors(path, shapes)  # float32 only by default


def test_read_safetensors_renames_and_skips(tmp_path):
    path = write_tensors(
        tmp_path / "w.safetensors",
        {"model.x": np.zeros(2, np.float32), "model.mask": np.zeros(4, np.uint8)},
    )
    rename = lambda name: None if name.endswith("mask") else name.removeprefix("model.")
    assert list(read_safetensors(path, {"x": (2,)}, rename=rename)) == ["x"]  # the uint8 buffer: skipped
    with pytest.raises(CheckpointError, match=r"tensors 'model\.\w+' and 'model\.\w+' both hold 'x'"):
        read_safetensors(path, {"x": (2,)}, rename=lambda name: "x")


def test_read_safetensors_names_missing_and_unexpected_tensors_briefly(tmp_path):
    path = write_tensors(tmp_path / "w.safetensors", {f"t{i}": np.zeros(1, np.float32) for i in range(8)})
    with pytest.raises(CheckpointError) as info:
        read_safetensors(path, {"t0": (1,), "u": (3,)}, expected_by="the config in x.json")
    assert str(info.value) == (
        f"{path} (for the config in x.json): missing tensor 'u' (3,); unexpected tensors 't1', 't2', "
        "'t3', 't4', 't5' and 2 more that this config does not use"
    )


def test_read_safetensors_of_a_missing_or_non_finite_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing.safetensors: file not found$"):
        read_safetensors(tmp_path / "nothing.safetensors", {})
    path = write_tensors(tmp_path / "w.safetensors", {"x": np.array([1.0, np.inf], np.float64)})
    with pytest.raises(CheckpointError, match=r"tensor 'x' contains NaN or infinite values"):
        read_safetensors(path, {"x": (2,)}, dtypes=("F64",))
    write_tensors(path, {"x": np.array([1.0, 1e300], np.float64)})  # finite, but not in float32
    with pytest.raises(CheckpointError, match=r"tensor 'x' contains NaN or infinite values"):
        read_safetensors(path, {"x": (2,)}, dtypes=("F64",))


def test_the_stored_dtypes_are_the_ones_config_names():
    """config.WEIGHTS_DTYPES (no JAX to import) names exactly checkpoint.STORED_DTYPES."""
    from microgpt_core.checkpoint import STORED_DTYPES
    from microgpt_core.config import WEIGHTS_DTYPES

    assert tuple(STORED_DTYPES) == WEIGHTS_DTYPES
