"""Properties across packages: data's packed windows feed the train step as they are; an FSDP step on
8 (simulated) devices keeps every leaf's shape, dtype and sharding, split where it should be
(`sharded_worker.py`, in a subprocess: the device count is fixed when JAX starts); the loss before any
step is near ln V; accumulating k micro-batches equals one step on their concatenation. Configs are
drawn from small sets (each new shape compiles a new program)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core import GPTConfig
from microgpt_train import RunConfig, init_state, make_optimizer, make_train_step
from microgpt_train.sharding import batch_sharding, make_mesh, param_shardings, state_shardings

from ..train.conftest import subprocess_env
from .sharded_worker import configs  # the same small configs on one device and on eight

HERE = Path(__file__).parent


@functools.cache
def _compiled(config: GPTConfig, accum: int, batch: int):
    """The jitted init and step of one (config, accumulation, batch): compiled once per session."""
    run = RunConfig(model=config, batch_size=batch, grad_accum=accum, sample_tokens=4, warmup_steps=1)
    optimizer = make_optimizer(run)
    mesh = make_mesh()
    init = lambda k: init_state(k, config, optimizer)  # noqa: E731
    shape = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = state_shardings(shape, param_shardings(shape["params"], config, mesh, fsdp=True), mesh)
    step = make_train_step(
        config, optimizer, grad_accum=accum, state_sharding=shardings, batch_sharding=batch_sharding(mesh)
    )
    return jax.jit(init, out_shardings=shardings), step


def _setup(config: GPTConfig, accum: int, batch: int, seed: int):
    init, step = _compiled(config, accum, batch)
    return init(jax.random.PRNGKey(seed)), step


def test_packed_windows_feed_an_fsdp_step_on_8_devices_that_keeps_shapes_dtypes_shardings():
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(HERE / "sharded_worker.py"), "3"],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Every example ran on 8 devices, and found leaves split over them (before and after its step);
    # the examples alternate between the optimisers.
    assert result["devices"] == 8 and result["examples"] == 3 and result["split_leaves"] > 0
    assert (result["adamw"], result["muon"]) == (2, 1)


@settings(max_examples=3)
@given(config=configs, accum=st.sampled_from([2, 4]), seed=st.integers(0, 2**16))
def test_accumulating_micro_batches_equals_one_large_step(config, accum, seed):
    config = config.replace(dropout=0.0)
    batch = np.random.default_rng(seed).integers(
        0, config.vocab_size, (8, config.context_length + 1), np.int32
    )
    big_state, big_step = _setup(config, accum=1, batch=8, seed=seed)
    acc_state, acc_step = _setup(config, accum=accum, batch=8, seed=seed)
    big_state, big = big_step(big_state, batch)
    acc_state, acc = acc_step(acc_state, batch)
    np.testing.assert_allclose(float(acc["loss"]), float(big["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(acc["grad_norm"]), float(big["grad_norm"]), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(acc_state["params"]), jax.tree.leaves(big_state["params"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=3e-6)
