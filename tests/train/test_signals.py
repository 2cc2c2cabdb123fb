"""`train` under real signals, as a terminal and `uv run` deliver them: Ctrl-C reaches the whole process
group, and `uv run` forwards it once more, so the process gets two SIGINTs a moment apart.

Before the run starts (data, tokenizer, compilation) the command ends at once and leaves nothing; once
it trains, it finishes the step, saves its checkpoint whatever else arrives, leaves no temporary
folder and no lock, and `--resume` continues from that step."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from microgpt_infer.run_layout import checkpoint_steps
from microgpt_train.cli import NOT_STARTED
from tests.terminal import HOW, command, ctrl_c_twice, ended, start

from .conftest import subprocess_env, tiny_flags


def _start(how: str, flags: list[str], cwd: Path) -> subprocess.Popen:
    """Unbuffered output, so the test sees each line as it is printed."""
    return start([*command("train", how), *flags], subprocess_env(PYTHONUNBUFFERED="1"), cwd, text=True)


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"train ended (status {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.05)


def _logged_steps(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
def test_ctrl_c_while_it_trains_saves_that_step_whatever_follows_and_resume_continues(
    tmp_path, tiny_tokenizer_dir, how
):
    flags = tiny_flags(
        tmp_path / "runs", "long", tokenizer=str(tiny_tokenizer_dir), max_steps=100_000,
        checkpoint_every=100_000, eval_every=0, sample_every=0,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "long"
    proc = _start(how, flags, tmp_path)
    _wait_for(lambda: _logged_steps(run_dir) >= 3, proc, "three logged steps")
    out, err, stopped = ended(proc, ctrl_c_twice(proc), timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "terminate called" not in err, err
    step = checkpoint_steps(run_dir)[-1]
    assert f"SIGINT at step {step}: checkpoint saved in" in err and "--resume --name long" in err
    assert "SIGINT: finishing this step and saving its checkpoint" in err
    assert step >= 3 and stopped < 60, stopped
    left = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert left == [str(step)], left  # no <step>.orbax-checkpoint-tmp folder beside it
    assert not (run_dir / ".lock").exists()
    if how == "script":  # once is enough: the resumed run starts from the saved step
        resumed = subprocess.run(
            [*command("train", how), "--resume", "--name", "long", "--runs-dir", str(tmp_path / "runs"),
             "--max-steps", str(step + 2)],
            capture_output=True, text=True, timeout=240, env=subprocess_env(), cwd=tmp_path,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed from step {step}" in resumed.stdout
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "loss" in r][-3:] == [step, step + 1, step + 2]


@pytest.mark.slow
@pytest.mark.parametrize("how", HOW)
def test_ctrl_c_before_the_run_starts_ends_it_at_once_and_leaves_no_folder(tmp_path, tiny_tokenizer_dir, how):
    """Signalled as soon as it announces the run (then it opens the loaders and compiles the step)."""
    flags = tiny_flags(tmp_path / "runs", "early", tokenizer=str(tiny_tokenizer_dir))
    proc = _start(how, flags, tmp_path)
    first = proc.stdout.readline()
    if not first.startswith("run early:"):
        pytest.fail(f"{first}{ended(proc, time.monotonic(), timeout=120)[1]}")
    out, err, stopped = ended(proc, ctrl_c_twice(proc))
    assert proc.returncode == 130, err
    assert err.strip().endswith(NOT_STARTED) and "Traceback" not in err, err
    assert stopped < 5, stopped  # at once, not after the compilation (the 0.3 s pause included)
    assert not (tmp_path / "runs" / "early").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--model", "default", "--data", "pydocs", "--batches", "100000"],
        ["train-tokenizer", "--data", "pydocs", "--vocab-size", "8192", "--out", "tok", "--no-progress"],
    ],
    ids=["evaluate", "train-tokenizer"],
)
def test_the_other_commands_end_at_once_on_ctrl_c_twice(tmp_path, argv):
    """Loading, compiling, evaluating or training a BPE: wherever the signals land, one line and 130."""
    proc = start([*command(argv[0], "script"), *argv[1:]], subprocess_env(), tmp_path, text=True)
    time.sleep(2.5)  # both take far longer than this to finish
    if proc.poll() is not None:
        pytest.fail(str(proc.communicate()))
    out, err, stopped = ended(proc, ctrl_c_twice(proc))
    assert proc.returncode == 130 and err.endswith("interrupted\n") and "Traceback" not in err, err
    assert out == "" and stopped < 5, stopped
    assert not (tmp_path / "tok").exists()  # no half-written tokenizer
