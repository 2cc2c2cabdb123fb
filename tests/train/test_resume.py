"""Faults as real processes: Ctrl-C and SIGTERM save and exit, kill -9 at a random moment (even
mid-save), and `--resume` (the saved config, no other flags) ends with weights bit-identical to an
unbroken run of the same config. A command that fails on bad input prints one line, nothing else."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from microgpt_train.checkpointing import Checkpoints

from .conftest import run_cli, subprocess_env, tiny_flags

STEPS = 40


def _flags(runs: Path, name: str, tokenizer: Path) -> list[str]:
    return tiny_flags(
        runs, name, tokenizer=str(tokenizer), max_steps=STEPS, checkpoint_every=4, eval_every=0,
        sample_every=0, batch_size=16, grad_accum=2, keep_checkpoints=3,
    )  # fmt: skip


def _logged_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def _start(flags: list[str]) -> subprocess.Popen:
    env = subprocess_env()
    return subprocess.Popen(
        [sys.executable, "-m", "microgpt_train.cli", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"run ended or timed out early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.005)


@pytest.mark.slow
def test_ctrl_c_then_kill_9_then_resume_is_bit_identical(tmp_path, tiny_tokenizer_dir):
    reference = _start(_flags(tmp_path, "unbroken", tiny_tokenizer_dir))  # runs alongside the faults
    run_dir = tmp_path / "broken"
    flags = [*_flags(tmp_path, "broken", tiny_tokenizer_dir), "--tracker", "tensorboard"]

    # 1. Ctrl-C after a few steps: a checkpoint at that step, exit 130, a message saying --resume.
    proc = _start(flags)
    _wait_for(lambda: _logged_step(run_dir) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err
    interrupted = Checkpoints(run_dir / "checkpoints", keep=3).latest_step()
    assert interrupted is not None and 3 <= interrupted < STEPS

    # 2. --resume, exactly as the README writes it (the saved config, no other flags), then SIGTERM:
    # a checkpoint at that step and exit 143.
    resume = ["--resume", "--name", "broken", "--runs-dir", str(tmp_path)]
    proc = _start(resume)
    _wait_for(lambda: _logged_step(run_dir) >= interrupted + 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM at step" in err and "--resume" in err
    terminated = Checkpoints(run_dir / "checkpoints", keep=3).latest_step()
    assert interrupted < terminated < STEPS

    # 3. --resume, killed with SIGKILL at a random moment after it saved at least one more checkpoint.
    proc = _start(resume)
    target = random.Random().randint(terminated + 5, STEPS - 4)
    _wait_for(lambda: _logged_step(run_dir) >= target, proc)
    proc.kill()
    proc.wait(timeout=30)
    killed_at = _logged_step(run_dir)
    assert killed_at < STEPS, "the run finished before it could be killed"

    # 4. --resume again: continues from the last complete checkpoint and finishes.
    result = run_cli(resume, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from step" in result.stdout

    out, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err[-2000:]
    ours = (run_dir / "model" / "model.safetensors").read_bytes()
    theirs = (tmp_path / "unbroken" / "model" / "model.safetensors").read_bytes()
    assert ours == theirs, f"resumed weights differ (interrupted at {interrupted}, killed near {killed_at})"
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # each step logged once, however often the run stopped
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]
    assert leftovers == []

    # 5. TensorBoard's series, read by its own reader, is metrics.jsonl's: each step once, and what the
    # killed run logged after its last checkpoint replaced by the resumed run's values.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tracked = events.Scalars("train/loss")
    assert [e.step for e in tracked] == steps
    assert [e.value for e in tracked] == pytest.approx(losses, rel=1e-6)


@pytest.mark.slow
def test_bad_input_after_start_is_one_line_every_time(tmp_path):
    """Bad input found after the run began (here its data): one `error:` line, exit 2, and no
    traceback from a background thread at exit, in each of three runs."""
    argv = [sys.executable, "-m", "microgpt_train.cli", "--runs-dir", str(tmp_path), "--data", "missing.txt"]
    procs = [
        subprocess.Popen(
            [*argv, "--name", f"r{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=subprocess_env(),
        )  # fmt: skip
        for i in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1, err
