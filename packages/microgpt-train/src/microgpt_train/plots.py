"""`loss.png`: training and validation loss against step (any format matplotlib writes, by suffix)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["PLOT_FILE", "plot_losses"]

PLOT_FILE = "loss.png"  # in the run folder


def plot_losses(records: list[dict[str, Any]], path: Path, *, baseline: float | None = None) -> None:
    """Draws train loss (per logged step) and eval loss (per evaluation) into `path`, atomically, in
    the format its suffix names (``.png``, ``.svg``, ``.pdf``...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), color="C0", label="train loss", linewidth=1.2)
    if evals:
        # Fixed colours: validation keeps its colour in a plot that has no train loss yet.
        ax.plot(*zip(*evals, strict=True), "o-", color="C1", label="validation loss", linewidth=1.5)
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="unigram baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(path.parent.name)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing drawn yet: no legend (and no warning about one)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png")
        os.replace(tmp, path)
    finally:  # a failed write (a full disk, an unknown suffix) leaves no figure open and no temp file
        plt.close(fig)
        tmp.unlink(missing_ok=True)
