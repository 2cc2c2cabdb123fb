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


def help_text(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def help_entries(text: str) -> dict[str, str]:
    """Each option's help, joined onto one line, keyed by its first flag."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.split("options:", 1)[1].splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            flag = match.group(1)
            entries[flag] = line
        elif flag:
            entries[flag] += " " + line.strip()
    return {flag: " ".join(entry.split()) for flag, entry in entries.items()}


def test_help_lists_the_flags(capsys):
    out = help_text(capsys)
    for flag in ("--data", "--vocab-size", "--out", "--text-column", "--split", "--max-documents"):
        assert flag in out
    assert "--progress [true|false]" in out and "--no-progress: off" in out


def test_help_states_each_default_once_and_none_on_required_flags(capsys):
    """argparse's ArgumentDefaultsHelpFormatter printed `(default: <|endoftext|>) (default: None)`,
    `(default: None)` on required flags and `(default: False)` on switches."""
    entries = help_entries(help_text(capsys))
    assert {"--data", "--vocab-size", "--out", "--special-token", "--pattern", "--debug"} <= set(entries)
    for entry in entries.values():
        assert entry.count("(default:") <= 1, entry
        assert "(default: None)" not in entry and "(default: False)" not in entry, entry
    for flag in ("--data", "--vocab-size", "--out", "--debug", "-h"):
        assert "(default:" not in entries[flag], entries[flag]
    assert entries["--special-token"].endswith("(default: <|endoftext|>)")
    assert entries["--split"].endswith("(default: train)")
    assert entries["--min-frequency"].endswith("(default: 2)")
    assert entries["--progress"].endswith("(default: true)")


def test_trains_and_saves(corpus, tmp_path, capsys, small_texts):
    out = tmp_path / "tok"
    argv = ["--data", str(corpus), "--text-column", "body", "--vocab-size", "300", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "saved 300-token tokenizer (eot id 299)" in captured.out
    assert "warning" not in captured.err  # the size asked was reached
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
        (["--vocab-size", "10", "--text-column", "body"], "error: --vocab-size must be an integer >= 257"),
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
            "error: --special-token must be non-empty and distinct",
        ),
        (["--vocab-size", "300", "--min-frequency", "0"], "error: --min-frequency must be >= 1"),
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


def test_debug_shows_the_traceback(tmp_path, capsys):
    argv = ["--data", str(tmp_path / "no.txt"), "--vocab-size", "300", "--out", str(tmp_path), "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "DataSourceError" in err
    assert err.rstrip().splitlines()[-1].startswith("error: ") and "no.txt' does not exist" in err


def test_a_vocabulary_smaller_than_asked_is_saved_with_a_warning(tmp_path, capsys):
    """A corpus that yields fewer tokens than --vocab-size saved a smaller tokenizer silently."""
    corpus = tmp_path / "small.txt"
    corpus.write_text("\n\n".join(f"the cat sat on mat {i}" for i in range(40)))
    out = tmp_path / "tok"
    assert main(["--data", str(corpus), "--vocab-size", "4096", "--out", str(out), "--no-progress"]) == 0
    reached = Tokenizer.load(out).vocab_size
    assert 257 < reached < 4096
    captured = capsys.readouterr()
    assert f"saved {reached}-token tokenizer" in captured.out
    (warning,) = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert f"reached {reached} tokens" in warning and "--vocab-size 4096 asked" in warning


@pytest.mark.parametrize(
    "tokens",
    [[""], ["<|endoftext|>", ""], ["", "<|pad|>"]],
    ids=["only-empty", "empty-second", "empty-first"],
)
def test_an_empty_special_token_is_refused_without_hanging(tmp_path, tokens):
    """`--special-token ""` saved a tokenizer whose encode(allow_special=True) never returned."""
    argv = ["--data", "pydocs", "--vocab-size", "300", "--out", str(tmp_path / "tok"), "--no-progress"]
    for token in tokens:
        argv += ["--special-token", token]
    command = [sys.executable, "-m", "microgpt_data.cli", *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("error: ") == 1 and "Traceback" not in result.stderr
    assert "error: --special-token: every special token must be a non-empty string, got ''" in result.stderr
    assert not (tmp_path / "tok").exists()


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    import microgpt_data.sources
    from microgpt_data.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(microgpt_data.sources, "load_text_dataset", interrupted)
    assert main(["--data", "pydocs", "--vocab-size", "300", "--out", str(tmp_path / "tok")]) == 130
    assert capsys.readouterr().err == "interrupted\n"
