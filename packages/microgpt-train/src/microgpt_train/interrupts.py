"""Stopping a run on purpose: Ctrl-C or SIGTERM once the run has started finish the current step,
save its checkpoint and end with `TrainingInterrupted`. Signals after the first change nothing (a
terminal sends SIGINT to the whole process group and ``uv run`` forwards it again): the save is
never abandoned. With many processes the stop is agreed on collectively (any process's signal stops
them all at the same step).

Before the run starts (data, tokenizer, compilation: nothing written yet), a signal stops the `train`
command at once (`microgpt_data.signals`); once it starts, `StopFlag.defer` hands the signals to the
step loop.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from microgpt_data import signals

__all__ = ["StopFlag", "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a checkpoint was saved at `step`; continue with ``--resume``. With `step`
    None the run stopped before a step of its own and saved nothing: a `new` run left nothing, a
    resumed one is as it was."""

    def __init__(self, step: int | None, run_dir: Path, signum: int = signal.SIGINT, *, new: bool = True):
        name = signal.Signals(signum).name
        if step is not None:
            text = (
                f"{name} at step {step}: checkpoint saved in {run_dir}; continue it with "
                f"--resume --name {run_dir.name}"
            )
        elif new:
            text = f"{name} before the first step: nothing was trained, and nothing of {run_dir} was kept"
        else:
            text = (
                f"{name} before the first step: {run_dir} is as it was; continue it with "
                f"--resume --name {run_dir.name}"
            )
        super().__init__(text)
        self.step, self.run_dir, self.signum = step, run_dir, signum


class StopFlag:
    """The first SIGINT or SIGTERM after `defer()` (`signum`), for the step loop to stop at.

    Under a command's `signals.Interrupts` (the `train` CLI) the command's watcher records it; in a
    program of its own (a notebook, a script calling `train`) `defer` installs handlers that record
    it. Either way no signal raises inside a step or a save, and `__exit__` gives the process its
    previous behaviour back.
    """

    NOTE = "finishing this step and saving its checkpoint (further signals change nothing)"

    def __init__(self) -> None:
        self._own: int | None = None
        self._interrupts: signals.Interrupts | None = None
        self._old: dict[int, Any] = {}
        self._stack = contextlib.ExitStack()
        self._noted = False

    def __enter__(self) -> StopFlag:
        return self

    def defer(self) -> None:
        """From now until `__exit__`, a signal only sets `signum`."""
        interrupts = signals.active()
        if interrupts is not None:
            self._interrupts = self._stack.enter_context(interrupts.deferred(self.NOTE))
        elif threading.current_thread() is threading.main_thread() and not self._old:
            for sig in signals.not_ignored((signal.SIGINT, signal.SIGTERM)):
                self._old[sig] = signal.signal(sig, self._handle)

    @property
    def signum(self) -> int | None:
        return self._interrupts.signum if self._interrupts is not None else self._own

    def _handle(self, signum, frame) -> None:
        if self._own is None:
            self._own = signum
            print(f"\n{signal.Signals(signum).name}: {self.NOTE}", file=sys.stderr, flush=True)
        elif not self._noted:
            self._noted = True
            print(f"{signal.Signals(signum).name} again: already stopping, please wait", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()
        self._stack.close()

    def any_process(self) -> int | None:
        """The signal any process received (all processes agree), or None."""
        if jax.process_count() == 1:
            return self.signum
        got = multihost_utils.process_allgather(np.array([self.signum or 0]))
        return int(np.max(got)) or None
