"""What a run prints per step: a tqdm bar on a terminal, and on a file or pipe about twenty plain
lines per run, never carriage-return frames."""

from __future__ import annotations

import io

from microgpt_train.progress import Progress

from .conftest import tiny_run


def _record(step: int) -> dict:
    return {"step": step, "loss": 5.0 - step / 100, "tokens_per_s": 1234.0, "mfu": 0.12}


def test_off_a_terminal_it_prints_plain_lines_every_5_percent(capsys):
    lines = []
    run = tiny_run("runs", max_steps=100, log_every=1, progress=True)
    with Progress(run, 0, enabled=True, log=lines.append) as progress:
        assert progress.bar is None  # stderr is not a terminal under pytest
        for step in range(1, 101):
            progress.update(step, _record(step))
        progress.write("step 100: eval loss 4.0")
    assert len(lines) == 21 and lines[0] == "step 5/100: loss 4.9500, 1,234 tokens/s, MFU 12.0%"
    assert lines[-2].startswith("step 100/100: ") and lines[-1] == "step 100: eval loss 4.0"
    assert "\r" not in capsys.readouterr().err


def test_on_a_terminal_it_draws_a_bar_and_only_process_0_prints(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    run = tiny_run("runs", max_steps=10, log_every=1, progress=True)
    with Progress(run, 0, enabled=True) as progress:
        assert progress.bar is not None
        progress.update(1, _record(1))
    assert "loss=4.990" in screen.getvalue()
    lines = []
    with Progress(run, 0, enabled=False, log=lines.append) as other:  # another process
        other.update(1, _record(1))
        other.write("eval")
    assert other.bar is None and lines == []
    with Progress(tiny_run("runs", progress=False), 0, enabled=True, log=lines.append) as quiet:
        quiet.update(6, _record(6))
        quiet.write("eval")
    assert quiet.bar is None and lines == ["eval"]  # --no-progress: evaluations still print
