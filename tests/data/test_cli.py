"""train-tokenizer: --help, a real run on local files, and `error: ...` with exit 2 on bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from microgpt_data import Tokenizer
from microgpt_data.cli import main


@pytest.fixture()
def corpus(tmp_path, small_texts):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in small_texts[:20]))
    return path


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--vocab-size", "--out", "--text-column", "--split", "--max-documents"):
        assert flag in out


def test_trains_and_saves(corpus, tmp_path, capsys, small_texts):
    out = tmp_path / "tok"
    argv = ["--data", str(corpus), "--text-column", "body", "--vocab-size", "300", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert "saved 300-token tokenizer (eot id 299)" in capsys.readouterr().out
    tokenizer = Tokenizer.load(out)
    assert tokenizer.vocab_size == 300
    assert tokenizer.decode(tokenizer.encode(small_texts[0])) == small_texts[0]


def test_max_documents_and_special_tokens(corpus, tmp_path):
    out = tmp_path / "tok"
    argv = ["--data", str(corpus), "--text-column", "body", "--vocab-size", "300", "--out", str(out)]
    argv += [
        "--max-documents",
        "3",
        "--special-token",
        "<|eot|>",
        "--special-token",
        "<|pad|>",
        "--no-progress",
    ]
    assert main(argv) == 0
    tokenizer = Tokenizer.load(out)
    assert tokenizer.eot_token == "<|eot|>"
    assert tokenizer.special_tokens == {"<|eot|>": 298, "<|pad|>": 299}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "missing.jsonl", "--vocab-size", "300"], "error: 'missing.jsonl' does not exist"),
        (["--vocab-size", "10", "--text-column", "body"], "error: vocab_size must be an integer >= 257"),
        (
            ["--vocab-size", "300", "--text-column", "nope"],
            "error: .*no column 'nope'; its columns are \\['body'\\]",
        ),
        (["--vocab-size", "300", "--max-documents", "0"], "error: --max-documents must be >= 1"),
        (
            [
                "--data",
                "pydocs",
                "--vocab-size",
                "300",
                "--split",
                "validation",
                "--special-token",
                "a",
                "--special-token",
                "a",
            ],
            "error: special_tokens must be non-empty and distinct",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(corpus, tmp_path, capsys, argv, message):
    if "--data" not in argv:
        argv = ["--data", str(corpus), *argv]
    assert main([*argv, "--out", str(tmp_path / "tok"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "tok").exists()


def test_hub_id_offline_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--data", "stas/openwebtext-10k", "--vocab-size", "300", "--out", str(tmp_path)]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", "pydocs"])
    assert exit_info.value.code == 2
    assert "--vocab-size" in capsys.readouterr().err


def test_as_a_process_help_exits_0_and_bad_input_exits_2(tmp_path):
    def run(*argv):
        command = [sys.executable, "-m", "microgpt_data.cli", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    result = run("--help")
    assert result.returncode == 0 and "train-tokenizer" in result.stdout
    missing, out = str(tmp_path / "missing.jsonl"), str(tmp_path / "t")
    result = run("--data", missing, "--vocab-size", "300", "--out", out)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_exception(tmp_path):
    from microgpt_data import MissingPathError

    with pytest.raises(MissingPathError):
        main(["--data", str(tmp_path / "no.txt"), "--vocab-size", "300", "--out", str(tmp_path), "--debug"])
