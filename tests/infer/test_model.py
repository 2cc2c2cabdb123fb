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
        (lambda d: _set_config(d, model_type="t5"), "config.json", 'model_type "t5" is not supported'),
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


def test_default_model_is_env_then_shipped_never_a_run_folder(tmp_path, monkeypatch, model_dir):
    import shutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROGPT_MODEL", raising=False)
    shutil.copytree(model_dir, tmp_path / "runs" / "new" / "model")
    assert find_default_model() == "default"  # not runs/new/model
    monkeypatch.setenv("MICROGPT_MODEL", " ")
    assert find_default_model() == "default"
    monkeypatch.setenv("MICROGPT_MODEL", str(model_dir))
    assert find_default_model() == str(model_dir)
    assert load_model("runs/new").config == TINY_INFER  # a run folder, when named


def test_a_folder_named_default_is_a_path_not_the_shipped_model(tmp_path, monkeypatch, model_dir):
    import shutil

    monkeypatch.chdir(tmp_path)
    for source in (Path("default"), "./default"):
        with pytest.raises(ModelNotFoundError, match="no such folder"):
            load_model(source)
    shutil.copytree(model_dir, tmp_path / "default")
    assert load_model("./default").config == load_model(Path("default")).config == TINY_INFER
    assert load_model("default").config != TINY_INFER  # the str name is the shipped model
    with pytest.raises(
        ModelNotFoundError, match=r"revision='main' applies to Hub repo ids, not to \"default\""
    ):
        load_model("default", revision="main")


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


# ------------------------------------------------------------------------------------------------
# Damaged folders, as a class (tests/infer/damage.py): every variant raises a ModelFileError naming
# the file (InferError subclasses only), or loads; none raises anything else or hangs.
OUR_FILES = ["config.json", "model.safetensors", "tokenizer.tiktoken", "tokenizer_config.json"]


def test_every_damaged_file_of_our_folder_is_a_model_file_error(model_copy):
    from tests.infer.damage import check_class

    assert check_class(model_copy, load_model, (ModelFileError,), OUR_FILES) == []
    load_model(model_copy)  # restored intact


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'{"vocab_size": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply"),
        (b'{"vocab_size": ' + b"9" * 5000 + b"}", "4300"),
        (b'{"vocab_size": 257, "vocab_size": 258}', "'vocab_size' appears more than once"),
        (b'{"format_version": true}', "format_version must be an integer >= 1, got true"),
        (b"\x80\x04\x95", r"not UTF-8 text \(byte 0x80 at offset 0\)"),
    ],
    ids=["deep", "deep-field", "huge-int", "duplicate", "bool-version", "pickle"],
)
def test_config_json_that_is_not_a_config_names_the_file(model_copy, contents, message):
    (model_copy / "config.json").write_bytes(contents)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(model_copy)
    assert str(info.value).startswith(str(model_copy / "config.json"))


@pytest.mark.parametrize("kind", ["pickle", "zip"])
def test_weights_that_are_a_pickle_or_a_zip_are_refused_unread(model_copy, kind):
    import io
    import pickle
    import zipfile

    class Boom:
        def __reduce__(self):  # runs if anything ever unpickles the file
            return (exec, ("raise SystemExit('unpickled!')",))

    data = pickle.dumps(Boom())
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("archive/data.pkl", data)
        data = buffer.getvalue()
    (model_copy / "model.safetensors").write_bytes(data)
    with pytest.raises(ModelFileError, match=r"model\.safetensors: truncated or corrupted safetensors file"):
        load_model(model_copy)


def test_a_run_folder_is_a_model_too(model_dir, model, tmp_path, caplog, capsys):
    import shutil

    from microgpt_infer.cli import main

    run = tmp_path / "runs" / "tiny"
    for step in (200, 400):
        shutil.copytree(model_dir, run / "checkpoints" / str(step) / "model")
    (run / "checkpoints" / "600.orbax-checkpoint-tmp-1").mkdir()  # a checkpoint being written
    with caplog.at_level("WARNING", logger="microgpt_infer"):
        stopped = load_model(run)  # interrupted: no model/ yet
    assert stopped.source == run / "checkpoints" / "400" / "model"
    assert [r.getMessage() for r in caplog.records] == [
        f"{run} has no model/ yet: using its newest checkpoint, step 400"
    ]
    assert main(["--model", str(run), "--max-new-tokens", "3", "--temperature", "0", "Hi"]) == 0
    assert "using its newest checkpoint, step 400" in capsys.readouterr().err
    shutil.copytree(model_dir, run / "model")
    caplog.clear()
    finished = load_model(run)
    assert finished.source == run / "model" and caplog.records == []
    np.testing.assert_array_equal(finished.params["embed"]["tokens"], model.params["embed"]["tokens"])
    empty = tmp_path / "runs" / "new"
    empty.mkdir()
    (empty / "train_config.json").write_text("{}")
    with pytest.raises(ModelFileError, match="training run folder without a model yet"):
        load_model(empty)


# ------------------------------------------------------------------------------------------------
# One resolver for every model name (resolve_model), and the tokenizer of any of them (load_tokenizer).
def test_resolve_model_gives_the_folder_of_every_name(hub, model_dir, tmp_path, monkeypatch):
    import shutil

    from microgpt_infer import load_tokenizer, resolve_model
    from microgpt_infer.model import DEFAULT_MODEL_DIR

    monkeypatch.chdir(tmp_path)
    shutil.copytree(model_dir, tmp_path / "runs" / "tiny" / "model")
    hub.add_folder("org/tiny", model_dir)
    assert resolve_model("default") == DEFAULT_MODEL_DIR
    assert resolve_model(model_dir) == resolve_model(str(model_dir)) == model_dir
    assert resolve_model("runs/tiny") == Path("runs/tiny/model")
    fetched = resolve_model("org/tiny")
    assert fetched.is_relative_to(tmp_path / "hf_home") and (fetched / "model.safetensors").is_file()
    expected = load_model(model_dir).tokenizer
    for name in (str(model_dir), "runs/tiny", "org/tiny"):
        assert load_tokenizer(name) == expected, name
    assert load_tokenizer("default") == load_model("default").tokenizer


RUNS = " (runs/ holds: quickstart, wide)"


@pytest.mark.parametrize(
    ("name", "listing"),
    [("runs/nope", RUNS), ("runs/nope/model", RUNS), ("./runs/nope", RUNS), ("./nope", ""), ("a/b/c", ""),
     ("a\\b", ""), ("empty/nope", " (empty/ holds no folders)")],
)  # fmt: skip
def test_a_name_that_looks_like_a_path_is_a_missing_folder_never_a_hub_id(
    hub, tmp_path, monkeypatch, name, listing
):
    from microgpt_infer import load_tokenizer, resolve_model

    monkeypatch.chdir(tmp_path)
    for run in ("quickstart", "wide", ".hidden"):
        (tmp_path / "runs" / run).mkdir(parents=True)
    (tmp_path / "runs" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for load in (resolve_model, load_model, load_tokenizer):
        with pytest.raises(ModelNotFoundError) as info:
            load(name)
        assert str(info.value).startswith(f"{name}: no such folder{listing}; a model is"), str(info.value)
    assert hub.requests == []  # the Hub was never asked


def test_a_name_whose_first_component_is_no_folder_is_still_a_hub_id(hub, tmp_path, monkeypatch):
    from microgpt_infer import HubError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file, not a folder")
    with pytest.raises(HubError, match=r"Hugging Face Hub repo 'runs/nope' .* not found"):
        load_model("runs/nope")
    assert hub.requests  # asked


def test_load_tokenizer_reads_no_weights(model_copy, tmp_path):
    from microgpt_infer import load_tokenizer
    from tests.infer.conftest import GPT2_TINY, LLAMA_TIED, LLAMA_TINY, byte_tokenizer

    expected = load_model(model_copy).tokenizer
    (model_copy / "model.safetensors").write_bytes(b"not weights")
    assert load_tokenizer(model_copy) == expected
    for folder in (GPT2_TINY, LLAMA_TINY, LLAMA_TIED):
        assert load_tokenizer(folder) == load_model(folder).tokenizer, folder
    tokenizer_only = byte_tokenizer().save(tmp_path / "tokenizer")  # no config.json
    assert load_tokenizer(tokenizer_only) == byte_tokenizer()
    _set_config(model_copy, vocab_size=200)
    with pytest.raises(ModelFileError, match=r"tokenizer has 257 tokens but .*config\.json has vocab_size 2"):
        load_tokenizer(model_copy)
