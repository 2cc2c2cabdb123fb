"""load_model on local folders: our layout, and errors that name the file at fault."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from microgpt_infer import Model, ModelFileError, ModelNotFoundError, load_model
from microgpt_infer.model import find_default_model
from tests.infer.conftest import TINY_INFER, save_model


def test_loads_our_folder(model_dir, model):
    assert isinstance(model, Model)
    assert model.config == TINY_INFER
    assert model.tokenizer.eot_id == 256
    assert model.source == model_dir
    assert "d_model=32" in repr(model)


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json", "file not found"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json", "not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1]"), "config.json", "JSON object"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors", "file not found"),
        (lambda d: _truncate(d / "model.safetensors"), "model.safetensors", "truncated or corrupted"),
        (lambda d: (d / "tokenizer.tiktoken").unlink(), "tokenizer.tiktoken", "does not exist"),
        (lambda d: (d / "tokenizer_config.json").write_text("{"), "tokenizer_config.json", "not valid JSON"),
        (lambda d: _set_config(d, model_type="llama"), "config.json", "model_type 'llama' is not supported"),
        (lambda d: _set_config(d, n_layers=3), "model.safetensors", "shape"),
        (lambda d: _set_config(d, d_model=30), "config.json", "d_model"),
    ],
    ids=["no-config", "bad-json", "not-object", "no-weights", "truncated", "no-ranks", "bad-tok-config",
         "model-type", "mismatch", "bad-field"],
)  # fmt: skip
def test_damaged_folders_name_the_file(model_copy, damage, file, message):
    damage(model_copy)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(model_copy)
    assert str(model_copy / file) in str(info.value)


def test_tokenizer_larger_than_the_model_is_refused(tmp_path):
    folder = save_model(tmp_path / "m", TINY_INFER.replace(vocab_size=200))
    with pytest.raises(
        ModelFileError, match=r"tokenizer has 257 tokens but .*config\.json has vocab_size 200"
    ):
        load_model(folder)


def test_not_found_says_how_to_get_a_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no such folder.*uv run train"):
        load_model(tmp_path / "missing" / "deep" / "path")
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        load_model(_touch(tmp_path / "file.txt"))
    with pytest.raises(ModelNotFoundError, match="revision"):
        load_model(tmp_path, revision="main")
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        load_model(Path("org/name"))  # a Path is a folder, never a Hub repo id
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face Hub repo id"):
        load_model("bad name!")


def test_default_model_env_then_newest_run(tmp_path, monkeypatch, model_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROGPT_MODEL", raising=False)
    with pytest.raises(ModelNotFoundError, match=r"MICROGPT_MODEL is not set .*runs/\*/model.*uv run train"):
        find_default_model()
    import os
    import shutil

    for i, name in enumerate(["b-old", "a-new"]):
        shutil.copytree(model_dir, tmp_path / "runs" / name / "model")
        os.utime(tmp_path / "runs" / name / "model" / "config.json", ns=(i * 10**9, i * 10**9))
    (tmp_path / "runs" / "c-empty" / "model").mkdir(parents=True)  # no config.json: ignored
    assert find_default_model() == str(tmp_path / "runs" / "a-new" / "model").removeprefix(f"{tmp_path}/")
    monkeypatch.setenv("MICROGPT_MODEL", str(model_dir))
    assert find_default_model() == str(model_dir)


def test_loaded_params_equal_saved(model, model_dir):
    from microgpt_core import load_pretrained
    from microgpt_core.params import flatten

    params, _ = load_pretrained(model_dir)
    for name, value in flatten(params).items():
        np.testing.assert_array_equal(np.asarray(flatten(model.params)[name]), np.asarray(value))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _set_config(folder, **changes):
    body = json.loads((folder / "config.json").read_text())
    body.update(changes)
    (folder / "config.json").write_text(json.dumps(body))


def _touch(path):
    path.write_text("x")
    return path
