"""build_trainer: everything a run trains with, built before the run starts and writing nothing."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest

from microgpt_train.trainer import build_trainer

from .conftest import tiny_run


@pytest.mark.slow
def test_the_trainer_is_built_without_writing_and_is_frozen(tmp_path, tiny_tokenizer_dir):
    run = tiny_run(tmp_path / "runs", tokenizer=str(tiny_tokenizer_dir))
    lines: list[str] = []
    with contextlib.ExitStack() as stack:
        trainer, state = build_trainer(
            run, tmp_path / "runs" / "tiny", main=True, say=lines.append, warn=lines.append, stack=stack
        )
        assert not (tmp_path / "runs").exists()  # nothing written: the run starts later
        assert lines[0].startswith("run tiny: ") and "parameters on" in lines[-1]
        with pytest.raises(dataclasses.FrozenInstanceError):
            trainer.run = run  # type: ignore[misc]
        assert len(trainer.val_batches) == run.eval_batches
        assert trainer.val_batches[0].shape == (run.batch_size, run.model.context_length + 1)
        assert trainer.val_bytes > 0 and trainer.baseline > 0 and trainer.peak > 0
        new_state, out = trainer.train_step(state, trainer.val_batches[0])
        assert int(new_state["step"]) == 1 and np.isfinite(float(out["loss"]))
        total, count = trainer.eval_step(new_state["params"], trainer.val_batches[0])
        assert int(count) == run.batch_size * run.model.context_length and np.isfinite(float(total))
