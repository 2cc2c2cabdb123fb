"""find_model_folder: a model folder as itself; a run folder's model/, else its newest complete
checkpoint's model (with a note naming the step); anything else an error saying what is there."""

from __future__ import annotations

import pytest

from microgpt_infer.run_layout import ModelFolderError, checkpoint_steps, find_model_folder


def _model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_a_model_folder_is_itself(tmp_path):
    assert find_model_folder(_model(tmp_path / "m")) == (tmp_path / "m", None)


def test_a_run_folder_gives_its_model_then_its_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    for step in (200, 400):
        _model(run / "checkpoints" / str(step) / "model")
    (run / "checkpoints" / "600.orbax-checkpoint-tmp-1234" / "model").mkdir(parents=True)  # being written
    (run / "checkpoints" / "800.unreadable").mkdir()  # set aside after a failed restore
    assert checkpoint_steps(run) == [200, 400]
    folder, note = find_model_folder(run)
    assert folder == run / "checkpoints" / "400" / "model"
    assert note == f"{run} has no model/ yet: using its newest checkpoint, step 400"
    _model(run / "model")
    assert find_model_folder(run) == (run / "model", None)


def test_a_run_folder_without_a_model_says_so(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{}")
    with pytest.raises(ModelFolderError, match="training run folder without a model yet"):
        find_model_folder(run)


@pytest.mark.parametrize("kind", ["empty", "other", "missing"])
def test_anything_else_is_an_error_naming_what_is_there(tmp_path, kind):
    folder = tmp_path / "x"
    if kind != "missing":
        folder.mkdir()
    if kind == "other":
        (folder / "notes.txt").write_text("hi")
    what = {"empty": "nothing", "other": "notes.txt", "missing": "nothing"}[kind]
    with pytest.raises(ModelFolderError, match=f"not a model folder .*it holds {what}"):
        find_model_folder(folder)
