"""`train(run)`: the training loop, from a run config to ``runs/<name>/`` with a model in it.

Per step: next batch (this process's rows) -> global array -> compiled step -> checks and logs.
Every `eval_every` steps: validation loss and perplexity; every `sample_every`: a sample; every
`checkpoint_every` (and at the end, on Ctrl-C or SIGTERM): an orbax checkpoint. A non-finite loss or
gradient stops the run without saving, so the last good checkpoint stays the newest.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from microgpt_core import count_params, generate_tokens
from microgpt_train.checkpointing import Checkpoints, abstract_like
from microgpt_train.config import RunConfig, RunConfigError
from microgpt_train.export import export_model
from microgpt_train.metrics import MetricsLog, flops_per_token, peak_flops_per_device, unigram_entropy
from microgpt_train.optim import learning_rate_schedule, make_optimizer
from microgpt_train.pipeline import make_loader, resolve_tokenizer
from microgpt_train.plots import plot_losses
from microgpt_train.sharding import batch_sharding, global_batch, make_mesh, param_shardings, state_shardings
from microgpt_train.step import init_state, make_eval_step, make_train_step

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "check_devices", "to_host", "train"]

# Fields that may change between a run and its --resume (they do not change the weights).
RESUMABLE_CHANGES = {
    "eval_every", "eval_batches", "sample_every", "sample_tokens", "sample_prompt",
    "checkpoint_every", "keep_checkpoints", "log_every", "peak_flops", "progress",
}  # fmt: skip


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or infinite; the newest checkpoint is the last good one."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: a checkpoint was saved at `step`; continue with ``--resume``."""

    def __init__(self, step: int, run_dir: Path):
        super().__init__(f"interrupted at step {step}: checkpoint saved in {run_dir}; continue with --resume")
        self.step, self.run_dir = step, run_dir


def check_devices(run: RunConfig, n_devices: int, n_processes: int) -> None:
    """The batch must split evenly over processes, micro-batches and devices."""
    if run.batch_size % n_processes:
        raise RunConfigError(
            f"batch_size ({run.batch_size}) must be divisible by the {n_processes} processes"
        )
    if run.micro_batch % n_devices:
        raise RunConfigError(
            f"the micro-batch (batch_size {run.batch_size} / grad_accum {run.grad_accum} = "
            f"{run.micro_batch}) "
            f"must be divisible by the {n_devices} devices; use a batch_size that is a multiple of "
            f"{n_devices * run.grad_accum}"
        )


def to_host(tree: Any) -> Any:
    """Host numpy copies of a pytree of (possibly multi-process) arrays; all processes must call it."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def _check_resume(run: RunConfig, path: Path) -> None:
    saved = json.loads(path.read_text())
    now = run.to_dict()
    diff = sorted(
        k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES
    )
    if diff:
        raise RunConfigError(
            f"--resume with a config that differs from {path} in {diff}: resume with the saved config, "
            "or start a new run with another --name"
        )


class _StopFlag:
    """Set by SIGINT/SIGTERM; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def any_process(self) -> bool:
        if jax.process_count() == 1:
            return self.set
        return bool(np.any(multihost_utils.process_allgather(np.array([self.set]))))


def train(run: RunConfig, *, resume: bool = False, log=print) -> Path:
    """Trains `run` and returns its folder ``runs_dir/name`` (with ``model/`` in it).

    Raises `RunConfigError` for impossible settings, `NonFiniteLossError`, `TrainingInterrupted`.
    """
    main = jax.process_index() == 0
    say = log if main else (lambda *a, **k: None)
    run_dir = Path(run.runs_dir) / run.name
    check_devices(run, jax.device_count(), jax.process_count())
    config_path = run_dir / "train_config.json"
    checkpoints = Checkpoints(run_dir / "checkpoints", keep=run.keep_checkpoints)
    latest = checkpoints.latest_step()
    if latest is not None and not resume:
        raise RunConfigError(
            f"{run_dir} already holds checkpoints (step {latest}): pass --resume to continue it, "
            "or choose another --name"
        )
    if resume and latest is not None and config_path.exists():
        _check_resume(run, config_path)
    if main:
        tmp = config_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(run.to_dict(), indent=2) + "\n")
        os.replace(tmp, config_path)
    say("config: " + json.dumps(run.to_dict()))

    tokenizer = resolve_tokenizer(run, run_dir, log=say)
    mesh = make_mesh()
    optimizer = make_optimizer(run)
    config = run.model
    state_shape = jax.eval_shape(lambda k: init_state(k, config, optimizer), jax.random.PRNGKey(run.seed))
    p_shard = param_shardings(state_shape["params"], config, mesh, fsdp=run.fsdp)
    s_shard = state_shardings(state_shape, p_shard, mesh)
    state = jax.jit(lambda k: init_state(k, config, optimizer), out_shardings=s_shard)(
        jax.random.PRNGKey(run.seed)
    )
    train_step = make_train_step(
        config,
        optimizer,
        grad_accum=run.grad_accum,
        state_sharding=s_shard,
        batch_sharding=batch_sharding(mesh),
    )
    eval_step = make_eval_step(config)
    loader = make_loader(run, tokenizer, "train")

    start = 0
    if resume and latest is not None:
        start, state, meta = checkpoints.restore(abstract_like(state))
        loader.load_state_dict(meta["loader"])
        say(f"resumed from step {start}")
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=main, truncate_after=start)

    with make_loader(run, tokenizer, "validation", shuffle=False) as val_loader:
        val_local = [next(val_loader) for _ in range(run.eval_batches)]
    val_batches = [global_batch(b, mesh) for b in val_local]
    baseline = unigram_entropy(np.stack(val_local)[..., 1:])
    n_params = count_params(state["params"])
    flops = flops_per_token(config)
    peak = peak_flops_per_device(config, run.peak_flops) * jax.device_count()
    schedule = learning_rate_schedule(run)
    say(f"{n_params:,} parameters on {jax.device_count()} device(s) in {jax.process_count()} process(es); "
        f"unigram baseline of the validation tokens: {baseline:.3f} nats")  # fmt: skip

    def evaluate() -> dict[str, float]:
        total = count = 0.0
        for batch in val_batches:
            s, n = eval_step(state["params"], batch)
            total, count = total + float(s), count + float(n)
        loss = total / count
        return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0))}

    prompt_ids = tokenizer.encode(run.sample_prompt) or [tokenizer.eot_id]

    def sample(step: int) -> str:
        prompt = np.asarray([prompt_ids[: config.context_length - run.sample_tokens]], np.int32)
        out = generate_tokens(
            state["params"], config, prompt, np.asarray([prompt.shape[1]], np.int32),
            rng=jax.random.PRNGKey(step), max_new_tokens=run.sample_tokens,
            temperature=0.8, top_k=40, eot_id=tokenizer.eot_id,
        )  # fmt: skip
        tokens, n = to_host((out.tokens, out.num_tokens))
        return tokenizer.decode(prompt[0].tolist() + tokens[0, : int(n[0])].tolist())

    bar = None
    if main and run.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.max_steps, initial=start, unit="step", dynamic_ncols=True)
    write = bar.write if bar is not None else say
    step, last_eval, text = start, {}, ""
    t_start = t_last = time.perf_counter()
    steps_since = 0
    try:
        with _StopFlag() as stop:
            while step < run.max_steps:
                batch = global_batch(next(loader), mesh)
                state, out = train_step(state, batch)
                loss, grad_norm = float(out["loss"]), float(out["grad_norm"])
                step, steps_since = step + 1, steps_since + 1
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    checkpoints.wait()
                    good = checkpoints.latest_step()
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the last "
                        f"good checkpoint is step {good} in {checkpoints.directory}: lower --learning-rate "
                        "or --grad-clip and --resume, or start over"
                    )
                record: dict[str, Any] = {}
                if step % run.log_every == 0 or step == run.max_steps:
                    now = time.perf_counter()
                    tok_s = steps_since * run.tokens_per_step / (now - t_last)
                    t_last, steps_since = now, 0
                    lr = float(schedule(step - 1))
                    record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                              "tokens_per_s": tok_s, "mfu": tok_s * flops / peak}  # fmt: skip
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{record['mfu']:.1%}")
                paused = time.perf_counter()
                if (run.eval_every and step % run.eval_every == 0) or step == run.max_steps:
                    last_eval = evaluate()
                    record = {"step": step, **record, **last_eval}
                    loss_e, ppl = last_eval["eval_loss"], last_eval["eval_perplexity"]
                    write(
                        f"step {step}: eval loss {loss_e:.4f}, perplexity {ppl:.1f} (unigram {baseline:.3f})"
                    )
                if (run.sample_every and step % run.sample_every == 0) or step == run.max_steps:
                    text = sample(step)
                    write(f"step {step} sample: {text!r}")
                if record:
                    metrics.write(record)
                t_last += time.perf_counter() - paused  # evals and samples do not count as training time
                if bar is not None:
                    bar.update(1)
                meta = {"step": step, "loader": loader.state_dict(), "run": run.to_dict()}
                saved = step % run.checkpoint_every == 0 or step == run.max_steps
                if saved:
                    checkpoints.save(step, state, meta)
                if stop.any_process() and step < run.max_steps:
                    if not saved:
                        checkpoints.save(step, state, meta)
                    checkpoints.wait()
                    raise TrainingInterrupted(step, run_dir)
    finally:
        if bar is not None:
            bar.close()
        loader.close()
        checkpoints.close()
        if main and metrics.records:
            plot_losses(metrics.records, run_dir / "loss.png", baseline=baseline)

    summary = {"step": step, "tokens": step * run.tokens_per_step, "unigram_entropy": baseline,
               "train_seconds": time.perf_counter() - t_start, "sample": text, **last_eval}  # fmt: skip
    host_params = to_host(state["params"])
    if main:
        export_model(run_dir / "model", host_params, tokenizer, run, summary)
        say(f"model saved to {run_dir / 'model'}: eval loss {last_eval.get('eval_loss', float('nan')):.4f} "
            f"vs unigram {baseline:.3f}")  # fmt: skip
    return run_dir
