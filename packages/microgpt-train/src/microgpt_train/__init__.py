"""microgpt_train: `uv run train`, from one CPU to many hosts, resumable bit for bit.

- `train(run_config, resume=False) -> Path`: the loop (`loop.py`); returns ``runs_dir/name``.
- `RunConfig`, `PRESETS`, `preset(name)`: run configs (`config.py`); `resolve_init_from(run)`: a
  fine-tuning run's config, the architecture of its `init_from` model (`init_from.py`).
- `make_train_step`, `init_state`, `make_optimizer` (AdamW, or Muon + AdamW: `muon.py`): the pieces,
  for custom loops and tests.
- CLIs `train` (`cli.py`) and `evaluate` (`evaluate.py`).

Names load on first use (PEP 562): importing the package (as the `train` and `evaluate` scripts do
before their `main` runs) imports neither JAX nor orbax, so a command installs its Ctrl-C handling
(`microgpt_data.signals`) before anything slow is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microgpt_core.lazy import lazy_names

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "NonFiniteLossError",
    "RunConfig",
    "RunConfigError",
    "TrainingInterrupted",
    "decay_mask",
    "evaluate_model",
    "init_state",
    "learning_rate_schedule",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "muon_labels",
    "preset",
    "resolve_init_from",
    "train",
]

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "PRESETS": "microgpt_train.config",
        "RunConfig": "microgpt_train.config",
        "RunConfigError": "microgpt_train.config",
        "preset": "microgpt_train.config",
        "evaluate_model": "microgpt_train.evaluate",
        "resolve_init_from": "microgpt_train.init_from",
        "TrainingInterrupted": "microgpt_train.interrupts",
        "NonFiniteLossError": "microgpt_train.loop",
        "train": "microgpt_train.loop",
        "decay_mask": "microgpt_train.optim",
        "learning_rate_schedule": "microgpt_train.optim",
        "make_optimizer": "microgpt_train.optim",
        "muon_labels": "microgpt_train.muon",
        "init_state": "microgpt_train.step",
        "make_eval_step": "microgpt_train.step",
        "make_train_step": "microgpt_train.step",
    },
)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load lazily
    from microgpt_train.config import PRESETS, RunConfig, RunConfigError, preset
    from microgpt_train.evaluate import evaluate_model
    from microgpt_train.init_from import resolve_init_from
    from microgpt_train.interrupts import TrainingInterrupted
    from microgpt_train.loop import NonFiniteLossError, train
    from microgpt_train.muon import muon_labels
    from microgpt_train.optim import decay_mask, learning_rate_schedule, make_optimizer
    from microgpt_train.step import init_state, make_eval_step, make_train_step
