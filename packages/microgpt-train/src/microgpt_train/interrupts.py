"""Stopping a run on purpose: Ctrl-C or SIGTERM finish the current step, save a checkpoint and end
with `TrainingInterrupted`; a second Ctrl-C stops at once. With many processes the stop is agreed on
collectively (any process's signal stops them all at the same step)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["StopFlag", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a checkpoint was saved at `step`; continue with ``--resume``."""

    def __init__(self, step: int, run_dir: Path, signum: int = signal.SIGINT):
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: checkpoint saved in {run_dir}; continue it with "
            f"--resume --name {run_dir.name}"
        )
        self.step, self.run_dir, self.signum = step, run_dir, signum


class StopFlag:
    """Set by SIGINT/SIGTERM (`signum` says which); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def any_process(self) -> int | None:
        """The signal any process received (all processes agree), or None."""
        if jax.process_count() == 1:
            return self.signum
        got = multihost_utils.process_allgather(np.array([self.signum or 0]))
        return int(np.max(got)) or None
