"""Properties across packages: data's packed windows feed the train step as they are; a step keeps
every parameter's shape, dtype and sharding; the loss before any step is near ln V; accumulating k
micro-batches equals one step on their concatenation. Configs are drawn from small sets (each new
shape compiles a new program)."""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core import GPTConfig
from microgpt_data import pack_windows
from microgpt_train import RunConfig, init_state, make_optimizer, make_train_step
from microgpt_train.sharding import batch_sharding, make_mesh, param_shardings, state_shardings
from microgpt_train.step import loss_fn

configs = st.builds(
    GPTConfig,
    vocab_size=st.sampled_from([32, 97]),
    context_length=st.just(16),
    d_model=st.just(16),
    n_layers=st.sampled_from([1, 2]),
    n_heads=st.just(2),
    positional=st.sampled_from(["learned", "sinusoidal"]),
    tie_embeddings=st.booleans(),
    bias=st.booleans(),
)


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


@settings(max_examples=4)
@given(
    config=configs,
    seed=st.integers(0, 2**16),
    doc_lengths=st.lists(st.integers(5, 40), min_size=12, max_size=20),
)
def test_packed_windows_feed_a_step_that_keeps_shapes_dtypes_shardings(config, seed, doc_lengths):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, config.vocab_size - 1, n).tolist() for n in doc_lengths]
    windows = list(pack_windows(docs, config.vocab_size - 1, config.context_length + 1))
    assert len(windows) >= 4  # at least 12 * 6 tokens in windows of 17
    batch = np.stack(windows[:4])  # (B, T+1) int32, straight from data
    state, step = _setup(config, accum=1, batch=4, seed=seed)
    before = jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), state)
    loss0 = float(loss_fn(state["params"], batch, config, None, False))
    assert abs(loss0 - math.log(config.vocab_size)) < 0.25  # N(0, 0.02) init: near-uniform predictions
    state, metrics = step(state, batch)
    assert jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), state) == before
    assert np.isfinite(float(metrics["loss"]))


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
