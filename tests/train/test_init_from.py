"""Fine-tuning (`init_from`): the source's architecture, weights and tokenizer; model flags that
contradict it refused; step 0 evaluated as `evaluate --model SOURCE` evaluates it; resume exact."""

from __future__ import annotations

import json
import re
import shutil

import jax
import numpy as np
import pytest

from microgpt_core import init_params, load_pretrained, save_pretrained
from microgpt_core.params import flatten
from microgpt_data import Tokenizer
from microgpt_infer.folder import load_folder
from microgpt_train import RunConfigError, evaluate_model, train
from microgpt_train import cli as train_cli
from microgpt_train.flags import build_parser, resolve_config
from microgpt_train.init_from import FREE_FIELDS, load_source, resolve_init_from

from .conftest import TINY_MODEL, tiny_run

SOURCE_MODEL = TINY_MODEL  # the session's other tiny runs compile the same sample program
_MIN_SECONDS = "jax_persistent_cache_min_compile_time_secs"


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """JAX's persistent compilation cache for this module: the resumed run reads the programs the
    first run compiled (the same steps, closures of their own) instead of compiling them again."""
    from jax.experimental.compilation_cache import compilation_cache as cache

    saved = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir", _MIN_SECONDS)}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(_MIN_SECONDS, 0)
    yield
    for key, value in saved.items():
        jax.config.update(key, value)
    cache.reset_cache()


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A tiny model folder (random weights) with the session's 320-token BPE."""
    folder = tmp_path_factory.mktemp("source")
    save_pretrained(folder, init_params(jax.random.key(3), SOURCE_MODEL), SOURCE_MODEL)
    Tokenizer.load(tiny_tokenizer_dir).save(folder)
    return folder


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, source_dir):
    """A finished 6-step fine-tuning run of `source_dir` on pydocs, and what it printed."""
    lines: list[str] = []
    run = resolve_init_from(tiny_run(tmp_path_factory.mktemp("runs"), init_from=str(source_dir)))
    return train(run, log=lines.append), "\n".join(lines)


def _resolve(argv):
    return resolve_config(build_parser().parse_args([*argv, "--sample-tokens", "8"]))


def test_the_model_comes_from_the_source_and_free_fields_from_the_flags(source_dir, tmp_path):
    run = _resolve(
        ["--init-from", str(source_dir), "--max-steps", "7", "--d-model", "32", "--dropout", "0.2"]
    )
    assert run.model == SOURCE_MODEL.replace(dropout=0.2) and run.max_steps == 7
    config = tmp_path / "run.toml"
    config.write_text(f'init_from = "{source_dir}"\n[model]\ncompute_dtype = "bfloat16"\nn_layers = 2\n')
    run = _resolve(["--config", str(config)])
    assert run.model == SOURCE_MODEL.replace(compute_dtype="bfloat16")  # the preset's model is not used
    assert set(FREE_FIELDS) == {"dropout", "compute_dtype", "attention"}


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--init-from", "default", "--d-model", "64"], r"--d-model 64 contradicts .*256"),
        (["--init-from", "SOURCE", "--bias"], None),  # repeats the source: accepted (checked below)
        (["--init-from", "SOURCE", "--positional", "rope"], r"--positional rope .* positional is learned"),
        (["--init-from", "SOURCE", "--tokenizer", "default"], r"tokenizer \('default'\) cannot be given"),
        (["--init-from", "./nowhere"], r"nowhere: no such folder"),
    ],
)  # fmt: skip
def test_contradicting_model_flags_exit_2_naming_the_field(flags, match, source_dir, tmp_path, capsys):
    flags = [str(source_dir) if f == "SOURCE" else f for f in flags]
    if match is None:
        assert _resolve(flags).model == SOURCE_MODEL
        return
    assert train_cli.main([*flags, "--runs-dir", str(tmp_path), "--sample-tokens", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_python_run_whose_model_differs_from_the_source_is_refused(source_dir, tmp_path):
    run = tiny_run(tmp_path, init_from=str(source_dir), model=TINY_MODEL.replace(d_model=64, n_heads=4))
    with pytest.raises(
        RunConfigError,
        match=r"differs from its init_from model .* d_model 64 \(the model has 32\); n_heads 4",
    ):
        load_source(run)
    assert load_source(resolve_init_from(run)).config == SOURCE_MODEL  # fmt: skip


@pytest.mark.slow
def test_step_0_is_evaluate_of_the_source_on_the_same_batches(finetuned, source_dir):
    run_dir, printed = finetuned
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5, 6] and "loss" not in records[0]
    expected = evaluate_model(source_dir, "pydocs", batches=2, batch_size=8)  # the run's eval: 2 x 8 x 32
    # The same compiled eval step over the same windows, summed in the same order: equal to float
    # rounding of the one sum (the train side's batch is a device array on a one-device mesh).
    assert records[0]["eval_loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert records[0]["eval_bits_per_byte"] == pytest.approx(expected["bits_per_byte"], rel=1e-6)
    assert f"step 0: eval loss {records[0]['eval_loss']:.4f}" in printed and "before fine-tuning" in printed
    assert records[-1]["eval_loss"] < records[0]["eval_loss"]  # it trained
    summary = json.loads((run_dir / "model" / "training_summary.json").read_text())
    assert summary["init_eval_loss"] == records[0]["eval_loss"]
    assert "| fine-tuned from |" in (run_dir / "model" / "README.md").read_text()


@pytest.mark.slow
def test_the_model_folder_keeps_the_source_tokenizer_and_architecture(finetuned, source_dir):
    run_dir, _ = finetuned
    model, source = load_folder(run_dir / "model"), load_folder(source_dir)
    assert model.tokenizer == source.tokenizer and model.config == source.config
    assert not (run_dir / "tokenizer").exists()  # no BPE of the run's own to cache
    moved = [k for k, v in flatten(model.params).items() if not np.array_equal(v, flatten(source.params)[k])]
    assert moved  # the weights trained from the source's


@pytest.mark.slow
def test_resume_is_bit_exact(finetuned, tmp_path):
    run_dir, _ = finetuned
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name)
    shutil.rmtree(copy / "checkpoints" / "6")
    shutil.rmtree(copy / "model")
    run = resolve_init_from(
        tiny_run(tmp_path, init_from=json.loads((run_dir / "train_config.json").read_text())["init_from"])
    )
    train(run, resume=True, log=lambda *a: None)  # from step 3's checkpoint
    ours, theirs = load_pretrained(copy / "model")[0], load_pretrained(run_dir / "model")[0]
    for key, value in flatten(theirs).items():
        np.testing.assert_array_equal(flatten(ours)[key], value, err_msg=key)
    steps = [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4, 5, 6]
