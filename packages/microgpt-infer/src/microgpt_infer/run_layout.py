"""Where a model lives: a model folder, or a training run folder that holds one.

A model folder holds `config.json` and `model.safetensors` (and its tokenizer files). A run folder
(what `uv run train` writes, ``runs/<name>/``) holds one in two places:

    runs/<name>/model/                        the finished model, written at the end of the run
    runs/<name>/checkpoints/<step>/model/     the model at each checkpoint (training state beside it)

`find_model_folder(path)` accepts either kind of folder, so every command that takes a model takes a
run folder too, also one whose run was interrupted before its end (then the newest checkpoint's
model is used, and the note says which step).
"""

from __future__ import annotations

import os
from pathlib import Path

from microgpt_core.checkpoint import CONFIG_FILE as _CONFIG
from microgpt_core.checkpoint import CheckpointError

__all__ = [
    "CHECKPOINTS_DIR",
    "MODEL_DIR",
    "TRAIN_CONFIG_FILE",
    "ModelFolderError",
    "checkpoint_steps",
    "find_model_folder",
    "is_run_folder",
]

MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
TRAIN_CONFIG_FILE = "train_config.json"


class ModelFolderError(CheckpointError):
    """Neither a model folder nor a run folder holding one; the message says what is there."""


def checkpoint_steps(run_dir: str | os.PathLike[str]) -> list[int]:
    """The steps of the complete checkpoints in a run folder, ascending (a checkpoint being written
    lives in a temporary folder whose name is not a number, and is not listed)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` looks like a training run folder (a model, checkpoints or a run config in it)."""
    path = Path(path)
    return any((path / name).exists() for name in (MODEL_DIR, CHECKPOINTS_DIR, TRAIN_CONFIG_FILE))


def find_model_folder(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """The model folder `path` names, and a note when it is not `path` itself.

    Returns:
      (folder, note): `path` when it holds config.json; a run folder's `model/`; else the `model/` of
      its newest checkpoint, with a note naming the step (the run stopped before its end).
    Raises:
      ModelFolderError: `path` is a run folder with no model yet, or holds neither layout.
    """
    path = Path(path)
    if (path / _CONFIG).is_file():
        return path, None
    if (path / MODEL_DIR / _CONFIG).is_file():
        return path / MODEL_DIR, None
    for step in reversed(checkpoint_steps(path)):
        folder = path / CHECKPOINTS_DIR / str(step) / MODEL_DIR
        if (folder / _CONFIG).is_file():
            return folder, f"{path} has no {MODEL_DIR}/ yet: using its newest checkpoint, step {step}"
    if is_run_folder(path):
        raise ModelFolderError(
            f"{path} is a training run folder without a model yet: no {MODEL_DIR}/ and no checkpoint "
            f"holding one (a run saves one at every checkpoint; resume it with `train --resume`)"
        )
    listing = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    raise ModelFolderError(
        f"{path}: not a model folder (no {_CONFIG}; it holds {', '.join(listing) or 'nothing'}) and not a "
        f"run folder with a {MODEL_DIR}/ or checkpoints"
    )
