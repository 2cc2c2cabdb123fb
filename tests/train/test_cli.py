"""The `train` and `evaluate` commands: --help, flags generated from the dataclasses, TOML, bad input."""

from __future__ import annotations

import dataclasses

import pytest

from microgpt_core import GPTConfig
from microgpt_train import cli, evaluate
from microgpt_train.config import run_fields


def test_help_lists_every_field_of_both_dataclasses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for f in [*run_fields(), *dataclasses.fields(GPTConfig)]:
        assert f"--{f.name.replace('_', '-')}" in out
    for flag in ("--preset", "--config", "--resume", "--coordinator", "--num-processes", "--process-id"):
        assert flag in out


def test_evaluate_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--help"])
    assert exit_info.value.code == 0
    assert "--model" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--no-such-flag"], "unrecognized arguments"),
        (["--batch-size", "many"], "invalid int value"),
        (["--fsdp", "maybe"], "expected true or false"),
        (["--preset", "tiny"], "unknown preset 'tiny'"),
        (["--batch-size", "6", "--grad-accum", "4"], "divisible by grad_accum"),
        (["--d-model", "100", "--n-heads", "3"], "divisible by n_heads"),
        (["--sample-tokens", "4096"], "context_length"),
        (["--coordinator", "127.0.0.1:1"], "go together"),
    ],
)
def test_bad_input_exits_2_with_error(argv, match, capsys):
    code = (
        cli.main(argv) if argv[0] != "--no-such-flag" and "many" not in argv and "maybe" not in argv else None
    )
    if code is None:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        code = exit_info.value.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
    assert "Traceback" not in err


def test_toml_config_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('name = "fromtoml"\nmax_steps = 9\n[model]\nd_model = 64\nn_layers = 2\n')
    args = cli.build_parser().parse_args(["--config", str(path), "--max-steps", "11"])
    run = cli.resolve_config(args)
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
