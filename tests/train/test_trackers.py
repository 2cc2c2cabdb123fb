"""Trackers, read back with each library's own reader (TensorBoard's EventAccumulator, W&B's
`wandb leet inspect` over the offline run's transaction log, trackio's Api and store): every figure of
metrics.jsonl at its step, the samples as text, the config; a resumed run continues the series;
process 0 only; a failing tracker is dropped; bad names and missing libraries exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from microgpt_train import RunConfigError, cli
from microgpt_train.trackers import Trackers, open_trackers

from .conftest import TRACKED, TRACKER_PROJECT, tiny_flags, tiny_run

# Every key of a metrics.jsonl record, and the tag each tracker shows it under.
TAGS = {
    "loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
    "tokens_per_s": "train/tokens_per_s", "mfu": "train/mfu", "eval_loss": "eval/loss",
    "eval_perplexity": "eval/perplexity", "eval_bits_per_byte": "eval/bits_per_byte",
}  # fmt: skip


def _expected(run_dir: Path) -> dict[str, dict[int, float]]:
    """metrics.jsonl as {tag: {step: value}}."""
    series: dict[str, dict[int, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert set(record) - {"step"} <= set(TAGS), "a new figure in metrics.jsonl: add its tag here"
        for key, value in record.items():
            if key != "step":
                series.setdefault(TAGS[key], {})[record["step"]] = value
    return series


# ------------------------------------------------------------------------------ each library's reader
def _tensorboard(run_dir: Path):
    """(scalars {tag: {step: value}}, sample texts {step: text}, hparams {name: value})."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    samples = events.Tensors("samples") if "samples" in events.Tags()["tensors"] else []
    texts = {e.step: tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in samples}
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}
    return scalars, texts, values


def _wandb(folder: Path) -> tuple[dict, dict[int, dict]]:
    """An offline W&B run fragment (a folder wandb/offline-run-*): its run record and {step: row}."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", str(folder), "--json"],
        capture_output=True, text=True, timeout=60, check=True, env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    rows = {r["history"]["step"]["num"]: r["history"]["item"] for r in records if r["type"] == "history"}
    return run, rows


def _fragments(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.fixture(scope="module")
def wandb_run(tiny_run_dir) -> tuple[dict, dict[int, dict]]:
    """What W&B's reader finds in the session's run: one offline fragment."""
    (folder,) = _fragments(tiny_run_dir)
    return _wandb(folder)


def _trackio(name: str) -> list[tuple[dict, list[dict]]]:
    """Each trackio run called `name` in the tests' project: (its config, its logged rows)."""
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    runs = [r for r in trackio.Api().runs(TRACKER_PROJECT) if r.name == name]
    return [(r.config, SQLiteStorage.get_logs(TRACKER_PROJECT, r.name, run_id=r.id)) for r in runs]


# ----------------------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_tensorboard_holds_every_figure_the_samples_and_the_config(tiny_run_dir):
    scalars, texts, hparams = _tensorboard(tiny_run_dir)
    expected = _expected(tiny_run_dir)
    assert set(scalars) == set(expected)
    for tag, series in expected.items():
        assert scalars[tag] == pytest.approx(series, rel=1e-6), tag  # float32 in event files
    summary = json.loads((tiny_run_dir / "model" / "training_summary.json").read_text())
    assert list(texts) == [6] and summary["sample"] in texts[6]
    assert hparams["model.d_model"] == 32 and hparams["grad_accum"] == 2 and hparams["tracker"] == TRACKED


@pytest.mark.slow
def test_wandb_writes_an_offline_run_with_every_figure_the_samples_and_the_config(tiny_run_dir, wandb_run):
    run, rows = wandb_run
    config = json.loads((tiny_run_dir / "train_config.json").read_text())
    assert run["project"] == TRACKER_PROJECT and run["display_name"] == "tiny"
    assert run["telemetry"]["feature"]["offline"] is True
    assert {k: v for k, v in run["config"]["update"].items() if k != "_wandb"} == config
    for tag, series in _expected(tiny_run_dir).items():
        assert {step: row[tag] for step, row in rows.items() if tag in row} == pytest.approx(series), tag
    (sample_step,) = [step for step, row in rows.items() if "samples.path" in row]
    assert sample_step == 6 and rows[6]["samples._type"] == "table-file"
    table = json.loads((_fragments(tiny_run_dir)[0] / "files" / rows[6]["samples.path"]).read_text())
    summary = json.loads((tiny_run_dir / "model" / "training_summary.json").read_text())
    assert table == {"columns": ["step", "text"], "data": [[6, summary["sample"]]]}


@pytest.mark.slow
def test_trackio_store_holds_every_figure_the_samples_and_the_config(tiny_run_dir):
    ((config, rows),) = _trackio("tiny")
    rows = [r for r in rows if r["step"] <= 6]  # the resume test may have continued this run past 6
    assert {k: v for k, v in config.items() if not k.startswith("_")} == json.loads(
        (tiny_run_dir / "train_config.json").read_text()
    )
    for tag, series in _expected(tiny_run_dir).items():
        assert {r["step"]: r[tag] for r in rows if tag in r} == series, tag
    summary = json.loads((tiny_run_dir / "model" / "training_summary.json").read_text())
    (sample,) = [r for r in rows if "samples" in r]
    assert sample["step"] == 6 and sample["samples"]["_type"] == "trackio.markdown"
    assert summary["sample"] in sample["samples"]["_value"]


@pytest.mark.slow
def test_a_resumed_run_continues_each_series(tiny_run_dir, wandb_run, tmp_path):
    """What the loop does on --resume from step 6's checkpoint (a real kill -9 and resume are in
    test_resume.py): each tracker continues its series of the run at step 7."""
    run_dir = Path(shutil.copytree(tiny_run_dir, tmp_path / tiny_run_dir.name))
    run = tiny_run(tmp_path, grad_accum=2, max_steps=8, tracker=TRACKED, tracker_project=TRACKER_PROJECT)
    later = {7: {"step": 7, "loss": 4.5, "lr": 1e-3}, 8: {"step": 8, "loss": 4.25, "eval_loss": 4.75}}
    with open_trackers(run, run_dir, start=6, main=True, say=print, warn=pytest.fail) as trackers:
        for record in later.values():
            trackers.log(record)
        trackers.sample(8, "resumed")
    before = _expected(tiny_run_dir)

    scalars, texts, _ = _tensorboard(run_dir)
    assert scalars["train/loss"] == pytest.approx({**before["train/loss"], 7: 4.5, 8: 4.25})
    assert scalars["eval/loss"] == pytest.approx({**before["eval/loss"], 8: 4.75})
    assert sorted(texts) == [6, 8] and "resumed" in texts[8]

    assert len(_fragments(run_dir)) == 2  # the copied run's fragment and the resumed one
    again, new_rows = _wandb(_fragments(run_dir)[-1])
    assert again["run_id"] == wandb_run[0]["run_id"] and again["resume"] is True
    assert sorted(wandb_run[1]) == list(range(1, 7)) and sorted(new_rows) == [7, 8]
    assert new_rows[7]["train/loss"] == 4.5 and new_rows[8]["eval/loss"] == 4.75
    assert "samples.path" in new_rows[8]

    ((_, rows),) = _trackio("tiny")  # the same trackio run, continued
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 9))
    assert [r["step"] for r in rows if "samples" in r] == [6, 8]


def test_tensorboard_replaces_the_steps_a_stopped_run_logged_after_its_checkpoint(tmp_path):
    run = tiny_run(tmp_path, tracker="tensorboard")
    run_dir = tmp_path / run.name
    lines: list[str] = []
    with open_trackers(run, run_dir, start=0, main=True, say=lines.append, warn=lines.append) as trackers:
        for step in range(1, 6):
            trackers.log({"step": step, "loss": 10.0 + step, "lr": None})  # None: not finite, left out
    with open_trackers(run, run_dir, start=3, main=True, say=lines.append, warn=lines.append) as trackers:
        for step in range(4, 7):  # resumed from step 3's checkpoint: steps 4 and 5 again, then 6
            trackers.log({"step": step, "loss": 20.0 + step, "eval_loss": 1.5})
    scalars, _, _ = _tensorboard(run_dir)
    assert scalars == {
        "train/loss": {1: 11, 2: 12, 3: 13, 4: 24, 5: 25, 6: 26},
        "eval/loss": dict.fromkeys((4, 5, 6), 1.5),
    }
    assert len(lines) == 2 and all(line.startswith("tracking: tensorboard in ") for line in lines)


def test_only_process_0_tracks_and_a_failing_tracker_is_dropped(tmp_path):
    run = tiny_run(tmp_path, tracker=TRACKED)
    said: list[str] = []
    with open_trackers(run, tmp_path / "tiny", start=0, main=False, say=said.append, warn=said.append) as off:
        off.log({"step": 1, "loss": 1.0})
        off.sample(1, "text")
    assert said == [] and not (tmp_path / "tiny").exists()

    class Broken:
        def __init__(self):
            self.calls, self.closed = 0, None

        def log(self, step, values):
            self.calls += 1
            raise OSError("disk full")

        def text(self, step, tag, text):
            self.calls += 1

        def close(self, exit_code):
            self.closed = exit_code

    broken, warnings = Broken(), []
    with pytest.raises(KeyError), Trackers({"wandb": broken}, warnings.append) as trackers:
        trackers.log({"step": 2, "loss": 1.0})
        trackers.sample(2, "text")
        raise KeyError("the run failed")
    assert broken.calls == 1 and broken.closed is None  # dropped at its failure, never called again
    assert len(warnings) == 1 and "wandb tracker failed at step 2 (OSError: disk full)" in warnings[0]
    assert "metrics.jsonl has every figure" in warnings[0]


def test_bad_tracker_names_and_missing_libraries_exit_2_before_anything_is_written(
    tmp_path, monkeypatch, capsys
):
    assert tiny_run(tmp_path, tracker=" tensorboard, wandb ,tensorboard").trackers == ("tensorboard", "wandb")
    assert tiny_run(tmp_path, tracker="none").trackers == tiny_run(tmp_path).trackers == ()
    with pytest.raises(
        RunConfigError, match=r"names \['tensorbord'\]: valid trackers are tensorboard, wandb"
    ):
        tiny_run(tmp_path, tracker="wandb,tensorbord")
    with pytest.raises(RunConfigError, match=r"tracker_project must be letters"):
        tiny_run(tmp_path, tracker_project="a/b")
    assert cli.main([*tiny_flags(tmp_path, "bad"), "--tracker", "mlflow"]) == 2
    assert "valid trackers are tensorboard, wandb, trackio" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if microgpt-train[wandb] were not installed
    assert cli.main([*tiny_flags(tmp_path, "missing"), "--tracker", "tensorboard,wandb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tracker wandb needs the wandb package") and "Traceback" not in err
    assert "pip install 'microgpt-train[wandb]'" in err
    assert list(tmp_path.iterdir()) == []
