"""What a run prints while it trains: a tqdm bar on a terminal, plain lines anywhere else.

A bar redraws itself with carriage returns, which fill a log file or a pipe with frames; so the bar
is drawn only when stderr is a terminal, and otherwise a line like

    step 400/800: loss 5.1234, 4,321 tokens/s, MFU 12.3%

is printed about twenty times per run (at logged steps). Evaluations and samples print either way.
Only process 0 prints.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from microgpt_train.config import RunConfig

__all__ = ["Clock", "Progress"]

LINES_PER_RUN = 20


class Progress:
    """`update(step, record)` after each step, `write(text)` for evaluations and samples."""

    def __init__(self, run: RunConfig, start: int, *, enabled: bool, log=print):
        self.run, self.enabled, self.log = run, enabled, log
        self.bar = None
        if enabled and run.progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.max_steps, initial=start, unit="step", dynamic_ncols=True)
        lines = max(1, round(run.max_steps / LINES_PER_RUN / run.log_every))
        self.every = run.log_every * lines if run.progress else 0

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.log(text)

    def update(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if "loss" in record:
                self.bar.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    tok_s=f"{record['tokens_per_s']:,.0f}",
                    mfu=f"{record['mfu']:.1%}",
                )
            self.bar.update(1)
        elif self.every and "loss" in record and (step % self.every == 0 or step == self.run.max_steps):
            self.log(
                f"step {step}/{self.run.max_steps}: loss {record['loss']:.4f}, "
                f"{record['tokens_per_s']:,.0f} tokens/s, MFU {record['mfu']:.1%}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Clock:
    """Training time: wall time less the pauses (evals, samples); `lap()` gives steps per second."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.steps = 0
        self.paused_total = 0.0

    def lap(self) -> float:
        now = time.perf_counter()
        rate = self.steps / max(now - self.last, 1e-9)
        self.last, self.steps = now, 0
        return rate

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - began
            self.last += spent
            self.paused_total += spent

    def total(self) -> float:
        return time.perf_counter() - self.start - self.paused_total
