"""`train(run)`: the training loop, from a run config to ``runs/<name>/`` with a model in it.

In order: open the data (a bad source fails before any work is announced), resolve the tokenizer,
open the loaders, build the state and compile the step (`_Trainer`), all without writing anything;
then start the run (`run_folder.RunFolder`: the folder, its lock, the run config and tokenizer),
restore the newest readable checkpoint when resuming, and per step: next global batch -> compiled
step -> checks and logs. A run that ends before its first step leaves no trace. Every `eval_every`
steps: validation loss and perplexity; every `sample_every`: a sample; every `checkpoint_every` (and
at the end, on Ctrl-C or SIGTERM): a checkpoint, which holds a model folder too. A non-finite loss
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

from microgpt_core import count_params, generate_tokens, load_pretrained
from microgpt_core.checkpoint import CONFIG_FILE
from microgpt_core.files import DiskFullError, is_disk_full, write_atomic
from microgpt_core.jsonfile import read_json_object
from microgpt_data import Tokenizer, load_text_dataset
from microgpt_infer.card import SUMMARY_FILE
from microgpt_infer.run_layout import CHECKPOINTS_DIR, MODEL_DIR, TRAIN_CONFIG_FILE, checkpoint_steps
from microgpt_train.checkpointing import Checkpoints, abstract_like
from microgpt_train.config import RESUMABLE_CHANGES, RunConfig, RunConfigError
from microgpt_train.export import export_model, typed_path, write_model_folder
from microgpt_train.interrupts import StopFlag, TrainingInterrupted
from microgpt_train.metrics import (
    METRICS_FILE,
    MetricsLog,
    bits_per_byte,
    flops_per_token,
    machine,
    peak_flops_per_device,
    text_bytes,
    unigram_entropy,
)
from microgpt_train.optim import learning_rate_schedule, make_optimizer
from microgpt_train.pipeline import TOKENIZER_DIR, cache_tokenizer, make_loader, resolve_tokenizer
from microgpt_train.plots import PLOT_FILE, plot_losses
from microgpt_train.progress import Clock, Progress
from microgpt_train.run_folder import RunFolder, check_not_busy, check_run_folder
from microgpt_train.sharding import (
    batch_sharding,
    global_batch,
    make_mesh,
    param_shardings,
    state_shardings,
    to_host,
)
from microgpt_train.step import init_state, make_eval_step, make_train_step

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
# What a run writes in its folder (model/ comes only with a trained step).
_RUN_FILES = (TRAIN_CONFIG_FILE, TOKENIZER_DIR, METRICS_FILE, PLOT_FILE, CHECKPOINTS_DIR)


def _check_resume(run: RunConfig, path: Path) -> dict[str, Any]:
    """The saved run config; `RunConfigError` when `run` differs from it where a resume may not."""
    saved = read_json_object(path, error=RunConfigError, holds="a run config")
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
            return _Trainer(run, run_dir, say, warn, stack, folder, stop).fit(saved)
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


class _Trainer:
    """One run's state, compiled steps, loaders and bookkeeping; `fit()` trains it."""

    def __init__(
        self, run: RunConfig, run_dir: Path, say, warn, stack: contextlib.ExitStack, folder: RunFolder,
        stop: StopFlag,
    ):  # fmt: skip
        self.run, self.run_dir, self.say, self.warn, self.stack = run, run_dir, say, warn, stack
        self.folder, self.stop = folder, stop
        self.main = jax.process_index() == 0

    # ------------------------------------------------------------------------------------ setup
    def fit(self, saved: dict | None) -> Path:
        run, say = self.run, self.say
        # A bad data source or tokenizer name fails here, before any work is announced.
        train_data = load_text_dataset(run.data, "train", text_column=run.text_column)
        if run.tokenizer:
            self.tokenizer = resolve_tokenizer(run, self.run_dir, warn=self.warn)
        say(f"run {run.name}: {run.summary()}; every setting in {self.run_dir / TRAIN_CONFIG_FILE}")
        if not run.tokenizer:  # the run's own BPE, trained (and said) or read from its cache
            self.tokenizer = resolve_tokenizer(run, self.run_dir, log=say, warn=self.warn, data=train_data)
        self.loader = self.stack.enter_context(make_loader(run, self.tokenizer, "train", dataset=train_data))
        self._validation()
        self._build()
        # The run starts: from here a signal stops it after a step, with that step's checkpoint.
        self.stop.defer()
        latest = self.folder.start(self._write_start)
        self.checkpoints = Checkpoints(self.run_dir / CHECKPOINTS_DIR, keep=run.keep_checkpoints)
        self.stack.callback(self.checkpoints.close)
        start, done = 0, {"train_seconds": 0.0, "eval": {}, "sample": ""}
        if latest is not None:
            start, self.state, meta = self.checkpoints.restore(abstract_like(self.state), warn=self.warn)
            self.loader.load_state_dict(meta["loader"])
            summary = meta.get("summary", {})  # what the run had done by that checkpoint
            done = {
                "train_seconds": summary.get("train_seconds", 0.0),
                "sample": summary.get("sample", ""),
                "eval": {k: summary[k] for k in _EVAL_KEYS if k in summary},
            }
            say(f"resumed from step {start}")
            if saved is not None and saved.get("max_steps") != run.max_steps:
                say(self._schedule_change(saved["max_steps"], start))
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE, enabled=self.main, truncate_after=start)
        return self._loop(start, done)

    def _write_start(self) -> None:
        """What a run writes when it starts (process 0): its config and its own BPE."""
        if self.main:
            config = (json.dumps(self.run.to_dict(), indent=2) + "\n").encode()
            write_atomic(self.run_dir / TRAIN_CONFIG_FILE, config)
            cache_tokenizer(self.run, self.run_dir, self.tokenizer)

    def _validation(self) -> None:
        run = self.run
        with make_loader(run, self.tokenizer, "validation", shuffle=False) as val_loader:
            self.val_local = [next(val_loader) for _ in range(run.eval_batches)]
        targets = np.stack(self.val_local)[..., 1:]
        self.baseline = unigram_entropy(targets)
        # The bytes of text that every process's validation targets stand for, for bits per byte.
        local = np.asarray([text_bytes(targets, self.tokenizer)], np.int64)
        self.val_bytes = int(to_host(local).sum())

    def _build(self) -> None:
        run, config = self.run, self.run.model
        self.mesh = make_mesh()
        optimizer = make_optimizer(run)
        init = lambda k: init_state(k, config, optimizer)  # noqa: E731
        shape = jax.eval_shape(init, jax.random.PRNGKey(run.seed))
        shardings = state_shardings(
            shape, param_shardings(shape["params"], config, self.mesh, fsdp=run.fsdp), self.mesh
        )
        self.state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(run.seed))
        rows = batch_sharding(self.mesh)
        step = make_train_step(
            config, optimizer, grad_accum=run.grad_accum, state_sharding=shardings, batch_sharding=rows
        )
        batch = jax.ShapeDtypeStruct((run.batch_size, config.context_length + 1), np.int32, sharding=rows)
        self.train_step = step.lower(self.state, batch).compile()  # before the run starts: see fit()
        self.eval_step = make_eval_step(config)
        self.val_batches = [global_batch(b, self.mesh) for b in self.val_local]
        self.schedule = learning_rate_schedule(run)
        self.flops = flops_per_token(config)
        self.peak = peak_flops_per_device(config, run.peak_flops) * jax.device_count()
        self.machine = machine()
        self.say(
            f"{count_params(self.state['params']):,} parameters on {jax.device_count()} device(s) in "
            f"{jax.process_count()} process(es); unigram baseline of the validation tokens: "
            f"{self.baseline:.3f} nats"
        )

    def _schedule_change(self, old_steps: int, start: int) -> str:
        run = self.run
        lr = float(self.schedule(start))
        return (
            f"max_steps {old_steps} -> {run.max_steps}: from step {start + 1} the learning rate follows the "
            f"schedule of a {run.max_steps}-step run (warmup {run.warmup_steps}, cosine to "
            f"{run.min_lr_ratio:g} x {run.learning_rate:g}), {lr:.3g} at step {start + 1}"
        )

    # ------------------------------------------------------------------------------------ pieces
    def _evaluate(self) -> dict[str, float]:
        total = count = 0.0
        for batch in self.val_batches:
            s, n = self.eval_step(self.state["params"], batch)
            total, count = total + float(s), count + float(n)
        loss = total / count
        return {
            "eval_loss": loss,
            "eval_perplexity": math.exp(min(loss, 50.0)),
            "eval_bits_per_byte": bits_per_byte(loss, int(count), self.val_bytes),
        }

    def _eval_line(self, step: int, result: dict[str, float]) -> str:
        return (
            f"step {step}: eval loss {result['eval_loss']:.4f}, perplexity {result['eval_perplexity']:.1f}, "
            f"{result['eval_bits_per_byte']:.3f} bits/byte (unigram {self.baseline:.3f} nats)"
        )

    def _sample(self, step: int) -> str:
        run, config, tokenizer = self.run, self.run.model, self.tokenizer
        ids = (tokenizer.encode(run.sample_prompt) or [tokenizer.eot_id])[
            : config.context_length - run.sample_tokens
        ]
        prompt = np.asarray([ids], np.int32)
        out = generate_tokens(
            self.state["params"], config, prompt, np.asarray([prompt.shape[1]], np.int32),
            rng=jax.random.PRNGKey(step), max_new_tokens=run.sample_tokens,
            temperature=0.8, top_k=40, eot_id=tokenizer.eot_id,
        )  # fmt: skip
        tokens, n = to_host((out.tokens, out.num_tokens))
        return tokenizer.decode(ids + tokens[0, : int(n[0])].tolist())

    def _summary(self, step: int, done: dict, seconds: float) -> dict[str, Any]:
        return {
            "step": step, "tokens": step * self.run.tokens_per_step, "unigram_entropy": self.baseline,
            "train_seconds": done["train_seconds"] + seconds, "machine": self.machine,
            "sample": done["sample"], **done["eval"],
        }  # fmt: skip

    def _save(self, step: int, done: dict, seconds: float) -> None:
        """A checkpoint of this step: the state, the loader's position and a model folder."""
        params = to_host(self.state["params"])
        summary = self._summary(step, done, seconds)
        meta = {
            "step": step,
            "loader": self.loader.state_dict(),
            "run": self.run.to_dict(),
            "summary": summary,
        }
        write = lambda folder: write_model_folder(folder, params, self.tokenizer, self.run, summary)  # noqa: E731
        self.checkpoints.save(step, self.state, meta, write)

    # ------------------------------------------------------------------------------------ the loop
    def _loop(self, start: int, done: dict) -> Path:
        run, stop = self.run, self.stop
        step, clock = start, Clock()
        signum = stop.any_process()
        if signum:  # while the run started: it trained nothing
            raise TrainingInterrupted(None, self.run_dir, signum, new=not self.folder.resume)
        try:
            with Progress(run, start, enabled=self.main, log=self.say) as progress:
                while step < run.max_steps:
                    step += 1
                    record = self._step(step, clock)
                    self.folder.trained()
                    with clock.paused():  # evals and samples do not count as training time
                        if (run.eval_every and step % run.eval_every == 0) or step == run.max_steps:
                            done["eval"] = self._evaluate()
                            record = {"step": step, **record, **done["eval"]}
                            progress.write(self._eval_line(step, done["eval"]))
                        if (run.sample_every and step % run.sample_every == 0) or step == run.max_steps:
                            done["sample"] = self._sample(step)
                            progress.write(f"step {step} sample:\n{textwrap.indent(done['sample'], '    ')}")
                    if record:
                        self.metrics.write(record)
                    progress.update(step, record)
                    saved = step % run.checkpoint_every == 0 or step == run.max_steps
                    if saved:
                        self._save(step, done, clock.total())
                    signum = stop.any_process()
                    if signum and step < run.max_steps:
                        if not saved:
                            self._save(step, done, clock.total())
                        self.checkpoints.wait()
                        raise TrainingInterrupted(step, self.run_dir, signum)
            self.checkpoints.wait()
        except (TrainingInterrupted, NonFiniteLossError):
            self._plot()
            raise
        self._plot()
        summary = self._summary(step, done, clock.total())
        params = to_host(self.state["params"])
        model = self.run_dir / MODEL_DIR
        if self.main:
            export_model(model, params, self.tokenizer, run, summary)
        self._goodbye(summary, model)
        if stop.signum:
            self.say(f"({signal.Signals(stop.signum).name} came after the last step: the run is complete)")
        return self.run_dir

    def _step(self, step: int, clock: Clock) -> dict[str, Any]:
        """One optimiser step; its metrics record when it is a logged step (else {})."""
        run = self.run
        self.state, out = self.train_step(self.state, global_batch(next(self.loader), self.mesh))
        loss, grad_norm = float(out["loss"]), float(out["grad_norm"])
        clock.steps += 1
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.checkpoints.wait()
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the last good "
                f"checkpoint is step {self.checkpoints.latest_step()} in {self.checkpoints.directory}: "
                "lower --learning-rate or --grad-clip and --resume, or start over"
            )
        if step % run.log_every and step != run.max_steps:
            return {}
        tok_s = clock.lap() * run.tokens_per_step
        return {"step": step, "loss": loss, "lr": float(self.schedule(step - 1)), "grad_norm": grad_norm,
                "tokens_per_s": tok_s, "mfu": tok_s * self.flops / self.peak}  # fmt: skip

    def _plot(self) -> None:
        if not (self.main and self.metrics.records):
            return
        try:
            plot_losses(self.metrics.records, self.run_dir / PLOT_FILE, baseline=self.baseline)
        except OSError as err:  # a full disk: the plot is the least of it
            self.warn(f"warning: could not write {self.run_dir / PLOT_FILE}: {err}")

    def _goodbye(self, summary: dict[str, Any], model: Path) -> None:
        loss = summary.get("eval_loss", float("nan"))
        where = typed_path(model)
        prefix = "uv run " if os.environ.get("UV") else ""
        prompt = json.dumps(self.run.sample_prompt)
        self.say(
            f"model saved to {where}: eval loss {loss:.4f} (perplexity {math.exp(min(loss, 50)):.1f}, "
            f"{summary.get('eval_bits_per_byte', float('nan')):.3f} bits/byte) vs "
            f"unigram {self.baseline:.3f}, {summary['train_seconds']:.0f} s of training\n"
            f"next:\n  {prefix}generate --model {where} {prompt}\n"
            f"  {prefix}evaluate --model {where} --data {self.run.data}"
        )
