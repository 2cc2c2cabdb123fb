"""The loop end to end, in process: the run folder, evaluate, refusing to overwrite, non-finite loss."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from microgpt_core import load_pretrained
from microgpt_data import Tokenizer
from microgpt_train import NonFiniteLossError, RunConfig, RunConfigError, evaluate_model, train
from microgpt_train import trainer as trainer_module
from microgpt_train.checkpointing import Checkpoints
from microgpt_train.evaluate import main as evaluate_main

from .conftest import TINY_MODEL, tiny_run


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
    assert all(0 < r["eval_bits_per_byte"] < r["eval_loss"] / math.log(2) for r in evals)  # > 1 byte/token
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
    assert summary["machine"] and "| machine | " + summary["machine"] + " |" in card
    assert f"| validation bits per byte | {summary['eval_bits_per_byte']:.3f} |" in card
    assert params["blocks"]["attn"]["w_qkv"].shape == (2, 32, 96)


@pytest.mark.slow
def test_evaluate_reads_the_export(tiny_run_dir, capsys):
    result = evaluate_model(tiny_run_dir / "model", "pydocs", batches=2, batch_size=4)
    assert result["tokens"] == 2 * 4 * TINY_MODEL.context_length
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["bits_per_byte"] == pytest.approx(
        result["loss"] / math.log(2) * result["tokens"] / result["bytes"]
    )
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
    real = trainer_module.make_train_step

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)

        def compile_poisoned(*lowered_with):  # the loop compiles the step before the run starts
            compiled = step.lower(*lowered_with).compile()

            def wrapped(state, batch):
                state, metrics = compiled(state, batch)
                if int(state["step"]) >= 5:  # the 5th step "diverges"
                    metrics = {**metrics, "loss": metrics["loss"] * np.nan}
                return state, metrics

            return types.SimpleNamespace(compile=lambda: wrapped)

        return types.SimpleNamespace(lower=compile_poisoned)

    monkeypatch.setattr(trainer_module, "make_train_step", poisoned)
    run = tiny_run(tmp_path, tokenizer=str(tiny_tokenizer_dir), checkpoint_every=2, max_steps=8)
    with pytest.raises(NonFiniteLossError, match="step 5.*last good checkpoint is step 4"):
        train(run, log=lambda *a: None)
    assert Checkpoints(tmp_path / "tiny" / "checkpoints", keep=2).latest_step() == 4
    assert not (tmp_path / "tiny" / "model").exists()


# --------------------------------------------------------------------------------------------------
# What a run says, and what --resume does with a run that has finished, has no checkpoint, or is
# given a longer schedule; the model card's snippet.
def test_a_run_says_what_to_do_next_and_prints_samples_as_text(tiny_run_output):
    run_dir, text = tiny_run_output
    model = run_dir / "model"
    assert f"generate --model {model} " in text and f"evaluate --model {model} --data pydocs" in text
    first = text.splitlines()[0]
    assert first.startswith("run tiny: 2 layers x 32 wide x 2 heads") and len(first) < 300
    assert f"every setting in {run_dir / 'train_config.json'}" in first
    sample = text.split("step 6 sample:\n", 1)[1].splitlines()[0]
    assert sample.startswith("    The") and "'" not in sample[:5]  # the text, indented; not a repr


def test_the_model_card_snippet_loads_the_folder_it_is_in(tiny_run_dir):
    card = (tiny_run_dir / "model" / "README.md").read_text()
    path = card.split('load_model("', 1)[1].split('"', 1)[0]
    assert load_pretrained(path)[1] == TINY_MODEL and Path(path) == (tiny_run_dir / "model").resolve()
    assert f"generate --model {path} " in card and "print(generate(model," in card
    assert "the finished run" in card
    step_card = (tiny_run_dir / "checkpoints" / "3" / "model" / "README.md").read_text()
    assert "a checkpoint at step 3 of 6" in step_card


def test_resuming_a_finished_run_changes_nothing(tiny_run_dir, tiny_tokenizer_dir):
    before = {p.name: p.read_bytes() for p in (tiny_run_dir / "model").iterdir()}
    lines = []
    run = tiny_run(tiny_run_dir.parent, tokenizer=str(tiny_tokenizer_dir), grad_accum=2, progress=True)
    assert train(run, resume=True, log=lines.append) == tiny_run_dir
    assert "finished at step 6" in lines[-1] and "nothing to do" in lines[-1] and "--max-steps" in lines[-1]
    assert {p.name: p.read_bytes() for p in (tiny_run_dir / "model").iterdir()} == before
    with pytest.raises(RunConfigError, match="--max-steps 4 is below step 6"):
        train(run.merge({"max_steps": 4}), resume=True, log=lines.append)


def test_a_run_saved_before_the_optimizer_fields_resumes_as_adamw_and_never_as_muon(
    tmp_path, tiny_run_dir, tiny_tokenizer_dir
):
    copy = Path(shutil.copytree(tiny_run_dir, tmp_path / "tiny"))
    saved = json.loads((copy / "train_config.json").read_text())
    for name in ("optimizer", "muon_learning_rate", "muon_momentum"):
        del saved[name]
    (copy / "train_config.json").write_text(json.dumps(saved))
    run = tiny_run(tmp_path, tokenizer=str(tiny_tokenizer_dir), grad_accum=2)
    lines = []
    assert train(run, resume=True, log=lines.append) == copy
    assert "finished at step 6" in lines[-1] and "nothing to do" in lines[-1]
    with pytest.raises(RunConfigError, match=r"differs .* \['optimizer'\]"):
        train(run.merge({"optimizer": "muon"}), resume=True, log=lines.append)


def test_resume_needs_a_checkpoint_and_a_new_run_an_empty_folder(tmp_path, tiny_run_dir, tiny_tokenizer_dir):
    run = tiny_run(tmp_path, tokenizer=str(tiny_tokenizer_dir))
    with pytest.raises(RunConfigError, match=r"--resume: .*tiny has no checkpoint .*it does not exist"):
        train(run, resume=True, log=lambda *a: None)
    (tmp_path / "tiny" / "tokenizer").mkdir(parents=True)
    (tmp_path / "tiny" / "train_config.json").write_text(json.dumps(run.to_dict()))
    with pytest.raises(RunConfigError, match=r"no checkpoint .*it holds tokenizer/, train_config.json\)"):
        train(run, resume=True, log=lambda *a: None)
    shutil.copytree(tiny_run_dir / "model", tmp_path / "tiny" / "model")  # a model, no checkpoints
    with pytest.raises(RunConfigError, match=r"already holds a trained model \(model/"):
        train(run, log=lambda *a: None)


@pytest.mark.slow
def test_resume_falls_back_from_a_damaged_checkpoint_and_trains_further(tmp_path, tiny_run_dir, capsys):
    copy = Path(shutil.copytree(tiny_run_dir, tmp_path / "tiny"))
    (copy / "model").rename(copy / "old-model")
    for path in (copy / "checkpoints" / "6" / "meta").iterdir():
        path.write_text("{")  # the newest checkpoint is damaged
    saved = RunConfig.from_dict(json.loads((copy / "train_config.json").read_text()))
    run = dataclasses.replace(saved, runs_dir=str(tmp_path), max_steps=9, tracker="")  # the trackers
    lines = []  # of the session's run stay its own (tests/train/test_trackers.py reads them)
    train(run, resume=True, log=lines.append)
    err = capsys.readouterr().err
    assert "warning: checkpoint step 6" in err and "falling back to step 3" in err
    text = "\n".join(lines)
    assert "resumed from step 3" in text
    assert "max_steps 6 -> 9: from step 4 the learning rate follows the schedule of a 9-step run" in text
    records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 10))
    summary = json.loads((copy / "model" / "training_summary.json").read_text())
    assert summary["step"] == 9 and json.loads((copy / "train_config.json").read_text())["max_steps"] == 9
    assert (copy / "checkpoints" / "6.unreadable").is_dir()


def test_evaluate_refuses_a_tokenizer_larger_than_the_model(tiny_run_dir, tmp_path, capsys):
    folder = Path(shutil.copytree(tiny_run_dir / "model", tmp_path / "model"))
    Tokenizer({bytes([b]): b for b in range(256)}, {"<|endoftext|>": 400}).save(folder)  # 401 ids > 320
    with pytest.raises(ValueError, match=r"the tokenizer has 401 tokens but .*has vocab_size 320"):
        evaluate_model(folder, "pydocs", batches=1)
    assert evaluate_main(["--model", str(folder), "--batches", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # A run folder whose run has not finished: its newest checkpoint, saying so.
    run = Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))
    shutil.rmtree(run / "model")
    assert evaluate_main(["--model", str(run), "--batches", "1", "--batch-size", "2"]) == 0
    out, err = capsys.readouterr()
    assert "using its newest checkpoint, step 6" in err and "perplexity" in json.loads(out)


def test_a_finished_run_without_its_model_gets_it_from_the_last_checkpoint(tiny_run_dir, tmp_path):
    copy = Path(shutil.copytree(tiny_run_dir, tmp_path / "tiny"))
    shutil.rmtree(copy / "model")  # e.g. killed between its last checkpoint and the export
    saved = RunConfig.from_dict(json.loads((copy / "train_config.json").read_text()))
    lines = []
    train(dataclasses.replace(saved, runs_dir=str(tmp_path), tracker=""), resume=True, log=lines.append)
    assert "had no model/: exported it from that checkpoint" in lines[-1]
    assert (copy / "model" / "model.safetensors").read_bytes() == (
        tiny_run_dir / "model" / "model.safetensors"
    ).read_bytes()
    card = (copy / "model" / "README.md").read_text()
    assert f'load_model("{(copy / "model").resolve()}")' in card and "the finished run" in card
    assert sorted(p.name for p in (copy / "model").iterdir()) == sorted(
        p.name for p in (tiny_run_dir / "model").iterdir()
    )
