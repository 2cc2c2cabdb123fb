"""The run's deliverable: a model folder = `save_pretrained` + tokenizer files + a model card.

    runs/<name>/model/                      at the end of the run (`export_model`)
    runs/<name>/checkpoints/<step>/model/   at every checkpoint (`write_model_folder`, via orbax)

`microgpt_core.load_pretrained(dir)` and `microgpt_data.Tokenizer.load(dir)` read it back, and so do
`microgpt_infer.load_model` and `evaluate`, which also take the run folder itself. The final folder
is written beside ``model/`` and swapped in as a whole (`microgpt_core.files.replace_folder`): a
kill at any moment leaves the old ``model/`` or the new one, never a mix or none.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from microgpt_core import count_params, save_pretrained
from microgpt_core.files import replace_folder, write_atomic
from microgpt_data import Tokenizer
from microgpt_infer.card import CARD_FILE, SUMMARY_FILE, model_card
from microgpt_train.config import RunConfig

__all__ = ["export_model", "typed_path", "write_model_folder"]


def write_model_folder(
    directory: Path,
    params: Any,
    tokenizer: Tokenizer,
    run: RunConfig,
    summary: dict[str, Any],
    *,
    final: Path | None = None,
) -> Path:
    """Writes the weights, config, tokenizer files, model card and training summary into `directory`
    (host numpy params: gather them first if sharded). Each file is written atomically. The card
    names `final` (default `directory`): where the folder will be read from."""
    directory = Path(directory)
    host = _to_numpy(params)
    save_pretrained(directory, host, run.model, dtype=run.weights_dtype)
    tokenizer.save(directory)
    summary = {**summary, "run": run.to_dict()}
    card = model_card(
        run.model, typed_path(final or directory), name=run.name, n_params=count_params(host), summary=summary
    )
    write_atomic(directory / CARD_FILE, card.encode())
    write_atomic(directory / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    return directory


def export_model(
    directory: Path, params: Any, tokenizer: Tokenizer, run: RunConfig, summary: dict[str, Any]
) -> Path:
    """Writes the model folder beside `directory`, then swaps it in for the old one in one step."""
    directory = Path(directory)
    staged = directory.with_name(f".{directory.name}.staging-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        write_model_folder(staged, params, tokenizer, run, summary, final=directory)
        return replace_folder(staged, directory)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def typed_path(directory: Path) -> str:
    """`directory` as a user types it from where they ran `train`: relative when below it."""
    try:
        return str(directory.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(directory.resolve())
