"""Faults as real processes: Ctrl-C saves and exits, kill -9 at a random moment (even mid-save), and
`--resume` ends with weights bit-identical to an unbroken run of the same config."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from microgpt_train.checkpointing import Checkpoints

from .conftest import run_cli, tiny_flags

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
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
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
    flags = _flags(tmp_path, "broken", tiny_tokenizer_dir)

    # 1. Ctrl-C after a few steps: a checkpoint at that step, exit 130, a message saying --resume.
    proc = _start(flags)
    _wait_for(lambda: _logged_step(run_dir) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err
    interrupted = Checkpoints(run_dir / "checkpoints", keep=3).latest_step()
    assert interrupted is not None and 3 <= interrupted < STEPS

    # 2. --resume, killed with SIGKILL at a random moment after it saved at least one more checkpoint.
    proc = _start([*flags, "--resume"])
    target = random.Random().randint(interrupted + 5, STEPS - 6)
    _wait_for(lambda: _logged_step(run_dir) >= target, proc)
    proc.kill()
    proc.wait(timeout=30)
    killed_at = _logged_step(run_dir)
    assert killed_at < STEPS, "the run finished before it could be killed"

    # 3. --resume again: continues from the last complete checkpoint and finishes.
    result = run_cli([*flags, "--resume"], timeout=120)
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
