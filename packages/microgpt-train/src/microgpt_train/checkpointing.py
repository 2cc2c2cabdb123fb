"""Training checkpoints through orbax, one folder per step under ``runs/<name>/checkpoints/<step>/``:

    state/    params, optimiser state, step, rng (orbax; every process writes its own shards)
    meta/     the data loader's position and the run's summary so far (JSON)
    model/    a complete model folder of these weights (config.json, model.safetensors, tokenizer
              files, card): what `evaluate` and `generate` read from a run that has not finished

orbax writes each step into a temporary folder and renames it when complete, so a process killed
mid-save leaves the previous step intact; leftover temporary folders are cleaned up by the next run.
Saves are synchronous: the step waits for its checkpoint (a cost that grows with the model; see
bench/README.md), so a failure is reported at the step that failed, with nothing left writing in
the background.
`restore` falls back to the newest older step, with a warning naming the bad one, when a checkpoint
cannot be read. A save that fails because the disk is full raises `DiskFullError`, one line that
says so; orbax's own error logging is kept out of the terminal.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from microgpt_core.files import DiskFullError, is_disk_full
from microgpt_infer.run_layout import MODEL_DIR

__all__ = ["CheckpointReadError", "Checkpoints", "DiskFullError", "ModelFolderSave", "abstract_like"]

# orbax and tensorstore log through absl: every save at INFO, and every failed write (a full disk
# fails each chunk) with a traceback. The errors reach the user as one exception instead.
for _name in ("absl", "orbax"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


class CheckpointReadError(RuntimeError):
    """No checkpoint of the run folder could be read."""


class _ModelFolderHandler(ocp.CheckpointHandler):
    """An orbax item that is a plain model folder, written by process 0 from host arrays."""

    def save(self, directory, args: ModelFolderSave) -> None:
        if jax.process_index() == 0:
            args.write(Path(directory))

    def restore(self, directory, args: ModelFolderSave | None = None) -> Path:
        return Path(directory)


@ocp.args.register_with_handler(_ModelFolderHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class ModelFolderSave(ocp.args.CheckpointArgs):
    """`write(folder)` fills the checkpoint's model folder (see `microgpt_train.export`)."""

    write: Callable[[Path], Any]


class Checkpoints:
    """The run's checkpoint folder: `save(step, state, meta, write_model)`, `restore(abstract_state)`."""

    def __init__(self, directory: Path, *, keep: int):
        self.directory = Path(directory).absolute()
        _quiet_abandoned_writes()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta", MODEL_DIR)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, meta: dict[str, Any], write_model: Callable[[Path], Any]) -> None:
        """Saves `state` (arrays), `meta` (JSON) and the model folder as `step`, before returning.

        Saves are synchronous (`enable_async_checkpointing=False`): a failed save is reported here, at
        its own step, rather than at the next one, and leaves no background write behind.

        Raises:
          DiskFullError: the disk filled up (this step is not kept; the previous ones are intact).
        """
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        items[MODEL_DIR] = ModelFolderSave(write_model)
        with self._disk_errors(step):
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Blocks until any save in flight is complete (`DiskFullError` if the disk filled up)."""
        with self._disk_errors(None):
            self.manager.wait_until_finished()

    def _disk_errors(self, step: int | None):
        return _DiskErrors(self, step)

    def restore(self, abstract_state: Any, *, warn: Callable[[str], Any] = print) -> tuple[int, dict, dict]:
        """(step, state, meta) of the newest checkpoint that reads back; older ones are tried in turn.

        Args:
          abstract_state: the state's tree of `jax.ShapeDtypeStruct`s with their shardings.
          warn: called with a message for each checkpoint that could not be read.
        Raises:
          CheckpointReadError: none could be read.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        failures, unreadable = [], []
        for step in steps:
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
                meta = restored["meta"]
                if not isinstance(meta, dict) or meta.get("step") != step or "loader" not in meta:
                    raise ValueError("its meta item is not this step's loader position")
            except Exception as err:  # any damage: missing or cut files, bad JSON, wrong shapes
                reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
                failures.append(f"step {step}: {reason}")
                unreadable.append(step)
                older = [s for s in steps if s < step]
                fallback = f"falling back to step {older[0]}" if older else "no older checkpoint"
                where = f"checkpoint step {step} in {self.directory}"
                warn(f"warning: {where} is unreadable ({reason}); {fallback}")
                continue
            if unreadable:
                self._set_aside(unreadable)
            return step, restored["state"], meta
        raise CheckpointReadError(
            f"no checkpoint in {self.directory} can be read ({'; '.join(failures) or 'there is none'}); "
            "start the run again without --resume, under another --name"
        )

    def _set_aside(self, steps: list[int]) -> None:
        """Renames unreadable step folders to ``<step>.unreadable``, out of orbax's way (process 0,
        once every process has restored)."""
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("microgpt-checkpoint-fallback")
        if jax.process_index() == 0:
            for step in steps:
                folder = self.directory / str(step)
                target = self.directory / f"{step}.unreadable"
                shutil.rmtree(target, ignore_errors=True)
                if folder.exists():
                    folder.rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("microgpt-checkpoint-fallback-done")
        self.manager.reload()

    def close(self) -> None:
        """Waits for a save in flight, then stops orbax's background threads (safe to call twice)."""
        try:
            self.wait()
        finally:
            self.manager.close()


class _DiskErrors:
    """Turns a failed write into `DiskFullError` when the disk is full, removing the partial step
    folder; other errors pass."""

    def __init__(self, checkpoints: Checkpoints, step: int | None):
        self.checkpoints, self.step = checkpoints, step

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is not None and is_disk_full(err):
            if self.step is not None and jax.process_index() == 0:  # give the space back
                for partial in self.checkpoints.directory.glob(f"{self.step}.orbax-checkpoint-tmp*"):
                    shutil.rmtree(partial, ignore_errors=True)
            kept = sorted(self.checkpoints.manager.all_steps())
            what = f"checkpoint step {self.step}" if self.step is not None else "a checkpoint"
            intact = (
                f"the earlier checkpoints (steps {', '.join(map(str, kept))}) are intact"
                if kept
                else ("there is no earlier checkpoint")
            )
            raise DiskFullError(
                f"no space left on the device while saving {what} in {self.checkpoints.directory}: it was "
                f"not kept, {intact}; free some space, then continue with --resume"
            ) from None
        return False


def _quiet_abandoned_writes() -> None:
    """When a save fails, the writes orbax abandoned still complete in tensorstore's threads and call
    back into orbax's closed event loop; Python reports each as an unraisable ``RuntimeError: Event
    loop is closed`` traceback (dozens when the disk is full), asyncio logs the abandoned write
    tasks' errors, and the handlers' coroutines that never ran warn at exit. Those, and only those,
    are dropped: the save's own error is raised to the caller.
    Installed once, with the first `Checkpoints`."""
    previous = sys.unraisablehook
    if getattr(previous, "_microgpt_quiet", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook._microgpt_quiet = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_abandoned_orbax_task)
    warnings.filterwarnings(
        "ignore", message=r"coroutine '\w+CheckpointHandler\.\w+' was never awaited", category=RuntimeWarning
    )


def _abandoned_orbax_task(record: logging.LogRecord) -> bool:
    """False (drop) for asyncio's "Task exception was never retrieved" about an orbax write task."""
    message = record.getMessage()
    return not ("exception was never retrieved" in message and "orbax" in message)


def abstract_like(state: Any) -> Any:
    """`ShapeDtypeStruct`s (with shardings) mirroring a live state: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
