"""Run configs: presets validate, dict and TOML round trips, unknown keys and bad values are errors."""

from __future__ import annotations

import time

import pytest

from microgpt_core import GPTConfig
from microgpt_train import PRESETS, RunConfig, RunConfigError, preset
from microgpt_train.config import SEED_MODEL
from microgpt_train.loop import check_devices


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_round_trips(name):
    run = preset(name)
    run.validate()
    run.model.validate()
    assert RunConfig.from_dict(run.to_dict()) == run
    check_devices(run, 1, 1)


def test_seed_preset_is_the_original_microgpt():
    model = preset("seed-5m").model
    assert model == SEED_MODEL
    assert (model.d_model, model.n_layers, model.n_heads, model.vocab_size) == (256, 4, 4, 8192)
    assert model.positional == "sinusoidal" and model.tie_embeddings and model.embed_scale
    assert not model.final_norm and model.dropout == 0.1
    assert preset("seed-5m").data == "stas/openwebtext-10k"


def test_seed_preset_fails_fast_and_clearly_offline(tmp_path, monkeypatch):
    from microgpt_data import HubUnavailableError
    from microgpt_train.pipeline import resolve_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="openwebtext"):
        resolve_tokenizer(preset("seed-5m"), tmp_path, log=lambda *a: None)
    assert time.perf_counter() - start < 15


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(RunConfigError, match="quickstart"):
        preset("nope")


def test_merge_flat_and_nested_model_keys():
    run = preset("quickstart").merge({"max_steps": 7, "d_model": 64, "model": {"n_layers": 2}})
    assert run.max_steps == 7 and run.model.d_model == 64 and run.model.n_layers == 2
    assert run.model.d_ff == 192  # the default width follows: SwiGLU's ⌈(2/3 · 4 · 64) / 32⌉ · 32
    gelu = preset("quickstart").merge({"model": {"mlp": "gelu"}}).model
    assert gelu.d_ff == 4 * 128  # and the kind of MLP


@pytest.mark.parametrize(
    "updates, match",
    [
        ({"max_step": 3}, "unknown run config key"),
        ({"model": {"width": 3}}, "unknown model key"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"batch_size": 6, "grad_accum": 4}, "divisible by grad_accum"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"beta2": 1.0}, "beta2"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"d_model": 130}, "divisible by n_heads"),
        ({"sample_tokens": 500}, "context_length"),
        ({"max_steps": "10"}, "integer"),
        ({"fsdp": "yes"}, "true or false"),
        (
            {"weights_dtype": "float16"},
            r"weights_dtype must be one of \['float32', 'bfloat16'\], got 'float16'",
        ),
        ({"optimizer": "sgd"}, r"optimizer must be one of \['adamw', 'muon'\], got 'sgd'"),
        ({"muon_learning_rate": 0.0}, "muon_learning_rate must be > 0, got 0.0"),
        ({"muon_momentum": 1.0}, r"muon_momentum must be in \[0, 1\), got 1.0"),
        ({"muon_momentum": float("nan")}, "muon_momentum must be finite"),
    ],
)
def test_bad_values_name_the_field(updates, match):
    with pytest.raises(RunConfigError, match=match):
        preset("quickstart").merge(updates)


def test_a_saved_config_from_before_the_optimizer_field_is_an_adamw_run():
    saved = preset("quickstart").merge({"optimizer": "muon"}).to_dict()
    for name in ("optimizer", "muon_learning_rate", "muon_momentum"):
        del saved[name]
    run = RunConfig.from_dict(saved)
    assert (run.optimizer, run.muon_learning_rate, run.muon_momentum) == ("adamw", 0.02, 0.95)
    assert "Muon" in preset("quickstart").merge({"optimizer": "muon"}).summary()


def test_devices_must_divide_the_micro_batch():
    run = preset("quickstart").merge({"batch_size": 12, "grad_accum": 2})
    check_devices(run, 2, 1)
    with pytest.raises(RunConfigError, match="divisible by the 4 devices"):
        check_devices(run, 4, 1)
    with pytest.raises(RunConfigError, match="5 processes"):
        check_devices(run, 1, 5)


def test_model_must_be_a_gpt_config():
    with pytest.raises(RunConfigError):
        RunConfig(model={"d_model": 3})  # type: ignore[arg-type]
    assert isinstance(preset("quickstart").model, GPTConfig)


def test_the_example_run_file_is_a_valid_run_config():
    """README's `uv run train --config examples/run.toml`: every key known, every value valid."""
    from pathlib import Path

    from microgpt_train import flags

    example = Path(__file__).resolve().parents[2] / "examples" / "run.toml"
    run = flags.resolve_config(flags.build_parser().parse_args(["--config", str(example)]))
    assert (run.name, run.max_steps, run.model.d_model, run.model.n_kv_heads) == ("wide", 400, 192, 2)
    assert run.model.n_layers == preset("quickstart").model.n_layers  # the rest is the preset's
    argv = ["--config", str(example), "--d-model", "96"]
    flagged = flags.resolve_config(flags.build_parser().parse_args(argv))
    assert flagged.model.d_model == 96  # flags win over the file
