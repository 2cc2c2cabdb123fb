"""`train(run)`: the training loop, from a run config to ``runs/<name>/`` with a model in it.

In order: open the data (a bad source fails before any work is announced), resolve the tokenizer,
open the loaders, build the state and compile the step (`trainer.build_trainer`), all without writing
anything; then start the run (`run_folder.RunFolder`: the folder, its lock, the run config and tokenizer),
restore the newest readable checkpoint when resuming, and per step: next global batch -> compiled
step -> checks and logs (`metrics.jsonl`, and the same records to the trackers `--tracker` names). A
run that ends before its first step leaves no trace. Every `eval_every` steps: validation loss and
perplexity; every `sample_every`: a sample; every `checkpoint_every` (and at the end, on Ctrl-C or
SIGTERM): a checkpoint, which holds a model folder too. A non-finite loss
or gradient stops the run without saving, so the last good checkpoint stays the newest. At the end
the model is exported to ``model/``. Whatever the exit, everything opened (the lock and its file,
loaders, orbax's threads, the progress bar) is closed, so a failure prints one line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import jax
import numpy as np

from microgpt_core import load_pretrained
from microgpt_core.checkpoint import CONFIG_FILE
from microgpt_core.files import DiskFullError, is_disk_full, write_atomic
from microgpt_core.jsonfile import read_json_object
from microgpt_data import Tokenizer
from microgpt_infer.card import SUMMARY_FILE
from microgpt_infer.chat import render_chat
from microgpt_infer.engine import generate_tokens
from microgpt_infer.run_layout import CHECKPOINTS_DIR, MODEL_DIR, TRAIN_CONFIG_FILE, checkpoint_steps
from microgpt_train.checkpointing import Checkpoints, abstract_like
from microgpt_train.config import RESUMABLE_CHANGES, RunConfig, RunConfigError, saved_fields
from microgpt_train.export import export_model, typed_path, write_model_folder
from microgpt_train.interrupts import StopFlag, TrainingInterrupted
from microgpt_train.metrics import METRICS_FILE, MetricsLog, bits_per_byte
from microgpt_train.pipeline import TOKENIZER_DIR, cache_tokenizer
from microgpt_train.plots import PLOT_FILE, plot_losses
from microgpt_train.progress import Clock, Progress
from microgpt_train.run_folder import RunFolder, check_not_busy, check_run_folder
from microgpt_train.sharding import global_batch, to_host
from microgpt_train.trackers import TENSORBOARD_DIR, WANDB_DIR, Trackers, open_trackers, require
from microgpt_train.trainer import Trainer, build_trainer

__all__ = ["NonFiniteLossError", "check_devices", "to_host", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or infinite; the newest checkpoint is the last good one."""


def check_devices(run: RunConfig, n_devices: int, n_processes: int) -> None:
    """The batch must split evenly over processes, micro-batches and devices."""
    if run.batch_size % n_processes:
        raise RunConfigError(
            f"batch_size ({run.batch_size}) must be divisible by the {n_processes} processes"
        )
    if run.micro_batch % n_devices:
        raise RunConfigError(
            f"the micro-batch (batch_size {run.batch_size} / grad_accum {run.grad_accum} = "
            f"{run.micro_batch}) must be divisible by the {n_devices} devices; use a batch_size that is a "
            f"multiple of {n_devices * run.grad_accum}"
        )


# What a checkpoint's summary holds of the last evaluation (a resumed run starts from it).
_EVAL_KEYS = ("eval_loss", "eval_perplexity", "eval_bits_per_byte")
_INIT_EVAL = "init_eval_loss"  # a fine-tuning run's validation loss at step 0, in its summary
# What a run writes in its folder (model/ comes only with a trained step).
_RUN_FILES = (TRAIN_CONFIG_FILE, TOKENIZER_DIR, METRICS_FILE, PLOT_FILE, CHECKPOINTS_DIR, TENSORBOARD_DIR,
              WANDB_DIR)  # fmt: skip


def _check_resume(run: RunConfig, path: Path) -> dict[str, Any]:
    """The saved run config; `RunConfigError` when `run` differs from it where a resume may not."""
    saved = saved_fields(read_json_object(path, error=RunConfigError, holds="a run config"))
    now = run.to_dict()
    ignored = RESUMABLE_CHANGES | {"name", "runs_dir"}  # a moved folder is the same run
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in ignored)
    if diff:
        raise RunConfigError(
            f"--resume with a config that differs from {path} in {diff}: resume with the saved config, "
            "or start a new run with another --name"
        )
    return saved


def train(run: RunConfig, *, resume: bool = False, log=print) -> Path:
    """Trains `run` and returns its folder ``runs_dir/name`` (with ``model/`` in it).

    With `resume`, continues the newest readable checkpoint; a finished run is left as it is (pass
    a larger `max_steps` to train it further, on a schedule spanning the new number of steps).

    Raises `RunConfigError` for impossible settings or a folder the run may not use,
    `NonFiniteLossError`, `TrainingInterrupted`, `DiskFullError`.
    """
    main = jax.process_index() == 0
    say = log if main else (lambda *a, **k: None)
    warn = (lambda text: print(text, file=sys.stderr, flush=True)) if main else (lambda text: None)
    run_dir = Path(run.runs_dir) / run.name
    check_devices(run, jax.device_count(), jax.process_count())
    if main:
        require(run.trackers)  # a tracker's missing library is said before anything is done
    check_run_folder(run_dir, resume=resume)  # nothing is written before the run starts
    check_not_busy(run_dir)
    saved = _check_resume(run, run_dir / TRAIN_CONFIG_FILE) if resume else None
    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(StopFlag())  # entered first: the folder's cleanup is never cut off
        folder = stack.enter_context(RunFolder(run_dir, resume=resume, main=main, files=_RUN_FILES))
        latest = checkpoint_steps(run_dir)[-1] if resume else None
        if latest is not None and latest >= run.max_steps:
            stop.defer()
            latest = folder.start()
            folder.trained()  # finished: nothing of it is taken away
            return _finished(run, run_dir, latest, say)
        try:
            return _fit(
                run, run_dir, saved, main=main, say=say, warn=warn, stack=stack, folder=folder, stop=stop
            )
        except OSError as err:
            if is_disk_full(err) and not isinstance(err, DiskFullError):
                raise DiskFullError(
                    f"no space left on the device while writing into {run_dir}: the checkpoints and any "
                    "earlier model there are intact; free some space, then continue with --resume"
                ) from None
            raise


def _finished(run: RunConfig, run_dir: Path, latest: int, say) -> Path:
    """A resumed run that already reached `max_steps`: nothing to train; `model/` written if missing."""
    if latest > run.max_steps:
        raise RunConfigError(
            f"--max-steps {run.max_steps} is below step {latest}, which {run_dir} already reached; "
            f"pass --max-steps above {latest} to train it further"
        )
    model = run_dir / MODEL_DIR
    if (model / CONFIG_FILE).is_file():
        say(
            f"{run_dir} finished at step {latest} (its model is {model}); nothing to do. To train it "
            f"further, pass --max-steps N with N > {latest} (the schedule then spans N steps)"
        )
        return run_dir
    source = run_dir / CHECKPOINTS_DIR / str(latest) / MODEL_DIR  # the final step's model, exported
    if jax.process_index() == 0:
        params, _ = load_pretrained(source)
        summary = read_json_object(source / SUMMARY_FILE, error=RunConfigError)
        export_model(model, params, Tokenizer.load(source), run, summary)
    say(f"{run_dir} finished at step {latest} but had no {MODEL_DIR}/: exported it from that checkpoint")
    return run_dir


def _fit(
    run: RunConfig, run_dir: Path, saved: dict | None, *, main: bool, say, warn,
    stack: contextlib.ExitStack, folder: RunFolder, stop: StopFlag,
) -> Path:  # fmt: skip
    """Builds the trainer, starts the run (restoring its newest checkpoint when resuming), trains it."""
    trainer, state = build_trainer(run, run_dir, main=main, say=say, warn=warn, stack=stack)
    # The run starts: from here a signal stops it after a step, with that step's checkpoint.
    stop.defer()
    latest = folder.start(lambda: _write_start(trainer))
    checkpoints = Checkpoints(run_dir / CHECKPOINTS_DIR, keep=run.keep_checkpoints)
    stack.callback(checkpoints.close)
    start, done = 0, {"train_seconds": 0.0, "eval": {}, "sample": ""}
    if latest is not None:
        start, state, meta = checkpoints.restore(abstract_like(state), warn=warn)
        trainer.loader.load_state_dict(meta["loader"])
        summary = meta.get("summary", {})  # what the run had done by that checkpoint
        done = {
            "train_seconds": summary.get("train_seconds", 0.0),
            "sample": summary.get("sample", ""),
            "eval": {k: summary[k] for k in _EVAL_KEYS if k in summary},
            **({_INIT_EVAL: summary[_INIT_EVAL]} if _INIT_EVAL in summary else {}),
        }
        say(f"resumed from step {start}")
        if saved is not None and saved.get("max_steps") != run.max_steps:
            say(_schedule_change(trainer, saved["max_steps"], start))
    metrics = MetricsLog(run_dir / METRICS_FILE, enabled=main, truncate_after=start)
    trackers = stack.enter_context(open_trackers(run, run_dir, start=start, main=main, say=say, warn=warn))
    return _loop(
        trainer, state, start, done, folder=folder, stop=stop, checkpoints=checkpoints, metrics=metrics,
        trackers=trackers,
    )  # fmt: skip


def _write_start(trainer: Trainer) -> None:
    """What a run writes when it starts (process 0): its config and its own BPE."""
    if trainer.main:
        config = (json.dumps(trainer.run.to_dict(), indent=2) + "\n").encode()
        write_atomic(trainer.run_dir / TRAIN_CONFIG_FILE, config)
        cache_tokenizer(trainer.run, trainer.run_dir, trainer.tokenizer)


def _schedule_change(trainer: Trainer, old_steps: int, start: int) -> str:
    run = trainer.run
    lr = float(trainer.schedule(start))
    return (
        f"max_steps {old_steps} -> {run.max_steps}: from step {start + 1} the learning rate follows the "
        f"schedule of a {run.max_steps}-step run (warmup {run.warmup_steps}, cosine to "
        f"{run.min_lr_ratio:g} x {run.learning_rate:g}), {lr:.3g} at step {start + 1}"
    )


# -------------------------------------------------------------------------------------------- the loop
def _loop(
    trainer: Trainer, state: dict, start: int, done: dict, *, folder: RunFolder, stop: StopFlag,
    checkpoints: Checkpoints, metrics: MetricsLog, trackers: Trackers,
) -> Path:  # fmt: skip
    """Steps `state` from `start` to `max_steps`, then exports the model. `done` is what the run has
    done so far (training seconds, the last evaluation and sample); the loop updates it. Every
    metrics record and sample also goes to `trackers`."""
    run = trainer.run
    step, clock = start, Clock()
    signum = stop.any_process()
    if signum:  # while the run started: it trained nothing
        raise TrainingInterrupted(None, trainer.run_dir, signum, new=not folder.resume)
    try:
        with Progress(run, start, enabled=trainer.main, log=trainer.say) as progress:
            if run.init_from and start == 0:  # where fine-tuning starts: the source on the same batches
                with clock.paused():
                    result = _evaluate(trainer, state["params"])
                done[_INIT_EVAL] = result["eval_loss"]
                metrics.write({"step": 0, **result})
                progress.write(f"{_eval_line(trainer, 0, result)}: {run.init_from} before fine-tuning")
            while step < run.max_steps:
                step += 1
                state, record = _step(trainer, state, step, clock, checkpoints)
                folder.trained()
                with clock.paused():  # evals and samples do not count as training time
                    if (run.eval_every and step % run.eval_every == 0) or step == run.max_steps:
                        done["eval"] = _evaluate(trainer, state["params"])
                        record = {"step": step, **record, **done["eval"]}
                        progress.write(_eval_line(trainer, step, done["eval"]))
                    if (run.sample_every and step % run.sample_every == 0) or step == run.max_steps:
                        done["sample"] = _sample(trainer, state["params"], step)
                        trackers.sample(step, done["sample"])
                        progress.write(f"step {step} sample:\n{textwrap.indent(done['sample'], '    ')}")
                if record:
                    metrics.write(record)
                    trackers.log(record)
                progress.update(step, record)
                saved = step % run.checkpoint_every == 0 or step == run.max_steps
                if saved:
                    _save(trainer, state, step, done, clock.total(), checkpoints)
                signum = stop.any_process()
                if signum and step < run.max_steps:
                    if not saved:
                        _save(trainer, state, step, done, clock.total(), checkpoints)
                    checkpoints.wait()
                    raise TrainingInterrupted(step, trainer.run_dir, signum)
        checkpoints.wait()
    except (TrainingInterrupted, NonFiniteLossError):
        _plot(trainer, metrics)
        raise
    _plot(trainer, metrics)
    summary = _summary(trainer, step, done, clock.total())
    params = to_host(state["params"])
    model = trainer.run_dir / MODEL_DIR
    if trainer.main:
        export_model(model, params, trainer.tokenizer, run, summary)
    _goodbye(trainer, summary, model)
    if stop.signum:
        trainer.say(f"({signal.Signals(stop.signum).name} came after the last step: the run is complete)")
    return trainer.run_dir


def _step(
    trainer: Trainer, state: dict, step: int, clock: Clock, checkpoints: Checkpoints
) -> tuple[dict, dict]:
    """One optimiser step: the new state, and its metrics record when it is a logged step (else {})."""
    run = trainer.run
    state, out = trainer.train_step(state, global_batch(next(trainer.loader), trainer.mesh))
    loss, grad_norm = float(out["loss"]), float(out["grad_norm"])
    clock.steps += 1
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        checkpoints.wait()
        raise NonFiniteLossError(
            f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the last good "
            f"checkpoint is step {checkpoints.latest_step()} in {checkpoints.directory}: "
            "lower --learning-rate or --grad-clip and --resume, or start over"
        )
    if step % run.log_every and step != run.max_steps:
        return state, {}
    tok_s, lr = clock.lap() * run.tokens_per_step, float(trainer.schedule(step - 1))
    return state, {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tok_s,
                   "mfu": tok_s * trainer.flops / trainer.peak}  # fmt: skip


# ------------------------------------------------------------------------- evaluations, samples, saves
def _evaluate(trainer: Trainer, params: Any) -> dict[str, float]:
    total = count = 0.0
    for batch in trainer.val_batches:
        s, n = trainer.eval_step(params, batch)
        total, count = total + float(s), count + float(n)
    loss = total / count
    return {
        "eval_loss": loss,
        "eval_perplexity": math.exp(min(loss, 50.0)),
        "eval_bits_per_byte": bits_per_byte(loss, int(count), trainer.val_bytes),
    }


def _eval_line(trainer: Trainer, step: int, result: dict[str, float]) -> str:
    return (
        f"step {step}: eval loss {result['eval_loss']:.4f}, perplexity {result['eval_perplexity']:.1f}, "
        f"{result['eval_bits_per_byte']:.3f} bits/byte (unigram {trainer.baseline:.3f} nats)"
    )


def _sample(trainer: Trainer, params: Any, step: int) -> str:
    """A sample from the prompt; a chat model's reply to it as a user's message, in its template."""
    run, config, tokenizer = trainer.run, trainer.run.model, trainer.tokenizer
    if trainer.chat:
        eot, asked = tokenizer.eot_token, [{"role": "user", "content": run.sample_prompt}]
        text = render_chat(asked, tokenizer.chat_template, bos_token=eot, eos_token=eot)
        ids = tokenizer.encode(text, allow_special=True)
    else:
        ids = tokenizer.encode(run.sample_prompt) or [tokenizer.eot_id]
    ids = ids[: config.context_length - run.sample_tokens]
    prompt = np.asarray([ids], np.int32)  # (1, P)
    out = generate_tokens(
        params, config, prompt, np.asarray([prompt.shape[1]], np.int32),
        rng=jax.random.PRNGKey(step), max_new_tokens=run.sample_tokens,
        temperature=0.8, top_k=40, eot_id=tokenizer.eot_id,
    )  # fmt: skip
    tokens, n = to_host((out.tokens, out.num_tokens))
    return tokenizer.decode(ids + tokens[0, : int(n[0])].tolist())


def _summary(trainer: Trainer, step: int, done: dict, seconds: float) -> dict[str, Any]:
    return {
        "step": step, "tokens": step * trainer.run.tokens_per_step, "unigram_entropy": trainer.baseline,
        "train_seconds": done["train_seconds"] + seconds, "machine": trainer.machine,
        "sample": done["sample"], **done["eval"],
        **({_INIT_EVAL: done[_INIT_EVAL]} if _INIT_EVAL in done else {}),
    }  # fmt: skip


def _save(
    trainer: Trainer, state: dict, step: int, done: dict, seconds: float, checkpoints: Checkpoints
) -> None:
    """A checkpoint of this step: the state, the loader's position and a model folder."""
    params = to_host(state["params"])
    summary = _summary(trainer, step, done, seconds)
    meta = {"step": step, "loader": trainer.loader.state_dict(), "run": trainer.run.to_dict(),
            "summary": summary}  # fmt: skip
    write = lambda folder: write_model_folder(folder, params, trainer.tokenizer, trainer.run, summary)  # noqa: E731
    checkpoints.save(step, state, meta, write)


def _plot(trainer: Trainer, metrics: MetricsLog) -> None:
    if not (trainer.main and metrics.records):
        return
    try:
        plot_losses(metrics.records, trainer.run_dir / PLOT_FILE, baseline=trainer.baseline)
    except OSError as err:  # a full disk: the plot is the least of it
        trainer.warn(f"warning: could not write {trainer.run_dir / PLOT_FILE}: {err}")


def _goodbye(trainer: Trainer, summary: dict[str, Any], model: Path) -> None:
    loss = summary.get("eval_loss", float("nan"))
    where = typed_path(model)
    prefix = "uv run " if os.environ.get("UV") else ""
    prompt = json.dumps(trainer.run.sample_prompt)
    before = f", {summary[_INIT_EVAL]:.4f} before fine-tuning" if _INIT_EVAL in summary else ""
    trainer.say(
        f"model saved to {where}: eval loss {loss:.4f}{before} (perplexity {math.exp(min(loss, 50)):.1f}, "
        f"{summary.get('eval_bits_per_byte', float('nan')):.3f} bits/byte) vs "
        f"unigram {trainer.baseline:.3f}, {summary['train_seconds']:.0f} s of training\n"
        f"next:\n  {prefix}generate --model {where} {prompt}\n"
        f"  {prefix}evaluate --model {where} --data {trainer.run.data}"
    )
