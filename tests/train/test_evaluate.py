"""`evaluate_model` against a hand computation: the documents of the split, each + EOT, packed into
(B, T+1) windows in order, scored by the model without dropout; the loss is the mean over every
target token of -ln softmax(logits)[target], in float64. The last partial batch is dropped, the
`batches` cap holds, and too little data is an error naming the batch, not a division by zero."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from microgpt_core import forward, init_params, save_pretrained
from microgpt_data import Tokenizer, load_text_dataset
from microgpt_train import evaluate_model
from microgpt_train.evaluate import main as evaluate_main

from .conftest import TINY_MODEL

B, T = 4, 8  # rows per batch, tokens per row (below the model's context of 32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer_dir):
    """TINY_MODEL (dropout 0.1) with N(0, 1) weights, so predictions are peaked and losses vary a lot
    between tokens (at the N(0, 0.02) init every token would cost about ln V)."""
    shapes = jax.eval_shape(init_params, jax.random.PRNGKey(0), TINY_MODEL)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), shapes)
    folder = save_pretrained(tmp_path_factory.mktemp("model") / "model", params, TINY_MODEL)
    Tokenizer.load(tiny_tokenizer_dir).save(folder)
    return folder


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    docs = [f"def scale_{i}(values):\n    return [v * {i} for v in values]  # {i}" for i in range(30)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def _expected(model_dir, data_file, split: str, batches: int) -> dict:
    """Loss, tokens and unigram entropy of the targets, computed by hand."""
    from microgpt_core import load_pretrained

    params, config = load_pretrained(model_dir)
    tokenizer = Tokenizer.load(model_dir)
    stream = []
    for row in load_text_dataset(data_file, split):
        stream += tokenizer.encode(row["text"]) + [tokenizer.eot_id]
    need = B * (T + 1)
    windows = np.asarray(stream[: len(stream) // need * need]).reshape(-1, B, T + 1)[:batches]  # (N, B, T+1)
    rows = windows.reshape(-1, T + 1)  # (N*B, T+1): rows are scored independently
    logits = np.asarray(jax.jit(forward, static_argnums=2)(params, rows[:, :-1], config), np.float64)
    logits -= logits.max(-1, keepdims=True)  # (N*B, T, V)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # (N*B, T, V)
    losses = -np.take_along_axis(log_p, rows[:, 1:, None], -1)  # (N*B, T, 1)
    counts = np.bincount(rows[:, 1:].ravel())
    p = counts[counts > 0] / counts.sum()
    return {
        "loss": float(np.mean(losses)),
        "tokens": len(windows) * B * T,
        "unigram_entropy": float(-(p * np.log(p)).sum()),
        "windows": len(windows),
        "targets": rows[:, 1:].ravel(),
    }


@pytest.mark.parametrize("batches", [3, 1000])
def test_the_loss_is_the_mean_cross_entropy_of_the_packed_windows(model_dir, data_file, batches):
    result = evaluate_model(
        model_dir, str(data_file), split="train", batches=batches, batch_size=B, seq_len=T
    )
    expected = _expected(model_dir, data_file, "train", batches)
    if batches == 3:
        assert expected["windows"] == 3
    else:  # every whole batch of the data, the remainder (< B * (T+1) tokens) dropped
        assert 3 < expected["windows"] < batches
    assert result["tokens"] == expected["tokens"]
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert result["loss"] > 1.2 * math.log(TINY_MODEL.vocab_size)  # N(0, 1) weights: far from uniform
    assert result["perplexity"] == pytest.approx(math.exp(expected["loss"]), rel=1e-5)
    assert result["unigram_entropy"] == pytest.approx(expected["unigram_entropy"], rel=1e-9)
    # Bits per byte by hand: each predicted token's bytes of text (the end-of-text token has none).
    tokenizer = Tokenizer.load(model_dir)
    n_bytes = sum(len(tokenizer.token_bytes(int(t))) for t in expected["targets"] if t != tokenizer.eot_id)
    assert result["bytes"] == n_bytes
    assert result["bits_per_byte"] == pytest.approx(
        expected["loss"] / math.log(2) * expected["tokens"] / n_bytes, rel=1e-5
    )


def test_the_validation_split_is_the_default_and_differs_from_train(model_dir):
    validation = evaluate_model(model_dir, "pydocs", batches=2, batch_size=B, seq_len=T)
    train = evaluate_model(model_dir, "pydocs", split="train", batches=2, batch_size=B, seq_len=T)
    assert validation == evaluate_model(
        model_dir, "pydocs", split="validation", batches=2, batch_size=B, seq_len=T
    )
    assert validation["loss"] != train["loss"]


def test_too_little_data_for_one_batch_is_an_error_not_a_division_by_zero(model_dir, tmp_path, capsys):
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "x = 1"}) + "\n")
    assert evaluate_main(["--model", str(model_dir), "--data", str(short), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "fewer than one batch of 8 x 33" in err


@pytest.mark.parametrize(
    ("option", "value"), [("batches", 0), ("batch_size", -1), ("batches", 1.5), ("batches", True)]
)
def test_batches_and_batch_size_must_be_positive_integers(model_dir, option, value):
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag} must be an integer >= 1, got {value!r}"):
        evaluate_model(model_dir, "pydocs", **{option: value})


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import microgpt_train.evaluate as evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_model", interrupted)
    assert evaluate.main(["--model", "anything"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


# --------------------------------------------------------------------------------------------------
# --model takes every model name load_model takes.
def test_default_is_the_shipped_model_with_the_figures_of_its_folder(capsys):
    from microgpt_infer.model import DEFAULT_MODEL_DIR

    flags = ["--data", "pydocs", "--batches", "1", "--batch-size", "2", "--seq-len", "16"]
    assert evaluate_main(["--model", "default", *flags]) == 0
    by_name = capsys.readouterr().out
    assert evaluate_main(["--model", str(DEFAULT_MODEL_DIR), *flags]) == 0
    assert capsys.readouterr().out == by_name
    assert json.loads(by_name)["tokens"] == 2 * 16


def test_hugging_face_folders_and_hub_ids_are_models_too(hub, model_dir, data_file):
    from tests.infer.conftest import GPT2_TINY, LLAMA_TINY

    def evaluate(model):
        return evaluate_model(model, str(data_file), split="train", batches=2, batch_size=B, seq_len=T)

    for folder in (GPT2_TINY, LLAMA_TINY):
        result = evaluate(folder)
        assert result["tokens"] == 2 * B * T and math.isfinite(result["loss"]) and result["bytes"] > 0
    hub.add_folder("org/tiny", model_dir)
    assert evaluate("org/tiny") == evaluate(model_dir)


def test_a_local_path_with_a_typo_is_missing_and_the_hub_is_not_asked(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "quickstart").mkdir(parents=True)
    assert evaluate_main(["--model", "runs/nope"]) == 2
    assert capsys.readouterr().err.startswith("error: runs/nope: no such folder (runs/ holds: quickstart)")
    assert hub.requests == []


def test_an_ignored_config_key_is_one_plain_line_on_stderr(tmp_path, data_file, capsys):
    import shutil

    from tests.infer.conftest import GPT2_TINY

    folder = shutil.copytree(GPT2_TINY, tmp_path / "typo")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_layerz": 3}))
    flags = ["--data", str(data_file), "--split", "train", "--batches", "1", "--batch-size", "2"]
    assert evaluate_main(["--model", str(folder), *flags, "--seq-len", "8"]) == 0
    err = capsys.readouterr().err
    line = f"{folder / 'config.json'}: ignoring unknown key 'n_layerz' (did you mean 'n_layer'?)"
    assert line in err.splitlines()
    assert "WARNING" not in err
