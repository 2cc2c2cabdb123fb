"""The `train` and `evaluate` commands: --help, flags generated from the dataclasses, TOML, boolean
switches, what --resume reads and refuses, bad input."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from microgpt_core import GPTConfig
from microgpt_train import PRESETS, cli, evaluate, flags
from microgpt_train.config import RunConfigError, run_fields

from .conftest import tiny_run


def test_help_lists_every_field_of_both_dataclasses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for f in [*run_fields(), *dataclasses.fields(GPTConfig)]:
        assert f"--{f.name.replace('_', '-')}" in out
    for flag in ("--preset", "--config", "--resume", "--coordinator", "--num-processes", "--process-id"):
        assert flag in out


def _help(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # help wraps lines: compare as one line


@pytest.mark.parametrize("name", ["quickstart", "seed-5m"])
def test_help_shows_the_defaults_of_the_preset_in_use(name, capsys):
    argv = ["--help"] if name == "quickstart" else ["--preset", name, "--help"]
    text = _help(cli.main, argv, capsys)
    chosen = PRESETS[name]
    assert (
        f"optimiser steps; the learning-rate schedule spans exactly these (default: {chosen.max_steps})"
        in text
    )
    assert f"model width D (default: {chosen.model.d_model})" in text
    assert "--data DATA training text: pydocs" in text and f"(default: {chosen.data})" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert len(re.findall(r"\(default: [^)]*\) \(default:", text)) == 0


def test_evaluate_help_shows_its_defaults(capsys):
    text = _help(evaluate.main, ["--help"], capsys)
    assert "--model MODEL default (the model microgpt-infer ships), a model folder" in text
    assert "a run folder (runs/NAME: its model/ or newest checkpoint) or a Hugging Face Hub repo id" in text
    assert "batches to evaluate (default: 16)" in text and "sequences per batch (default: 8)" in text
    assert "(default: None)" not in text
    assert "repo id (org/name) (default" not in text


@pytest.mark.parametrize(
    "argv, value",
    [([], False), (["--fsdp"], True), (["--no-fsdp"], False), (["--fsdp", "true"], True),
     (["--fsdp", "false"], False), (["--fsdp=yes"], True), (["--fsdp", "--no-fsdp"], False)],
)  # fmt: skip
def test_boolean_fields_are_switches_that_also_take_a_value(argv, value):
    run = flags.resolve_config(flags.build_parser().parse_args(argv))
    assert run.fsdp is value
    assert flags.resolve_config(flags.build_parser().parse_args(["--no-bias"])).model.bias is False
    assert flags.resolve_config(flags.build_parser().parse_args(["--progress", "off"])).progress is False


def test_every_architecture_option_is_a_flag():
    gpt2 = ["--positional", "learned", "--norm", "layernorm", "--mlp", "gelu", "--bias", "--d-ff", "512"]
    model = flags.resolve_config(flags.build_parser().parse_args([*gpt2, "--n-kv-heads", "4"])).model
    assert (model.positional, model.norm, model.mlp, model.bias, model.n_kv_heads) == (
        "learned", "layernorm", "gelu", True, 4
    )  # fmt: skip
    argv = ["--positional", "rope", "--rope-theta", "500000", "--n-kv-heads", "1", "--qk-norm", "--no-bias"]
    model = flags.resolve_config(flags.build_parser().parse_args(argv)).model
    assert (model.positional, model.rope_theta, model.n_kv_heads, model.qk_norm, model.bias) == (
        "rope", 500000.0, 1, True, False
    )  # fmt: skip


def test_boolean_fields_from_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("fsdp = true\nprogress = false\n[model]\nbias = false\n")
    run = flags.resolve_config(flags.build_parser().parse_args(["--config", str(path)]))
    assert (run.fsdp, run.progress, run.model.bias) == (True, False, False)
    path.write_text('fsdp = "yes"\n')
    assert cli.main(["--config", str(path)]) == 2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--no-such-flag"], "unrecognized arguments"),
        (["--batch-size", "many"], "invalid int value"),
        (["--fsdp", "maybe"], "expected true or false"),
        (["--no-fsdp", "true"], "unrecognized arguments"),
        (["--preset", "tiny"], "unknown preset 'tiny'"),
        (["--batch-size", "6", "--grad-accum", "4"], "divisible by grad_accum"),
        (["--d-model", "100", "--n-heads", "3"], "divisible by n_heads"),
        (["--n-heads", "4", "--n-kv-heads", "3"], "n_kv_heads (3) must divide n_heads (4)"),
        (["--rope-theta", "0.5", "--positional", "rope"], "rope_theta must be a finite number > 1"),
        (["--sample-tokens", "4096"], "context_length"),
        (["--coordinator", "127.0.0.1:1"], "go together"),
        (["--compute-dtype", "float16"], "invalid choice: 'float16' (choose from 'float32', 'bfloat16')"),
        (["--compute-dtype", "float64"], "invalid choice: 'float64' (choose from 'float32', 'bfloat16')"),
        (["--positional", "alibi"], "(choose from 'learned', 'sinusoidal', 'rope')"),
        (["--optimizer", "sgd"], "invalid choice: 'sgd' (choose from 'adamw', 'muon')"),
        (["--muon-momentum", "1"], "muon_momentum must be in [0, 1), got 1.0"),
    ],
)
def test_bad_input_exits_2_with_error(argv, match, capsys):
    usage = argv[0] in ("--no-such-flag", "--no-fsdp", "--compute-dtype", "--positional", "--optimizer")
    usage = usage or "many" in argv or "maybe" in argv
    code = None if usage else cli.main(argv)
    if code is None:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        code = exit_info.value.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
    assert "Traceback" not in err


def test_the_valid_words_of_a_field_are_the_ones_help_gives(tmp_path, capsys):
    """--help, the flag and a TOML file agree: float64 is no training dtype anywhere."""
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "--compute-dtype float32|bfloat16" in " ".join(capsys.readouterr().out.split())
    path = tmp_path / "run.toml"
    path.write_text('[model]\ncompute_dtype = "float64"\n')
    assert cli.main(["--config", str(path)]) == 2
    assert "compute_dtype must be one of ['float32', 'bfloat16'] for training" in capsys.readouterr().err


def test_toml_config_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('name = "fromtoml"\nmax_steps = 9\n[model]\nd_model = 64\nn_layers = 2\n')
    args = flags.build_parser().parse_args(["--config", str(path), "--max-steps", "11"])
    run = flags.resolve_config(args)
    assert (run.name, run.max_steps, run.model.d_model, run.model.n_layers) == ("fromtoml", 11, 64, 2)


@pytest.mark.parametrize(
    "text, match",
    [("nonsense = 1\n", "unknown run config key"), ("max_steps = [\n", "not valid TOML"),
     ("[model]\nheads = 2\n", "unknown model key")],
)  # fmt: skip
def test_bad_toml_exits_2(tmp_path, text, match, capsys):
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert cli.main(["--config", str(path)]) == 2
    assert match in capsys.readouterr().err
    assert cli.main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read --config" in capsys.readouterr().err


def test_evaluate_bad_model_folder_exits_2(tmp_path, capsys):
    assert evaluate.main(["--model", str(tmp_path / "nothing"), "--data", "pydocs"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# --------------------------------------------------------------------------------------------------
# --resume reads the run folder's own config.
def _saved_run(tmp_path, **changes):
    """A run folder holding only a train_config.json (what --resume resolves from)."""
    run = tiny_run(tmp_path / "runs", "wide", **changes)
    folder = tmp_path / "runs" / "wide"
    folder.mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps(run.to_dict()))
    return run


def _resolve(argv):
    return flags.resolve_config(flags.build_parser().parse_args(argv))


def test_resume_continues_the_saved_config_with_no_other_flags(tmp_path, monkeypatch):
    saved = _saved_run(tmp_path, learning_rate=1e-2, max_steps=7, seed=3)
    monkeypatch.chdir(tmp_path)
    # Exactly as the README writes it; the folder is where it is now (runs/), not the saved path.
    assert _resolve(["--resume", "--name", "wide"]) == dataclasses.replace(saved, runs_dir="runs")
    # Flags that do not change the trajectory are taken.
    run = _resolve(
        ["--resume", "--name", "wide", "--progress", "false", "--log-every", "5", "--eval-every", "2"]
    )
    assert (run.progress, run.log_every, run.eval_every, run.learning_rate) == (False, 5, 2, 1e-2)
    assert _resolve(["--resume", "--name", "wide", "--max-steps", "20"]).max_steps == 20  # trains further


def test_resume_follows_a_moved_folder(tmp_path, monkeypatch):
    saved = _saved_run(tmp_path)
    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    (tmp_path / "runs").rename(moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = _resolve(["--resume", "--name", "wide", "--runs-dir", "runs"])  # relative, not the saved path
    assert run.runs_dir == "runs" and run == dataclasses.replace(saved, runs_dir="runs")


@pytest.mark.parametrize(
    "flags, named",
    [(["--learning-rate", "0.5"], "learning_rate 0.003 -> 0.5"),
     (["--d-model", "64"], "model.d_model 32 -> 64"),
     (["--data", "other.txt"], "data 'pydocs' -> 'other.txt'"),
     (["--no-bias"], "model.bias True -> False"),
     (["--optimizer", "muon"], "optimizer 'adamw' -> 'muon'"),
     (["--preset", "seed-5m"], "--preset seed-5m would change the run")],
)  # fmt: skip
def test_resume_refuses_flags_that_change_the_trajectory(tmp_path, monkeypatch, flags, named, capsys):
    _saved_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunConfigError, match=re.escape(named)):
        _resolve(["--resume", "--name", "wide", *flags])
    assert cli.main(["--resume", "--name", "wide", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume:") and err.count("\n") == 1


def test_resume_without_a_run_folder_names_what_is_there(tmp_path, monkeypatch, capsys):
    _saved_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--resume", "--name", "wdie"]) == 2
    err = capsys.readouterr().err
    assert "there is no run folder runs/wdie (runs holds wide)" in err
    (tmp_path / "runs" / "bare").mkdir()
    (tmp_path / "runs" / "bare" / "notes.txt").write_text("x")
    assert cli.main(["--resume", "--name", "bare"]) == 2
    assert "runs/bare has no train_config.json (it holds notes.txt)" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["refused", "silent", 503, 404])
def test_train_and_evaluate_on_a_broken_hub_print_one_error_line_in_bounded_time(
    kind, fake_hub, tmp_path, tiny_run_dir, monkeypatch, capsys
):
    import time

    url, _ = fake_hub(kind)
    monkeypatch.setenv("MICROGPT_HUB_TIMEOUT", "0.5")
    start = time.perf_counter()
    assert cli.main(["--runs-dir", str(tmp_path), "--name", "hub", "--data", "org/name"]) == 2
    assert evaluate.main(["--model", str(tiny_run_dir), "--data", "org/name", "--batches", "1"]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: Hub dataset 'org/name'") for line in lines), err
    assert all(url in line for line in lines)
