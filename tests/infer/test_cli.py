"""The `generate` and `push-to-hub` commands: --help, prompt or stdin, streaming, bad input exits 2."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from microgpt_infer import generate, load_model
from microgpt_infer.cli import main, push_main

N = "12"


def test_help(capsys):
    generate_flags = ["--seed", "--temperature", "--top-k", "--top-p", "--max-new-tokens", "--model"]
    for entry, words in ((main, generate_flags), (push_main, ["model_dir", "repo_id", "--private"])):
        with pytest.raises(SystemExit) as info:
            entry(["--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert all(w in out for w in words)


def test_generates_from_a_prompt_argument(model_dir, model, capsys):
    assert main(["Hello", "--model", str(model_dir), "--temperature", "0", "--max-new-tokens", N]) == 0
    out = capsys.readouterr().out
    assert out == "Hello" + generate(model, "Hello", rng=0, max_new_tokens=12, temperature=0) + "\n"


def test_reads_stdin_and_options(model_dir, model, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin"))
    argv = ["--model", str(model_dir), "--seed", "3", "--top-k", "5", "--top-p", "0.9", "--no-prompt-echo"]
    assert main([*argv, "--max-new-tokens", N]) == 0
    expected = generate(model, "from stdin", rng=3, max_new_tokens=12, top_k=5, top_p=0.9)
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x", "--temperature", "-1"], "--temperature: must be a finite number >= 0"),
        (["x", "--top-k", "0"], "--top-k: must be >= 1"),
        (["x", "--top-p", "2"], r"--top-p: must be in \(0, 1\]"),
        (["x", "--max-new-tokens", "many"], "expected an integer"),
        (["x", "--bogus"], "unrecognized arguments"),
        (["x", "--model", "/no/such/folder"], "no such folder"),
        (["x", "--max-new-tokens", "64"], r"max_new_tokens must be an integer in \[1, 63\]"),
    ],
)
def test_bad_input_exits_2_with_an_error_line(model_dir, capsys, argv, message):
    argv = argv if "--model" in argv else [*argv, "--model", str(model_dir)]
    assert run(main, argv) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err
    assert re.search(message, err), err


def test_no_model_anywhere_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROGPT_MODEL", raising=False)
    assert main(["hi"]) == 2
    assert "uv run train" in capsys.readouterr().err


def test_push_to_hub_cli_errors(tmp_path, capsys):
    assert push_main([str(tmp_path / "missing"), "me/x"]) == 2
    assert "error: " in capsys.readouterr().err
    assert run(push_main, []) == 2


def test_installed_command_streams_from_stdin(model_dir, tmp_path):
    """The console script as a process: stdin prompt, tokens on stdout, exit 0; then exit 2."""
    exe = Path(sys.executable).parent / "generate"
    env = {**os.environ, "MICROGPT_MODEL": str(model_dir)}
    ok = subprocess.run([str(exe), "--temperature", "0", "--max-new-tokens", N], input="Hello",
                        capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    expected = generate(load_model(model_dir), "Hello", rng=0, max_new_tokens=12, temperature=0)
    assert ok.stdout == "Hello" + expected + "\n"
    bad = subprocess.run([str(exe), "x", "--top-p", "0"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1].startswith("error: ")


def run(entry, argv) -> int:
    """The exit code of a CLI entry point, whether it returns it or argparse raises SystemExit."""
    try:
        return entry(argv)
    except SystemExit as e:
        return e.code


def test_debug_shows_the_traceback(capsys):
    assert main(["x", "--model", "/no/such/folder", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_push_to_hub_cli_uploads(hub, model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert push_main([str(model_dir), "me/cli-model", "--private", "--commit-message", "first"]) == 0
    assert capsys.readouterr().out.startswith(f"{hub.url}/me/cli-model/commit/")
    assert hub.repos["me/cli-model"].private and "model.safetensors" in hub.repos["me/cli-model"].files
    commit = next(r for r in hub.requests if "/commit/" in r.path)
    assert b'"summary": "first"' in commit.body.splitlines()[0]
