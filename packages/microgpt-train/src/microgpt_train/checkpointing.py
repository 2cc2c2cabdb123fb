"""Training checkpoints through orbax: the train state (params, optimiser state, step, rng) plus the
data loader's position, saved together under ``runs/<name>/checkpoints/<step>/``.

orbax writes each step into a temporary folder and renames it when complete, so a process killed
mid-save leaves the previous step intact; leftover temporary folders are ignored and cleaned up by
the next run. Every process writes its own shards of sharded arrays (multi-host safe).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpoints"]

# orbax logs every save at INFO through absl; keep the progress bar readable.
logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpoints:
    """The run's checkpoint folder: `save(step, state, data_state)`, `restore(abstract_state)`."""

    def __init__(self, directory: Path, *, keep: int):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, meta: dict[str, Any], *, wait: bool = False) -> None:
        """Starts saving `state` (arrays) and `meta` (JSON: the loader state...) as `step`."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        if wait:
            self.wait()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, dict, dict[str, Any]]:
        """(step, state, meta) of `step` (default: the latest complete one).

        Args:
          abstract_state: the state's tree of `jax.ShapeDtypeStruct`s with their shardings.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return step, restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any) -> Any:
    """`ShapeDtypeStruct`s (with shardings) mirroring a live state: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
