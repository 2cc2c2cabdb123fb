"""Puts a trained model into microgpt-infer as the model it ships ("default").

    uv run train --preset default
    uv run python packages/microgpt-infer/scripts/ship_default_model.py runs/default/model

The folder must load as any model does (`load_folder`'s checks), hold bfloat16 weights (the preset
exports them so) and fit the wheel's budget. Its config, weights, tokenizer files and training
summary are copied into `microgpt_infer/default_model/` unchanged, and its card is written again
for the name users load it by (`load_model("default")`). Any check that fails exits 2 and copies
nothing; the copy replaces the old folder in one rename.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import safetensors

from microgpt_core import count_params
from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from microgpt_core.jsonfile import read_json_object
from microgpt_data import tokenizer_files
from microgpt_infer import card
from microgpt_infer.folder import load_folder
from microgpt_infer.model import DEFAULT_MODEL, DEFAULT_MODEL_DIR

BUDGET = 14 * 2**20  # the shipped files, so that the wheel stays under 15 MB
FILES = (
    CONFIG_FILE,
    WEIGHTS_FILE,
    tokenizer_files.RANKS_FILE,
    tokenizer_files.CONFIG_FILE,
    card.SUMMARY_FILE,
)
TITLE = "microGPT default model (pydocs)"


def check(folder: Path) -> dict:
    """The folder's training summary, once every check has passed; SystemExit(2) naming the first
    that fails."""
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        sys.exit(f"error: {folder}: missing {missing} (is it a finished run's model folder?)")
    load_folder(folder)  # the checks every model goes through
    with safetensors.safe_open(folder / WEIGHTS_FILE, "np") as f:
        dtypes = {f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118 (not a dict)
    if dtypes != {"BF16"}:
        sys.exit(
            f"error: {folder / WEIGHTS_FILE}: weights are {sorted(dtypes)}; train with weights_dtype bfloat16"
        )
    size = sum((folder / name).stat().st_size for name in FILES)
    if size > BUDGET:
        sys.exit(f"error: {folder}: {size:,} bytes is over the {BUDGET:,} the wheel has room for")
    summary = read_json_object(folder / card.SUMMARY_FILE, error=ValueError, holds="a training summary")
    run = summary.get("run") or {}
    if summary.get("step") != run.get("max_steps"):
        sys.exit(
            f"error: {folder}: step {summary.get('step')} of {run.get('max_steps')}: ship a finished run"
        )
    return summary


def ship(folder: Path, target: Path = DEFAULT_MODEL_DIR) -> Path:
    summary = check(folder)
    model = load_folder(folder)
    staged = target.with_name(f".{target.name}.staging-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    try:
        for name in FILES:
            shutil.copyfile(folder / name, staged / name)
        text = card.model_card(
            model.config, DEFAULT_MODEL, name=TITLE, n_params=count_params(model.params), summary=summary,
            on_hub=True,
        )  # fmt: skip
        (staged / card.CARD_FILE).write_text(text, encoding="utf-8")
        load_folder(staged)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        staged.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the trained model folder (runs/default/model)")
    args = parser.parse_args(argv)
    target = ship(args.folder)
    size = sum(p.stat().st_size for p in target.iterdir())
    print(f"shipped {args.folder} as {DEFAULT_MODEL!r}: {target} ({size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
