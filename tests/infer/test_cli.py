"""The `generate` and `push-to-hub` commands: --help, prompt or stdin, streaming, bad input exits 2."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from microgpt_infer import generate, load_model
from microgpt_infer.cli import main, push_main

N = "12"


def test_help(capsys):
    generate_flags = ["--seed", "--temperature", "--top-k", "--top-p", "--min-p", "--max-new-tokens"]
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
    penalties = ["--presence-penalty", "0.5", "--frequency-penalty", "0.25", "--repetition-penalty", "1.2"]
    assert main([*argv, "--min-p", "0.05", *penalties, "--max-new-tokens", N]) == 0
    expected = generate(model, "from stdin", rng=3, max_new_tokens=12, top_k=5, top_p=0.9, min_p=0.05,
                        presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=1.2)  # fmt: skip
    assert capsys.readouterr().out == expected + "\n"


def one_error_line(err: str) -> str:
    """The one `error: ...` line of a command's stderr (checked: exactly one, no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x", "--temperature", "-1"], "--temperature: must be a finite number >= 0"),
        (["x", "--temperature", "nan"], "--temperature: must be a finite number >= 0"),
        (["x", "--temperature", "inf"], "--temperature: must be a finite number >= 0"),
        (["x", "--top-k", "0"], "--top-k: must be >= 1"),
        (["x", "--top-k", "1.5"], "--top-k: expected an integer, got '1.5'"),
        (["x", "--top-p", "2"], r"--top-p: must be in \(0, 1\]"),
        (["x", "--top-p", "nan"], r"--top-p: must be in \(0, 1\]"),
        (["x", "--min-p", "1.5"], r"--min-p: must be in \[0, 1\]"),
        (["x", "--min-p", "nan"], r"--min-p: must be in \[0, 1\]"),
        (["x", "--min-p", "some"], "--min-p: expected a number, got 'some'"),
        (["x", "--presence-penalty", "3"], r"--presence-penalty: must be in \[-2, 2\]"),
        (["x", "--frequency-penalty", "-2.5"], r"--frequency-penalty: must be in \[-2, 2\]"),
        (["x", "--repetition-penalty", "0"], "--repetition-penalty: must be a finite number > 0"),
        (["x", "--repetition-penalty", "inf"], "--repetition-penalty: must be a finite number > 0"),
        (["x", "--max-new-tokens", "many"], "expected an integer"),
        (["x", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
        (["x", "--seed", "1e29"], "--seed: expected an integer, got '1e29'"),
        (["x", "--seed", str(10**29)], r"--seed: must be an integer in \[0, 4294967295\]"),
        (["x", "--seed", "-1"], r"--seed: must be an integer in \[0, 4294967295\]"),
        (["x", "--seed", str(2**32)], r"--seed: must be an integer in \[0, 4294967295\]"),
        (["x", "--bogus"], "unrecognized arguments"),
        (["x", "--model", "/no/such/folder"], "no such folder"),
        (["x", "--max-new-tokens", "64"], r"max_new_tokens must be an integer in \[1, 63\]"),
        (["x", "--stop", ""], "stop\\[0\\] must be a non-empty str"),
        (["a\udc80b"], r"the prompt: .*lone surrogate '\\udc80' at index 1"),
        (["x" * 60, "--max-new-tokens", "12"], "the prompt has 60 tokens.*--crop-prompt"),
        (["x", "--system", "be brief"], "--system is a chat's system message: give --chat too"),
        (["x", "--chat", "--max-new-tokens", "60"], "the prompt has 19 tokens.*--crop-prompt"),
    ],
    ids=repr,
)
def test_bad_input_exits_2_with_one_error_line_and_nothing_on_stdout(model_dir, capsys, argv, message):
    argv = argv if "--model" in argv else [*argv, "--model", str(model_dir)]
    assert run(main, argv) == 2
    out, err = capsys.readouterr()
    assert out == ""  # the prompt is echoed only once the generation has started
    assert re.search(message, one_error_line(err)), err


def test_prompts_at_the_boundaries_generate(model_dir, model, capsys):
    greedy = ["--model", str(model_dir), "--temperature", "0", "--max-new-tokens", N]
    assert main(["", *greedy]) == 0  # empty: starts from end-of-text
    assert capsys.readouterr().out == generate(model, "", rng=0, max_new_tokens=12, temperature=0) + "\n"
    long = "".join(chr(97 + i % 26) for i in range(60))
    assert main([long, *greedy, "--crop-prompt", "--seed", "4294967295"]) == 0
    expected = generate(model, long, rng=0, max_new_tokens=12, temperature=0, crop_prompt=True)
    assert capsys.readouterr().out == long + expected + "\n"


@pytest.mark.parametrize(
    ("data", "offset", "byte"),
    [(b"ok \xff\xfe", 3, "0xff"), (b"\xc3", 0, "0xc3"), (b"caf\xc3\xa9 \xe9t\xe9", 6, "0xe9")],
)
def test_stdin_that_is_not_utf8_is_one_error_line(model_dir, capsys, monkeypatch, data, offset, byte):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    assert main(["--model", str(model_dir)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = one_error_line(err)
    assert line.startswith("error: stdin is not UTF-8 text") and f"{byte} at offset {offset}" in line


def test_ctrl_c_stops_a_generation_promptly_with_status_130(long_model_dir):
    """A real process and a real SIGINT once output has started: it would otherwise run for seconds."""
    import select
    import signal
    import time

    exe = Path(sys.executable).parent / "generate"
    argv = [str(exe), "x", "--model", str(long_model_dir), "--max-new-tokens", "4000", "--temperature", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no output within 120 s"
        first = os.read(proc.stdout.fileno(), 4096)
        assert first.startswith(b"x")
        time.sleep(0.2)  # tokens are streaming
        start = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
        stopped = time.perf_counter() - start
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert stopped < 3.0, stopped  # 4,000 tokens take about 6 s here: it stopped, it did not finish
    assert err == b"interrupted\n", err.decode()  # one line, no traceback
    assert len((first + rest).decode()) < 4000 and rest.endswith(b"\n")  # the line it was writing ended


def test_a_reader_that_stops_reading_ends_it_quietly(long_model_dir):
    """`generate ... | head -c 10`: status 141 (as for SIGPIPE) and nothing on stderr."""
    exe = Path(sys.executable).parent / "generate"
    argv = [str(exe), "x", "--model", str(long_model_dir), "--max-new-tokens", "4000", "--temperature", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(10).startswith(b"x")
        proc.stdout.close()  # the reader is gone
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 141 and err == b"", err.decode()


def test_no_model_named_uses_the_shipped_one_and_says_so(tmp_path, monkeypatch, capsys, model_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROGPT_MODEL", raising=False)
    shutil.copytree(model_dir, tmp_path / "runs" / "mine" / "model")  # there, but never picked
    assert main(["Once upon a time", "--max-new-tokens", "4", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Once upon a time") and len(out) > len("Once upon a time\n")
    assert "generate: using the model microgpt-infer ships (default: " in err and "runs" not in err
    monkeypatch.setenv("MICROGPT_MODEL", str(tmp_path / "missing"))
    assert main(["hi"]) == 2
    err = capsys.readouterr().err
    assert f"using $MICROGPT_MODEL={tmp_path / 'missing'}" in err and "uv run train" in err
    assert main(["hi", "--max-new-tokens", "2", "--model", str(model_dir)]) == 0  # --model wins
    assert "generate: using" not in capsys.readouterr().err


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
    assert bad.returncode == 2 and one_error_line(bad.stderr) and bad.stdout == ""


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
    assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1


def test_push_to_hub_cli_uploads(hub, model_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert push_main([str(model_dir), "me/cli-model", "--private", "--commit-message", "first"]) == 0
    assert capsys.readouterr().out.startswith(f"{hub.url}/me/cli-model/commit/")
    assert hub.repos["me/cli-model"].private and "model.safetensors" in hub.repos["me/cli-model"].files
    commit = next(r for r in hub.requests if "/commit/" in r.path)
    assert b'"summary": "first"' in commit.body.splitlines()[0]


def test_a_local_path_with_a_typo_says_first_that_it_does_not_exist(hub, tmp_path, monkeypatch, capsys):
    from microgpt_infer.cli import export_main

    monkeypatch.chdir(tmp_path)
    for name in ("quickstart", "wide"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    for entry, argv in ((main, ["x", "--model", "runs/nope"]), (push_main, ["runs/nope", "me/x"]),
                        (export_main, ["runs/nope", "out"])):  # fmt: skip
        assert run(entry, argv) == 2
        out, err = capsys.readouterr()
        expected = "error: runs/nope: no such folder (runs/ holds: quickstart, wide); a model is"
        assert one_error_line(err).startswith(expected)
        assert out == ""
    assert hub.requests == []  # no Hub request for a local path


def test_push_to_hub_takes_the_shipped_model_and_run_folders(hub, model_dir, tmp_path, monkeypatch, capsys):
    from microgpt_infer.model import DEFAULT_MODEL_DIR

    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(model_dir, tmp_path / "runs" / "tiny" / "checkpoints" / "4" / "model")
    assert push_main(["runs/tiny", "me/run"]) == 0
    assert capsys.readouterr().err == "runs/tiny has no model/ yet: using its newest checkpoint, step 4\n"
    assert hub.repos["me/run"].files["model.safetensors"] == (model_dir / "model.safetensors").read_bytes()
    assert push_main(["default", "me/shipped"]) == 0
    shipped = hub.repos["me/shipped"].files
    assert shipped["model.safetensors"] == (DEFAULT_MODEL_DIR / "model.safetensors").read_bytes()


def test_num_samples_uses_seed_plus_i_and_separates_the_samples(model_dir, model, capsys):
    argv = ["Hi", "--model", str(model_dir), "--max-new-tokens", N, "--seed", "5", "--num-samples", "3"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    samples = [generate(model, "Hi", rng=5 + i, max_new_tokens=12) for i in range(3)]
    assert out == "---\n".join(f"Hi{text}\n" for text in samples) and err == ""
    assert len(set(samples)) > 1  # different seeds, different samples
    assert main(["Hi", "--model", str(model_dir), "--seed", "4294967295", "--num-samples", "2"]) == 2
    assert "sample i uses seed + i" in one_error_line(capsys.readouterr().err)


def test_without_a_seed_each_run_draws_one_and_says_it(model_dir, model, capsys):
    seeds = []
    for _ in range(2):
        assert main(["Hi", "--model", str(model_dir), "--max-new-tokens", N]) == 0
        out, err = capsys.readouterr()
        seed = int(re.fullmatch(r"generate: seed (\d+) \(--seed \1 gives this text again\)\n", err)[1])
        assert out == "Hi" + generate(model, "Hi", rng=seed, max_new_tokens=12) + "\n"
        seeds.append(seed)
    assert seeds[0] != seeds[1]
    assert main(["Hi", "--model", str(model_dir), "--max-new-tokens", N, "--temperature", "0"]) == 0
    assert capsys.readouterr().err == ""  # greedy: no seed to say
