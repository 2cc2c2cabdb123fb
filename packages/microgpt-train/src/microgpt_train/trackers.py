"""Experiment trackers (`--tracker tensorboard,wandb,trackio`): what `metrics.jsonl` holds, live.

The loop hands every record it writes to `metrics.jsonl` to `Trackers.log` as well, and each sample
to `Trackers.sample`, so every tracker gets the same figures at the same steps:

    {"step": s, "loss": ..., "lr": ..., "eval_loss": ...}   ->   at step s: train/loss, train/lr, eval/loss
    sample text at step s                                    ->   at step s: samples (text)
    the run config (`RunConfig.to_dict`)                     ->   hyperparameters, once per start

Every key of a record but "step" is a figure: ``eval_*`` keys go under ``eval/``, the others under
``train/``; a value that is not a finite number (None in `metrics.jsonl`) is left out.

Each tracker works offline, writing where its own tools read:

- ``tensorboard``: event files in ``runs/<name>/tensorboard/`` (scalars, a text summary per sample,
  the config as hparams); ``tensorboard --logdir runs``.
- ``wandb``: an offline W&B run in ``runs/<name>/wandb/`` (never a login, never the network; the
  samples as tables, the config as the run's config); ``wandb sync`` uploads it later.
- ``trackio``: trackio's local store (``$TRACKIO_DIR``, by default ``~/.cache/huggingface/trackio``;
  samples as Markdown, the config as the run's config); ``trackio show``.

A resumed run continues each series after its checkpoint's step: TensorBoard gets a restart event
at that step + 1, so its readers drop what the stopped run logged after the checkpoint (as torch's
``SummaryWriter(purge_step=...)`` does); W&B resumes the same run id (the newest in ``wandb/``), a
new fragment that ``wandb sync`` appends; trackio resumes the newest run of the same name in the
project. Only process 0 tracks. The libraries are extras of microgpt-train, imported only for the
trackers asked for (`require`, before the run starts); a tracker that fails during the run is
dropped with a warning, and the run goes on (`metrics.jsonl` has every figure).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from microgpt_train.config import TRACKERS, RunConfig, RunConfigError

__all__ = [
    "TENSORBOARD_DIR",
    "WANDB_DIR",
    "TrackerError",
    "TrackerUnavailableError",
    "Trackers",
    "figures",
    "open_trackers",
    "require",
]

TENSORBOARD_DIR = "tensorboard"  # in the run folder: TensorBoard's event files
WANDB_DIR = "wandb"  # in the run folder: W&B's offline runs (wandb makes it inside the folder it is given)
SAMPLES_TAG = "samples"


class TrackerUnavailableError(RunConfigError):
    """A tracker was asked for whose library is not installed; the message names the extra."""


class TrackerError(RuntimeError):
    """A tracker's library failed to start its run."""


def require(names: tuple[str, ...]) -> None:
    """Imports each tracker's library; `TrackerUnavailableError` names the extra that installs one
    that is missing."""
    for name in names:
        try:
            importlib.import_module(name)  # each tracker's module has the tracker's name
        except ImportError as err:
            raise TrackerUnavailableError(
                f"--tracker {name} needs the {name} package, which cannot be imported ({err}); install "
                f"it with: pip install 'microgpt-train[{name}]'"
            ) from None


def figures(record: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """A `metrics.jsonl` record as (step, {tag: value}): ``eval_x`` -> ``eval/x``, ``x`` -> ``train/x``;
    values that are not finite numbers are left out."""
    values = {
        ("eval/" + key.removeprefix("eval_") if key.startswith("eval_") else "train/" + key): float(value)
        for key, value in record.items()
        if key != "step" and _finite(value)
    }
    return int(record["step"]), values


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """{"model": {"d_model": 32}} -> {"model.d_model": 32}; None becomes "" (hparams take no None)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = "" if value is None else value
    return out


def _code_block(text: str) -> str:
    """`text` as a Markdown code block (TensorBoard and trackio render text as Markdown), fenced
    with more backticks than any run of them inside it."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}\n{text}\n{fence}"


class _Tracker(Protocol):
    where: str  # where it writes, for the line said at the start

    def log(self, step: int, values: dict[str, float]) -> None: ...
    def text(self, step: int, tag: str, text: str) -> None: ...
    def close(self, exit_code: int) -> None: ...


class _TensorBoard:
    """Event files in ``run_dir/tensorboard`` through TensorBoard's own writer and protos."""

    def __init__(self, run: RunConfig, run_dir: Path, start: int):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import summary_v2 as hparams
        from tensorboard.plugins.text import summary_v2 as text
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._text = event_pb2, summary_pb2, text
        folder = run_dir / TENSORBOARD_DIR
        self.where = f"{folder} (tensorboard --logdir {folder})"
        self._writer = EventFileWriter(str(folder))
        # Readers drop what an earlier writer logged at steps from here on: a resumed run replaces
        # the steps the stopped one logged after its checkpoint.
        restart = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._add(start + 1, session_log=restart)
        self._add(start, summary=hparams.hparams_pb(_flat(run.to_dict()), trial_id=run.name))

    def _add(self, step: int, **fields: Any) -> None:
        self._writer.add_event(self._event.Event(wall_time=time.time(), step=step, **fields))
        self._writer.flush()  # on disk at once, as metrics.jsonl: a killed run loses none of it

    def log(self, step: int, values: dict[str, float]) -> None:
        Value = self._summary.Summary.Value
        summary = self._summary.Summary(value=[Value(tag=k, simple_value=v) for k, v in values.items()])
        self._add(step, summary=summary)

    def text(self, step: int, tag: str, text: str) -> None:
        self._add(step, summary=self._text.text_pb(tag, _code_block(text)))

    def close(self, exit_code: int) -> None:
        self._writer.close()


class _Wandb:
    """An offline W&B run in ``run_dir/wandb``; a resumed run continues the newest run id there."""

    def __init__(self, run: RunConfig, run_dir: Path, start: int):
        import wandb

        self._wandb = wandb
        earlier = sorted((run_dir / WANDB_DIR).glob("offline-run-*-*")) if start else []
        run_id = earlier[-1].name.rsplit("-", 1)[1] if earlier else uuid.uuid4().hex[:12]
        settings = wandb.Settings(mode="offline", silent=True, console="off", save_code=False)
        # W&B's own usage telemetry follows the process's W&B settings, not the run's: offline there too,
        # or it would export to W&B's servers from an offline run.
        wandb.setup(settings=wandb.Settings(mode="offline"))
        self._run = wandb.init(
            project=run.tracker_project, name=run.name, id=run_id, dir=str(run_dir), config=run.to_dict(),
            resume="allow", reinit="create_new", settings=settings,
        )  # fmt: skip
        folder = run_dir / WANDB_DIR
        self.where = f"{folder}, offline run {run_id} (wandb sync {folder}/offline-run-*)"

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        self._run.log({tag: self._wandb.Table(columns=["step", "text"], data=[[step, text]])}, step=step)

    def close(self, exit_code: int) -> None:
        self._run.finish(exit_code=exit_code)


class _Trackio:
    """A run in trackio's local store; a resumed run continues the newest trackio run of its name."""

    def __init__(self, run: RunConfig, run_dir: Path, start: int):
        import trackio

        self._trackio = trackio
        with contextlib.redirect_stdout(io.StringIO()):  # its banner: the line said at the start has it
            self._run = trackio.init(
                project=run.tracker_project, name=run.name, config=run.to_dict(),
                resume="allow" if start else "never", embed=False,
            )  # fmt: skip
        project = run.tracker_project
        self.where = f"project {project}, run {run.name} (trackio show --project {project})"

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        self._run.log({tag: self._trackio.Markdown(_code_block(text))}, step=step)

    def close(self, exit_code: int) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self._trackio.finish()  # ours, made current by init: its writer thread done, the store complete


_OPEN: dict[str, Callable[[RunConfig, Path, int], _Tracker]] = {
    "tensorboard": _TensorBoard,
    "wandb": _Wandb,
    "trackio": _Trackio,
}
assert set(_OPEN) == set(TRACKERS)


class Trackers:
    """The run's open trackers (none off process 0, or when none was asked for).

    `log(record)` sends a `metrics.jsonl` record's figures, `sample(step, text)` a sample; leaving
    the context (or `close`) finishes each run, marked failed when an exception ends the run. A
    tracker that raises is dropped with a warning; the others and the run go on.
    """

    def __init__(self, trackers: dict[str, _Tracker], warn: Callable[[str], None]):
        self._trackers, self._warn = dict(trackers), warn

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind: type | None, *rest: object) -> None:
        self.close(exit_code=0 if kind is None else 1)

    def log(self, record: dict[str, Any]) -> None:
        step, values = figures(record)
        if values:
            self._each(step, lambda tracker: tracker.log(step, values))

    def sample(self, step: int, text: str) -> None:
        self._each(step, lambda tracker: tracker.text(step, SAMPLES_TAG, text))

    def close(self, exit_code: int = 0) -> None:
        trackers, self._trackers = self._trackers, {}
        for name, tracker in trackers.items():
            try:
                tracker.close(exit_code)
            except Exception as err:  # finishing one must not keep the others from finishing
                self._warn(f"warning: the {name} tracker failed to finish: {err}")

    def _each(self, step: int, call: Callable[[_Tracker], None]) -> None:
        for name, tracker in list(self._trackers.items()):
            try:
                call(tracker)
            except Exception as err:
                del self._trackers[name]
                self._warn(
                    f"warning: the {name} tracker failed at step {step} ({type(err).__name__}: {err}); it "
                    "logs nothing more in this run, metrics.jsonl has every figure"
                )


def open_trackers(
    run: RunConfig, run_dir: Path, *, start: int, main: bool, say: Callable[..., None],
    warn: Callable[[str], None],
) -> Trackers:  # fmt: skip
    """Starts the trackers `run.tracker` names (on process 0 only), continuing their series after
    step `start` (0 for a new run), and says where each writes.

    Raises `TrackerError` when one cannot start (those started are finished again).
    """
    if not main or not run.trackers:
        return Trackers({}, warn)
    opened: dict[str, _Tracker] = {}
    for name in run.trackers:
        try:
            opened[name] = _OPEN[name](run, run_dir, start)
        except Exception as err:
            Trackers(opened, warn).close(exit_code=1)
            raise TrackerError(f"could not start the {name} tracker: {type(err).__name__}: {err}") from err
    say("tracking: " + "; ".join(f"{name} in {tracker.where}" for name, tracker in opened.items()))
    return Trackers(opened, warn)
