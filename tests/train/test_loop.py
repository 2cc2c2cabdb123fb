"""The loop end to end, in process: the run folder, evaluate, refusing to overwrite, non-finite loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from microgpt_core import load_pretrained
from microgpt_data import Tokenizer
from microgpt_train import NonFiniteLossError, RunConfigError, evaluate_model, train
from microgpt_train import loop as loop_module
from microgpt_train.checkpointing import Checkpoints
from microgpt_train.evaluate import main as evaluate_main

from .conftest import TINY_MODEL, tiny_run


@pytest.fixture(scope="module")
def tiny_run_dir(tmp_path_factory, tiny_tokenizer_dir):
    runs = tmp_path_factory.mktemp("runs")
    return train(tiny_run(runs, tokenizer=str(tiny_tokenizer_dir), grad_accum=2), log=lambda *a: None)


@pytest.mark.slow
def test_run_folder_has_everything(tiny_run_dir):
    names = {p.name for p in tiny_run_dir.iterdir()}
    assert {"train_config.json", "metrics.jsonl", "loss.png", "checkpoints", "model"} <= names
    saved = json.loads((tiny_run_dir / "train_config.json").read_text())
    assert saved["grad_accum"] == 2 and saved["model"]["d_model"] == TINY_MODEL.d_model
    records = [json.loads(line) for line in (tiny_run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
        assert all(math.isfinite(r[key]) for r in records), key
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert evals[-1]["eval_perplexity"] == pytest.approx(math.exp(evals[-1]["eval_loss"]))
    assert (tiny_run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert Checkpoints(tiny_run_dir / "checkpoints", keep=2).latest_step() == 6


@pytest.mark.slow
def test_model_folder_loads_with_tokenizer_and_card(tiny_run_dir):
    model = tiny_run_dir / "model"
    params, config = load_pretrained(model)
    assert config == TINY_MODEL
    tokenizer = Tokenizer.load(model)
    assert tokenizer.decode(tokenizer.encode("def f(x): return x")) == "def f(x): return x"
    card = (model / "README.md").read_text()
    assert "validation loss" in card and "unigram baseline" in card and "## Sample" in card
    summary = json.loads((model / "training_summary.json").read_text())
    assert summary["step"] == 6 and summary["eval_loss"] > 0
    assert params["blocks"]["attn"]["w_qkv"].shape == (2, 32, 96)


@pytest.mark.slow
def test_evaluate_reads_the_export(tiny_run_dir, capsys):
    result = evaluate_model(tiny_run_dir / "model", "pydocs", batches=2, batch_size=4)
    assert result["tokens"] == 2 * 4 * TINY_MODEL.context_length
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert evaluate_main(["--model", str(tiny_run_dir / "model"), "--batches", "1", "--batch-size", "2"]) == 0
    assert "perplexity" in json.loads(capsys.readouterr().out)
    assert evaluate_main(["--model", str(tiny_run_dir / "model"), "--seq-len", "999"]) == 2
    assert "context" in capsys.readouterr().err


@pytest.mark.slow
def test_existing_run_needs_resume(tiny_run_dir, tiny_tokenizer_dir):
    run = tiny_run(tiny_run_dir.parent, tokenizer=str(tiny_tokenizer_dir), grad_accum=2)
    with pytest.raises(RunConfigError, match="--resume"):
        train(run, log=lambda *a: None)
    with pytest.raises(RunConfigError, match=r"differs .* \['learning_rate'\]"):
        train(run.merge({"learning_rate": 1e-2}), resume=True, log=lambda *a: None)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_tokenizer_dir, monkeypatch):
    real = loop_module.make_train_step

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(state, batch):
            state, metrics = step(state, batch)
            if int(state["step"]) >= 5:  # the 5th step "diverges"
                metrics = {**metrics, "loss": metrics["loss"] * np.nan}
            return state, metrics

        return wrapped

    monkeypatch.setattr(loop_module, "make_train_step", poisoned)
    run = tiny_run(tmp_path, tokenizer=str(tiny_tokenizer_dir), checkpoint_every=2, max_steps=8)
    with pytest.raises(NonFiniteLossError, match="step 5.*last good checkpoint is step 4"):
        train(run, log=lambda *a: None)
    assert Checkpoints(tmp_path / "tiny" / "checkpoints", keep=2).latest_step() == 4
    assert not (tmp_path / "tiny" / "model").exists()
