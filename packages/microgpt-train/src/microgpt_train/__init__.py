"""microgpt_train: `uv run train`, from one CPU to many hosts, resumable bit for bit.

- `train(run_config, resume=False) -> Path`: the loop (`loop.py`); returns ``runs_dir/name``.
- `RunConfig`, `PRESETS`, `preset(name)`: run configs (`config.py`).
- `make_train_step`, `init_state`, `make_optimizer`: the pieces, for custom loops and tests.
- CLIs `train` (`cli.py`) and `evaluate` (`evaluate.py`).
"""

from microgpt_train.config import PRESETS, RunConfig, RunConfigError, preset
from microgpt_train.evaluate import evaluate_model
from microgpt_train.interrupts import TrainingInterrupted
from microgpt_train.loop import NonFiniteLossError, train
from microgpt_train.optim import decay_mask, learning_rate_schedule, make_optimizer
from microgpt_train.step import init_state, make_eval_step, make_train_step

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
    "preset",
    "train",
]
